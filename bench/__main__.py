"""Run benchmarks: `python -m bench all --json`, `python -m bench NAME [--json] [--quick]`."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = ("pipeline", "report", "personalization", "cost", "caching", "stats", "fairness")
EXTRA = ("bigjob",)  # run by name only: `all` would take hours with it


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=("all", *BENCHMARKS, *EXTRA))
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    parser.add_argument("--items", default=None, help="bigjob: job sizes, comma-separated (10000,100000)")
    parser.add_argument("--upload-only-from", type=int, default=None,
                        help="bigjob: from this many items on, measure the upload alone (no worker)")
    parser.add_argument("--early", action="store_true", help="bigjob: submit with start_early")
    args = parser.parse_args()
    if args.name == "bigjob":
        from bench import bigjob

        bigjob.run(as_json=args.json, quick=args.quick, items=args.items, upload_only_from=args.upload_only_from,
                   early=args.early)
        return
    names = BENCHMARKS if args.name == "all" else (args.name,)
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        module.run(as_json=args.json, quick=args.quick)


if __name__ == "__main__":
    main()
