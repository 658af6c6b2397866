"""A live three-stage cascade through the whole service (issue 14, acceptance 2).

Starts three `pjudge llm-sim` servers (cheap and noisy first, strong and nearly clean last), Redis,
the API and one worker process (SQLite), posts N labelled pair items with a three-stage cascade and,
as a second job, the same items to the strongest stage alone; waits for both and prints for each the
realized agreement with the labels on the accepted items, the coverage (share accepted by a judge)
and the cost per item, plus per stage how many items reached it and how many it accepted.

The labels are the simulator's hidden preference: each item's persona lists interests, and the
response naming more of them is the one the simulated judge prefers before its noise (llm_sim/
judge_model.py); the margin (1 to 4 interests) sets how sure an honest judge is. One item in five
has margin 0: its label is the human's taste, which no judge can read from the text. The servers are
the operator's endpoints (PJUDGE_ENDPOINTS) and the stages are priced by the server (PJUDGE_PRICES:
a small, a medium and a large model's price table). Thresholds: by default calibrated (SPEC 4
`cascade`, calibration.cascade.calibrate at --target and --delta) on a separate labelled sample of
--calibration-items judged by each stage alone; where calibration.cascade is not installed, or with
--thresholds, fixed ones (0.9, 0.85, 0.8 unless given). The output says which.

    .venv/bin/python scripts/cascade_live.py [--items 2000] [--target 0.9] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from judge.records import Verdict  # noqa: E402
from llm_sim.harness import Process, RedisServer, free_port, http_json, wait_for_port  # noqa: E402
from llm_sim.process import SimProcess  # noqa: E402

KEY = "cascade-live-key-0123456789abcdef"
STAGES = (("sim-small", "0.3", {"input_per_mtok": 0.15, "output_per_mtok": 0.6}),
          ("sim-medium", "0.15", {"input_per_mtok": 1.0, "output_per_mtok": 4.0}),
          ("sim-large", "0.05", {"input_per_mtok": 5.0, "output_per_mtok": 15.0}))
INTERESTS = ("gardening chess tulips compost baking astronomy telescopes croissants fishing violin canoes trout "
             "hiking pottery sailing cycling knitting jazz photography birdwatching climbing surfing poetry "
             "robotics chemistry origami beekeeping calligraphy archery fencing").split()


def _http(method: str, url: str, body: Any = None) -> Any:
    return http_json(method, url, body, KEY)


def make_items(n: int, seed: int = 14, prefix: str = "live") -> list[dict[str, Any]]:
    """Labelled items: the response naming more of the persona's interests is the preferred one."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        liked = rng.sample(INTERESTS, 6)
        # One item in five gives the judge nothing to go on (both responses name as many interests):
        # its label is the human's own taste, a coin flip to any judge.
        margin = 0 if rng.random() < 0.2 else rng.randint(1, 4)
        low = 1 if margin == 0 else rng.randint(0, 1)
        better, worse = liked[:low + margin], liked[low + margin:low + margin + low] if low else []
        filler = [w for w in INTERESTS if w not in liked]
        text_better = f"Try {', '.join(better)} and maybe {rng.choice(filler)}."
        text_worse = f"Try {', '.join([*worse, *rng.sample(filler, 2)])}."
        a_wins = rng.random() < 0.5
        items.append({"id": f"{prefix}-{i:05d}", "persona": f"The person enjoys {', '.join(liked)}.",
                      "prompt": f"What should I do this weekend? (#{i})",
                      "response_a": text_better if a_wins else text_worse,
                      "response_b": text_worse if a_wins else text_better,
                      "human_label": "A" if a_wins else "B", "metadata": {"margin": margin}})
    return items


def stage_profile(model: str, url: str) -> dict[str, Any]:
    return {"profile": "persona-certainty", "name": model, "provider": "openai-compatible", "model": model,
            "base_url": url}


