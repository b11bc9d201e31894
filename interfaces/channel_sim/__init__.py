"""``payledger channel-sim``: a payment channel provider over HTTP, for tests and demos.

It charges once per payment id, keeps its records in memory, injects the faults a real provider
has (latency, declines, timeouts after charging, 503s, answers cut off after charging) and
serves a daily settlement statement from its own records (CSV, camt.053).
"""

from interfaces.channel_sim.app import create_app
from interfaces.channel_sim.config import SimConfig

__all__ = ["SimConfig", "create_app"]
