"""Run benchmarks: `python -m bench all --json`, `python -m bench NAME [--json] [--quick]`;
`python -m bench pipeline --only latency=200 --only database=sqlite,postgresql` runs a part of the
pipeline benchmark (keys: database, latency, transport, processes)."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = ("pipeline", "report", "personalization", "cost", "caching", "stats", "fairness", "export")
EXTRA = ("bigjob",)  # run by name only: `all` would take hours with it


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=("all", *BENCHMARKS, *EXTRA))
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    parser.add_argument("--only", action="append", default=[], metavar="KEY=V1,V2",
                        help="pipeline only: run these values of a dimension (database, latency, transport, processes)")
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
    only = {key: value.split(",") for key, _, value in (o.partition("=") for o in args.only)}
    if only and names != ("pipeline",):
        parser.error("--only is for the pipeline benchmark")
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        if only:
            module.run(as_json=args.json, quick=args.quick, only=only)
        else:
            module.run(as_json=args.json, quick=args.quick)


if __name__ == "__main__":
    main()
