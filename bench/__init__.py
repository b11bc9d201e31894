"""Benchmarks (not part of the installed packages): see docs/performance.md."""
