"""PerSEval (simplified JSD) over the PENS data: the vectorised library against the
straightforward pure-Python implementation of SPEC 6 (bench/straightforward_personalization.py,
the one the tests check it against), timed in the same run; the numbers must agree to 1e-9."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import REPO, SHARED_DATA, emit, median_seconds, skip

METRICS = ("degress", "egises", "edp", "perseval")


def run(as_json: bool, quick: bool = False) -> None:
    perseval = SHARED_DATA / "perseval"
    if not perseval.is_dir():
        skip("personalization", f"reference data not found at {perseval}", as_json)
        return
    from bench.straightforward_personalization import straightforward_scores
    from calibration.personalization import evaluate, read_responses

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pens_responses.jsonl"
        subprocess.run([sys.executable, str(REPO / "scripts" / "pens_to_responses.py"), "-o", str(path)],
                       check=True, capture_output=True)
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if quick:
            keep = sorted({line["prompt_id"] for line in lines})[:300]
            lines = [line for line in lines if line["prompt_id"] in set(keep)]
            path.write_text("".join(json.dumps(line) + "\n" for line in lines))

        library_s, report = median_seconds(lambda: evaluate(read_responses(path)), runs=3)
        simple_s, simple = median_seconds(lambda: straightforward_scores(lines), runs=1)
    worst = 0.0
    for system, scores in report.systems.items():
        mine = scores.as_dict()
        for metric in METRICS:
            a, b = mine[metric], simple["systems"][system][metric]
            worst = max(worst, abs(a - b)) if a is not None and b is not None else worst
    ranking = sorted(report.systems, key=lambda s: -(report.systems[s].as_dict()["perseval"] or 0))
    emit({"benchmark": "personalization", "lines": len(lines), "systems": len(report.systems),
          "seconds": round(library_s, 3), "straightforward_seconds": round(simple_s, 3),
          "speedup": round(simple_s / library_s, 1), "max_abs_difference": worst, "ranking": ranking,
          "target_speedup": 5.0, "meets_target": simple_s / library_s >= 5 and worst <= 1e-9}, as_json)
