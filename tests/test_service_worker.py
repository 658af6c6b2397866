"""The workers against real parts: a Redis server, worker processes, SQLite and PostgreSQL, and
the simulated LLM. A killed worker or a restarted Redis loses no verdict and duplicates none."""

from __future__ import annotations

import json
import time
from pathlib import Path

from store import repo
from tests.support.services import (
    Process,
    Service,
    many_items,
    sim_profile,
)


def test_worker_judges_a_job_like_the_cli(service: Service, start_sim, tmp_path: Path) -> None:
    sim = start_sim("--first-bias", "0.3", "--noise", "0.05", "--seed", "3")
    service.start_worker()
    items = many_items(200)
    job_id = service.submit(items, sim_profile(sim))
    job = service.wait_done(job_id, 120)
    assert (job.status, job.n_verdicts, job.n_calls, job.n_failed_calls) == ("done", 200, 400, 0)
    stored = repo.all_verdicts(service.engine, job_id)
    assert [v.id for v in stored] == [i.id for i in items]

    # A second job of the same items and profile is answered from the shared call cache.
    served = sim.stats()["requests"]
    again = service.wait_done(service.submit(items, sim_profile(sim)), 120)
    assert again.n_calls == 400 and sim.stats()["requests"] == served
    assert all(c.cached and c.cost_usd == 0 for v in repo.all_verdicts(service.engine, again.id) for c in v.calls)
    assert again.cost_usd == 0 and job.cost_usd > 0

    # The same items judged in-process by `pjudge judge` give equal verdicts.
    items_path = tmp_path / "items.jsonl"
    items_path.write_text("".join(i.model_dump_json(exclude_none=True) + "\n" for i in items))
    from tests.support.cli import run_pjudge

    out = tmp_path / "cli.jsonl"
    result = run_pjudge("judge", str(items_path), "-o", str(out), "--provider", "openai-compatible",
                        "--model", "sim-judge", "--base-url", sim.openai_base_url, "--no-cache")
    assert result.returncode == 0, result.stderr
    cli = {v["id"]: v for v in map(json.loads, out.read_text().splitlines())}
    for verdict in stored:
        other = cli[verdict.id]
        assert (verdict.winner, verdict.p_a, verdict.certainty, verdict.consistent) == (
            other["winner"], other["p_a"], other["certainty"], other["consistent"])


def test_kill_9_worker_mid_job_then_restart(service: Service, start_sim) -> None:
    sim = start_sim("--latency-ms", "150", "--seed", "8")
    # The killed worker's tasks come back after the visibility timeout: 10 s instead of 30, still
    # ten times a task's run (16 items at 150 ms); a task sent twice would be harmless anyway.
    service.env["PJUDGE_VISIBILITY_TIMEOUT"] = "10"
    first = service.start_worker(concurrency=2)
    job_id = service.submit(many_items(2000), sim_profile(sim))
    service.wait_verdicts(job_id, 300, timeout=120)
    first.kill9()
    killed_at = repo.get_job(service.engine, job_id).n_verdicts
    assert killed_at < 2000
    restarted = time.monotonic()
    service.start_worker(concurrency=8)
    job = service.wait_done(job_id, 120)
    elapsed = time.monotonic() - restarted
    assert elapsed < 60, f"the job took {elapsed:.1f}s after the restart"
    counts = service.row_counts(job_id)
    assert counts == {"verdicts": 2000, "distinct_verdicts": 2000, "calls": 4000}
    assert (job.status, job.n_verdicts, job.n_calls) == ("done", 2000, 4000)
    print(f"killed at {killed_at} verdicts; completed {elapsed:.1f}s after the restart")


def test_redis_stopped_for_10s_mid_job(service: Service, start_sim) -> None:
    sim = start_sim("--latency-ms", "100", "--seed", "9")
    service.start_worker(concurrency=4)
    job_id = service.submit(many_items(2000, seed=2), sim_profile(sim))
    service.wait_verdicts(job_id, 300, timeout=120)
    service.redis.stop()
    time.sleep(10)
    service.redis.start()
    job = service.wait_done(job_id, 180)
    assert service.row_counts(job_id) == {"verdicts": 2000, "distinct_verdicts": 2000, "calls": 4000}
    assert (job.status, job.n_verdicts, job.n_calls) == ("done", 2000, 4000)


