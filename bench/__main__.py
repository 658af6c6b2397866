"""Run benchmarks: `python -m bench all --json`, `python -m bench NAME [--json] [--quick]`."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = ("pipeline", "report", "personalization", "cost", "caching", "stats", "fairness", "export")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=("all", *BENCHMARKS))
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    args = parser.parse_args()
    names = BENCHMARKS if args.name == "all" else (args.name,)
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        module.run(as_json=args.json, quick=args.quick)


if __name__ == "__main__":
    main()
