"""Benchmarks behind `make bench` (not timed tests)."""