def test_rate_limited_provider_and_exhausted_retries(service: Service, start_sim) -> None:
    sim = start_sim("--fail-rate", "0.3", "--retry-after-ms", "20", "--seed", "12")
    service.start_worker(concurrency=4)
    # Few HTTP retries, so that some calls exhaust them and end with a recorded error.
    job_id = service.submit(many_items(300, seed=3), sim_profile(sim, max_retries=1))
    job = service.wait_done(job_id, 180)
    assert job.status == "done" and job.n_verdicts == 300 and job.n_calls == 600
    stored = repo.all_verdicts(service.engine, job_id)
    failed = [c for v in stored for c in v.calls if c.error]
    assert job.n_failed_calls == len(failed) > 0
    assert all(c.error.startswith("provider:") and "429" in c.error or "500" in c.error for c in failed)
    assert job.n_failed_items == sum(v.winner is None for v in stored)
    assert sim.stats()["failures_injected"] > len(failed)  # most failures were retried away


def test_requests_per_minute_limit_is_shared(service: Service, start_sim) -> None:
    sim = start_sim()
    service.start_worker(concurrency=4)
    service.start_worker(concurrency=4)
    started = time.monotonic()
    # 240 requests per minute = 4 per second, bucket starts full (240): 260 calls need ~5 s more.
    job_id = service.submit(many_items(130, seed=4), sim_profile(sim, requests_per_minute=240), batch_size=8)
    job = service.wait_done(job_id, 120)
    elapsed = time.monotonic() - started
    assert job.n_calls == 260
    assert elapsed > 4.0, elapsed


def test_api_worker_end_to_end_1000_items_equal_to_pjudge_judge_and_no_secret_in_logs(
        service: Service, start_sim, tmp_path: Path) -> None:
    from tests.support.cli import run_pjudge
    from tests.support.services import free_port, wait_for_port

    sim = start_sim("--first-bias", "0.3", "--noise", "0.05", "--seed", "21")
    api_key = "pj-test-api-key-" + "s3cr3t" * 4
    provider_key = "sk-test-provider-" + "hidden" * 4
    service.env.update({"PJUDGE_API_KEYS": api_key, "OPENAI_API_KEY": provider_key})
    port = free_port()
    api = Process(["serve", "--port", str(port)], service.env, tmp_path / "api.log").start()
    service.workers.append(api)  # stopped with the workers
    service.start_worker(concurrency=8)
    wait_for_port(port)

    items = many_items(1000, seed=5)
    items_path = tmp_path / "items.jsonl"
    items_path.write_text("".join(i.model_dump_json(exclude_none=True) + "\n" for i in items))
    out = tmp_path / "service.jsonl"
    submit_env = {"PJUDGE_API_KEY": api_key, "OPENAI_API_KEY": provider_key}
    started = time.monotonic()
    submitted = run_pjudge("submit", str(items_path), "--url", f"http://127.0.0.1:{port}", "--provider",
                           "openai-compatible", "--model", "sim-judge", "--base-url", sim.openai_base_url,
                           "--wait", "-o", str(out), "--format", "json", env=submit_env)
    elapsed = time.monotonic() - started
    assert submitted.returncode == 0, submitted.stderr
    service_verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(service_verdicts) == 1000
    assert sum(len(v["calls"]) for v in service_verdicts) == 2000

    cli_out = tmp_path / "cli.jsonl"
    judged = run_pjudge("judge", str(items_path), "-o", str(cli_out), "--provider", "openai-compatible",
                        "--model", "sim-judge", "--base-url", sim.openai_base_url, "--no-cache",
                        env={"OPENAI_API_KEY": provider_key})
    assert judged.returncode == 0, judged.stderr
    cli = {v["id"]: v for v in map(json.loads, cli_out.read_text().splitlines())}
    fields = ("winner", "p_a", "certainty", "consistent", "bpde", "abstained")
    assert all(tuple(v[f] for f in fields) == tuple(cli[v["id"]][f] for f in fields) for v in service_verdicts)

    service.stop()
    logs = (submitted.stdout + submitted.stderr + judged.stdout + judged.stderr
            + "".join(w.output() for w in service.workers) + out.read_text())
    assert api_key not in logs and provider_key not in logs
    assert "POST /v1/jobs" in api.output() or "listening" in api.output()
    print(f"1000 items through API + worker in {elapsed:.1f}s")