def wait_done(url: str, job_id: str, timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _http("GET", f"{url}/v1/jobs/{job_id}")
        if job["status"] in ("done", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.5)
    raise RuntimeError(f"job {job_id} not done in {timeout} s")


def verdicts(url: str, job_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = _http("GET", f"{url}/v1/jobs/{job_id}/verdicts?limit=500" + (f"&cursor={cursor}" if cursor else ""))
        found += page["verdicts"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def figures(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    accepted = [v for v in rows if not v["abstained"] and v["winner"] in ("A", "B")]
    right = sum(v["winner"] == v["human_label"] for v in accepted)
    cost = sum(c["cost_usd"] or 0.0 for v in rows for c in v["calls"])
    result: dict[str, Any] = {
        "items": len(rows), "accepted": len(accepted), "coverage": round(len(accepted) / len(rows), 4),
        "agreement_on_accepted": round(right / len(accepted), 4) if accepted else None,
        "agreement_all_items": round(sum(v["winner"] == v["human_label"] for v in rows) / len(rows), 4),
        "cost_usd": round(cost, 6), "cost_per_item_usd": round(cost / len(rows), 8), "seconds": round(seconds, 1),
    }
    if rows and "stages" in rows[0]:
        per_stage = []
        for k in range(max(len(v["stages"]) for v in rows)):
            reached = [v for v in rows if len(v["stages"]) > k]
            kept = [v for v in reached if v["stage"] == k]
            per_stage.append({"stage": k, "model": reached[0]["stages"][k]["model"], "reached": len(reached),
                              "accepted": len(kept),
                              "agreement_on_accepted": round(sum(v["winner"] == v["human_label"] for v in kept)
                                                             / len(kept), 4) if kept else None,
                              "cost_usd": round(sum(v["stages"][k]["cost_usd"] for v in reached), 6)})
        result["stages"] = per_stage
        result["escalated"] = sum(v["stage"] is None for v in rows)
    return result


FIXED = [0.9, 0.85, 0.8]


def calibrated(url: str, sims: list[SimProcess], n: int, target: float, delta: float
               ) -> tuple[list[float | None], dict[str, Any]]:
    """Thresholds from SPEC 4 `cascade` on `n` other labelled items judged by each stage alone."""
    from calibration.cascade import StageVerdicts, calibrate, join_stages

    items = make_items(n, seed=41, prefix="cal")
    stages = []
    for (model, _, _), sim in zip(STAGES, sims, strict=True):
        job = _http("POST", f"{url}/v1/jobs", {"items": items, "profile": stage_profile(model, sim.openai_base_url)})
        wait_done(url, job["job_id"])
        stages.append(StageVerdicts(name=model, source=f"job {job['job_id']}",
                                    verdicts=[Verdict.model_validate(v) for v in verdicts(url, job["job_id"])]))
    result = calibrate(join_stages(stages), target, delta)
    return list(result.thresholds), result.as_dict()


def run(n: int, thresholds: list[float | None] | None, calibration_items: int, target: float,
        delta: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        redis = RedisServer(folder / "redis").start()
        sims = [SimProcess("--noise", noise, "--seed", str(k + 1)).start() for k, (_, noise, _) in enumerate(STAGES)]
        env = dict(os.environ)
        env.update({"DATABASE_URL": f"sqlite:///{folder}/live.sqlite", "REDIS_URL": redis.url,
                    "PJUDGE_HOME": str(folder / "home"), "PJUDGE_API_KEYS": KEY,
                    "PJUDGE_ENDPOINTS": ",".join(sim.openai_base_url for sim in sims),
                    "PJUDGE_PRICES": json.dumps({model: price for model, _, price in STAGES}),
                    "PJUDGE_BATCH_SIZE": "100"})
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api = Process(["serve", "--port", str(port)], env, folder / "api.log").start()
        worker = Process(["worker", "--concurrency=4", "--processes=1"], env, folder / "worker.log").start()
        try:
            wait_for_port(port)
            calibration: dict[str, Any] | None = None
            source = "fixed (--thresholds)"
            if thresholds is None:
                try:
                    thresholds, calibration = calibrated(url, sims, calibration_items, target, delta)
                    source = f"calibrated on {calibration_items} other labelled items, target {target}, delta {delta}"
                except ImportError:  # calibration.cascade (issue 14's calibrate) not installed
                    thresholds, source = FIXED, "fixed (calibration.cascade not available)"
            items = make_items(n)
            cascade = {"name": "small-medium-large", "then": "human", "cascade": [
                {"profile": stage_profile(model, sim.openai_base_url), "threshold": threshold}
                for (model, _, _), sim, threshold in zip(STAGES, sims, thresholds, strict=True)]}
            before_cascade = [sim.stats()["requests"] for sim in sims]
            started = time.monotonic()
            job = _http("POST", f"{url}/v1/jobs", {"items": items, "profile": cascade})["job_id"]
            status = wait_done(url, job)
            cascade_s = time.monotonic() - started
            requests = [sim.stats()["requests"] for sim in sims]
            # The strongest stage alone on every item (new prompts: the call cache answers none).
            alone_items = [{**item, "prompt": item["prompt"] + " [alone]"} for item in items]
            started = time.monotonic()
            alone = _http("POST", f"{url}/v1/jobs", {"items": alone_items,
                                                    "profile": stage_profile(STAGES[-1][0], sims[-1].openai_base_url)})
            alone_status = wait_done(url, alone["job_id"])
            alone_s = time.monotonic() - started
            requests = [after - before for after, before in zip(requests, before_cascade, strict=True)]
            result = {"items": n, "thresholds": thresholds, "thresholds_from": source, "calibration": calibration,
                      "noise": [noise for _, noise, _ in STAGES],
                      "prices_per_mtok": {model: price for model, _, price in STAGES},
                      "cascade": {"status": status["status"], "sim_requests": requests,
                                  **figures(verdicts(url, job), cascade_s)},
                      "strongest_alone": {"status": alone_status["status"],
                                          **figures(verdicts(url, alone["job_id"]), alone_s)}}
        except Exception:
            print(api.output()[-3000:], worker.output()[-3000:], file=sys.stderr)
            raise
        finally:
            worker.stop()
            api.stop()
            for sim in sims:
                sim.stop()
            redis.stop()
    c, s = result["cascade"], result["strongest_alone"]
    result["cost_ratio"] = round(c["cost_per_item_usd"] / s["cost_per_item_usd"], 4) if s["cost_per_item_usd"] else None
    return result


def markdown(r: dict[str, Any]) -> str:
    c, s = r["cascade"], r["strongest_alone"]
    lines = [f"# Live cascade: {r['items']} labelled items, noise {r['noise']}", "",
             f"Thresholds {r['thresholds']}: {r['thresholds_from']}.", "",
             "| run | coverage | agreement on accepted | agreement on all | cost per item (USD) | seconds |",
             "|---|---|---|---|---|---|",
             f"| cascade (3 stages) | {c['coverage']:.3f} | {c['agreement_on_accepted']} | "
             f"{c['agreement_all_items']:.3f} | {c['cost_per_item_usd']:.8f} | {c['seconds']} |",
             f"| strongest stage alone | {s['coverage']:.3f} | {s['agreement_on_accepted']} | "
             f"{s['agreement_all_items']:.3f} | {s['cost_per_item_usd']:.8f} | {s['seconds']} |", "",
             f"Cascade cost / strongest alone: {r['cost_ratio']}; escalated to humans: {c['escalated']}; "
             f"simulator requests per stage: {c['sim_requests']}.", "",
             "| stage | model | reached | accepted | agreement on accepted | cost (USD) |", "|---|---|---|---|---|---|"]
    lines += [f"| {st['stage'] + 1} | {st['model']} | {st['reached']} | {st['accepted']} | "
              f"{st['agreement_on_accepted']} | {st['cost_usd']:.6f} |" for st in c["stages"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--thresholds", default=None,
                        help="Fixed thresholds per stage, comma-separated ('none': the stage accepts nothing) "
                             "[default: calibrated].")
    parser.add_argument("--calibration-items", type=int, default=1000)
    parser.add_argument("--target", type=float, default=0.9, help="Target accuracy of the calibration.")
    parser.add_argument("--delta", type=float, default=0.1, help="Risk level of the calibration.")
    parser.add_argument("--json", action="store_true", help="One JSON document instead of Markdown.")
    args = parser.parse_args()
    thresholds = None
    if args.thresholds is not None:
        thresholds = [None if t.strip() == "none" else float(t) for t in args.thresholds.split(",")]
        if len(thresholds) != len(STAGES):
            parser.error(f"--thresholds: one per stage ({len(STAGES)})")
    result = run(args.items, thresholds, args.calibration_items, args.target, args.delta)
    print(json.dumps(result, indent=2) if args.json else markdown(result))


if __name__ == "__main__":
    main()
