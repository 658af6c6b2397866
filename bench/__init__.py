"""Benchmarks: `python -m bench all --json` or `python -m bench NAME --json`. Each prints one JSON
object per line with a `benchmark` key, its figures and the figures they are compared with,
measured side by side in the same run (medians of several runs; ratios, not absolute times)."""
