"""`pjudge report` on 100,000 verdicts with 1,000 bootstrap resamples (target: under 5 s),
beside the floor of merely decoding the same file with json.loads."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import emit, median_seconds

TARGET_S = 5.0


def synthetic_verdicts(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w") as out:
        for i in range(n):
            label = rng.choice("AB")
            u_ab, u_ba = rng.randint(40, 99) / 100, rng.randint(40, 99) / 100
            right = rng.random() < 0.75
            c_ab = label if right else ("B" if label == "A" else "A")
            c_ba = label if rng.random() < 0.75 else ("B" if label == "A" else "A")
            v = lambda c, u: 0.5 + u / 2 if c == "A" else 0.5 - u / 2  # noqa: E731
            p_a = round((v(c_ab, u_ab) + v(c_ba, u_ba)) / 2, 9)
            calls = [
                {"order": "AB", "sample": 0, "raw": f"[[{c_ab}]] [[{int(u_ab * 100)}]]", "choice": c_ab,
                 "certainty": u_ab, "scores": None, "input_tokens": 500, "output_tokens": 9, "cost_usd": 0.001,
                 "latency_s": 0.5, "cached": False, "error": None},
                {"order": "BA", "sample": 0, "raw": f"[[{'A' if c_ba == 'B' else 'B'}]] [[{int(u_ba * 100)}]]",
                 "choice": c_ba, "certainty": u_ba, "scores": None, "input_tokens": 500, "output_tokens": 9,
                 "cost_usd": 0.001, "latency_s": 0.5, "cached": False, "error": None},
            ]
            winner = "A" if p_a > 0.5 else "B" if p_a < 0.5 else "tie"
            record = {"id": f"v{i}", "winner": winner, "p_a": p_a, "certainty": round(abs(2 * p_a - 1), 9),
                      "consistent": c_ab == c_ba, "abstained": False, "bpde": 0.0 if c_ab == c_ba else 0.693147181,
                      "human_label": label, "judge": {"profile": "persona-certainty", "provider": "openai",
                                                      "model": "gpt-4o"},
                      "calls": calls, "len_a": rng.randint(100, 900), "len_b": rng.randint(100, 900),
                      "metadata": {"dataset": rng.choice(["prism", "ec", "ap"])}}
            out.write(json.dumps(record) + "\n")


def run(as_json: bool, quick: bool = False) -> None:
    n = 10_000 if quick else 100_000
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "verdicts.jsonl"
        synthetic_verdicts(path, n)

        def cli() -> None:
            subprocess.run([sys.executable, "-m", "pjudge", "report", str(path), "--format", "json",
                            "--bootstrap", "1000", "-o", str(Path(folder) / "report.json")], check=True,
                           capture_output=True)

        def floor() -> int:
            with path.open() as handle:
                return sum(1 for line in handle if json.loads(line))

        def library() -> None:
            from calibration.report import build_report
            from judge.jsonl import read_verdicts

            build_report(read_verdicts(path), bootstrap_resamples=1000)

        cli_s, _ = median_seconds(cli)
        floor_s, _ = median_seconds(floor)
        library_s, _ = median_seconds(library)
    emit({"benchmark": "report", "verdicts": n, "bootstrap_resamples": 1000, "seconds": round(cli_s, 3),
          "library_seconds": round(library_s, 3), "json_decode_floor_seconds": round(floor_s, 3),
          "ratio_vs_json_floor": round(cli_s / floor_s, 2), "target_seconds": TARGET_S,
          "meets_target": cli_s < TARGET_S}, as_json)
