"""The performance benchmark: `make bench` (or `python -m tests.benchmark.bench [--quick]`); see bench.py."""
