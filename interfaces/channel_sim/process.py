"""Run ``payledger channel-sim`` as a real process on a free loopback port (tests, demos).

with simulator_process("--latency-ms", "5") as sim:
    env = {"PAYLEDGER_CHANNEL_CARD_URL": sim.base_url}
    sim.configure(timeout_rate=1.0)   # PUT /_sim/config
    sim.charge(payment_id)            # GET /charges/{id}: the JSON, or None
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SimulatorProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def configure(self, **knobs: Any) -> dict[str, Any]:
        response = httpx.put(f"{self.base_url}/_sim/config", json=knobs, timeout=10)
        response.raise_for_status()
        config: dict[str, Any] = response.json()
        return config

    def charge(self, payment_id: object) -> dict[str, Any] | None:
        response = httpx.get(f"{self.base_url}/charges/{payment_id}", timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.base_url}/health", timeout=10).json()
        return body

    def statement(self, day: str, format: str = "csv", channel: str | None = None) -> bytes:
        params = {"date": day, "format": format} | ({"channel": channel} if channel else {})
        response = httpx.get(f"{self.base_url}/statements", params=params, timeout=60)
        response.raise_for_status()
        return response.content

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def simulator_process(
    *args: str, log_dir: Path | None = None, python: str = sys.executable
) -> Iterator[SimulatorProcess]:
    """``payledger channel-sim --port <free> *args`` until the block ends (then stopped)."""
    port = free_port()
    directory = log_dir or Path(tempfile.mkdtemp(prefix="channel-sim-"))
    log_path = directory / f"channel-sim-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYLEDGER_")}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [python, "-m", "interfaces.cli", "channel-sim", "--port", str(port), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )
        sim = SimulatorProcess(process, f"http://127.0.0.1:{port}", log_path)
        try:
            _wait_until_healthy(sim, log_file)
            yield sim
        finally:
            sim.stop()


def _wait_until_healthy(sim: SimulatorProcess, log_file: IO[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if sim.process.poll() is not None:
            log_file.flush()
            raise RuntimeError(f"channel-sim exited with {sim.process.returncode}:\n{sim.log()}")
        try:
            if httpx.get(f"{sim.base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"channel-sim not healthy within {START_TIMEOUT_S} s:\n{sim.log()}")
