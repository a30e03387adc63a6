"""runstate benchmarks: ``make bench`` / ``make bench-quick`` (see docs/benchmarks.md)."""
