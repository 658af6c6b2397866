"""End to end: the real openai and anthropic SDKs against `pjudge llm-sim` over loopback."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import pytest

from tests.support.cli import EXAMPLE_ITEMS, run_pjudge


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def first_position_rate(verdicts: list[dict]) -> float:
    shown_first = parsed = 0
    for verdict in verdicts:
        for call in verdict["calls"]:
            if call["choice"] in ("A", "B"):
                parsed += 1
                shown_first += call["choice"] == ("A" if call["order"] == "AB" else "B")
    return shown_first / parsed


def accuracy(verdicts: list[dict]) -> float:
    labelled = [v for v in verdicts if v["human_label"] is not None]
    return sum(v["winner"] == v["human_label"] for v in labelled) / len(labelled)


def generated_items(path: Path, n: int, seed: int = 3) -> Path:
    """Items whose persona-fitting answer is known: it repeats the persona's interests."""
    rng = random.Random(seed)
    interests = ["gardening", "chess", "cycling", "baking", "astronomy", "painting", "fishing", "violin",
                 "hiking", "poetry", "football", "knitting", "photography", "sailing", "climbing", "pottery"]
    rows = []
    for i in range(n):
        likes = rng.sample(interests, 3)
        others = rng.sample([w for w in interests if w not in likes], 3)
        good = f"You could spend your weekends on {likes[0]}, try {likes[1]} clubs, and read about {likes[2]}."
        bad = f"You could spend your weekends on {others[0]}, try {others[1]} clubs, and read about {others[2]}."
        label = rng.choice("AB")
        a, b = (good, bad) if label == "A" else (bad, good)
        rows.append({"id": f"g{i}", "persona": f"The person enjoys {', '.join(likes)}.",
                     "prompt": "How should I spend my free time?", "response_a": a, "response_b": b,
                     "human_label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def judge_cli(items: Path, out: Path, base_url: str, *extra: str, provider: str = "openai-compatible",
              env: dict[str, str] | None = None) -> dict:
    result = run_pjudge("judge", str(items), "-o", str(out), "--provider", provider, "--model", "sim-judge",
                        "--base-url", base_url, "--format", "json", *extra, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_example_items_with_both_sdks_swap_beats_single_order_and_reruns_are_free(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--first-bias", "0.3", "--noise", "0.05", "--seed", "11")
    items = read_jsonl(EXAMPLE_ITEMS)
    out = tmp_path / "openai.jsonl"
    summary = judge_cli(EXAMPLE_ITEMS, out, sim.openai_base_url)
    verdicts = read_jsonl(out)
    assert [v["id"] for v in verdicts] == [i["id"] for i in items]
    assert summary["calls"] == 2 * len(items) and summary["failed_calls"] == 0
    assert all(len(v["calls"]) == 2 and {c["order"] for c in v["calls"]} == {"AB", "BA"} for v in verdicts)
    served = sim.stats()["completions"]
    assert served == 2 * len(items)

    # The same items through the anthropic SDK, pointed at the same server.
    anthropic_out = tmp_path / "anthropic.jsonl"
    judge_cli(EXAMPLE_ITEMS, anthropic_out, sim.url, provider="anthropic", env={"ANTHROPIC_API_KEY": "test-key"})
    assert len(read_jsonl(anthropic_out)) == len(items)
    assert sim.stats()["by_endpoint"]["anthropic"] == 2 * len(items)

    single_out = tmp_path / "single.jsonl"
    judge_cli(EXAMPLE_ITEMS, single_out, sim.openai_base_url, "--no-swap")
    single = read_jsonl(single_out)
    assert all(len(v["calls"]) == 1 and v["consistent"] is None for v in single)
    assert accuracy(verdicts) > accuracy(single)

    # A rerun of the same items and profile is answered from the cache: zero HTTP requests.
    before = sim.stats()["requests"]
    rerun_out = tmp_path / "rerun.jsonl"
    rerun = judge_cli(EXAMPLE_ITEMS, rerun_out, sim.openai_base_url)
    assert sim.stats()["requests"] == before
    assert rerun["cached_calls"] == rerun["calls"] == 2 * len(items)
    assert [v["winner"] for v in read_jsonl(rerun_out)] == [v["winner"] for v in verdicts]
    assert all(c["cached"] and c["cost_usd"] == 0 for v in read_jsonl(rerun_out) for c in v["calls"])


def test_first_position_rate_matches_the_simulated_bias(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--first-bias", "0.3", "--noise", "0.05", "--seed", "5")
    items = generated_items(tmp_path / "items.jsonl", 400)
    out = tmp_path / "v.jsonl"
    judge_cli(items, out, sim.openai_base_url, "--concurrency", "64")
    verdicts = read_jsonl(out)
    rate = first_position_rate(verdicts)
    assert abs(rate - (0.5 + 0.3 / 2)) < 0.05, rate
    consistent = sum(v["consistent"] for v in verdicts) / len(verdicts)
    assert 0.55 < consistent < 0.85  # each order is biased independently with probability 0.3
    assert accuracy(verdicts) > 0.9


def test_failures_and_malformed_answers_end_in_a_verdict_or_a_recorded_error(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--fail-rate", "0.2", "--malformed-rate", "0.1", "--retry-after-ms", "20", "--seed", "2")
    items = generated_items(tmp_path / "items.jsonl", 150, seed=9)
    out = tmp_path / "v.jsonl"
    summary = judge_cli(items, out, sim.openai_base_url)
    verdicts = read_jsonl(out)
    assert len(verdicts) == 150 == summary["items"]
    calls = [c for v in verdicts for c in v["calls"]]
    assert len(calls) == 300
    stats = sim.stats()
    assert stats["failures_injected"] > 20 and stats["malformed"] > 10
    assert stats["requests"] > 300  # the SDK retried 429/500, and unparseable answers were re-asked
    reasked = [c for c in calls if c["attempts"] > 1]
    assert reasked, "some malformed answers must have been re-asked"
    for verdict in verdicts:
        assert verdict["winner"] is not None or verdict["error"]
        for call in verdict["calls"]:
            assert (call["choice"] is not None) != (call["error"] is not None)


def test_malformed_answers_exhaust_reasks_into_errors(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--malformed-rate", "1.0")
    items = generated_items(tmp_path / "items.jsonl", 5)
    out = tmp_path / "v.jsonl"
    summary = judge_cli(items, out, sim.openai_base_url)
    verdicts = read_jsonl(out)
    assert summary["failed_calls"] == 10 and summary["undecided"] == 5
    for verdict in verdicts:
        assert verdict["winner"] is None and verdict["error"].startswith("no call could be parsed")
        for call in verdict["calls"]:
            assert call["attempts"] == 3 and call["error"].startswith("unparseable") and call["raw"]
    assert sim.stats()["completions"] == 5 * 2 * 3


def test_samples_scores_profile_and_no_key_leaks(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--noise", "0.2", "--seed", "4")
    secret = "sk-test-VERYSECRET-0123456789abcdef"
    items = generated_items(tmp_path / "items.jsonl", 20)
    out = tmp_path / "v.jsonl"
    result = run_pjudge("judge", str(items), "-o", str(out), "--profile", "faireval-scores",
                        "--provider", "openai-compatible", "--model", "sim-judge", "--base-url",
                        sim.openai_base_url, env={"OPENAI_API_KEY": secret})
    assert result.returncode == 0, result.stderr
    verdicts = read_jsonl(out)
    assert all(len(v["calls"]) == 6 for v in verdicts)
    assert all(v["calls"][0]["scores"] is not None for v in verdicts)
    # the k samples of one prompt are distinct requests, so they can differ
    varied = sum(len({c["raw"] for c in v["calls"] if c["order"] == order}) > 1
                 for v in verdicts for order in ("AB", "BA"))
    assert varied >= 20
    assert accuracy(verdicts) > 0.8
    assert secret not in out.read_text() + result.stdout + result.stderr

    # A refused key is reported without the key, through a retry too (one: the SDK's six back off
    # for about 20 s).
    profile = tmp_path / "one-retry.toml"
    profile.write_text("max_retries = 1\n" + files("judge").joinpath("profiles/persona-certainty.toml").read_text())
    bad = run_pjudge("judge", str(items), "-o", str(tmp_path / "x.jsonl"), "--profile", str(profile),
                     "--provider", "openai", "--model", "gpt-4o",
                     env={"OPENAI_API_KEY": secret, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert "40 failed" in bad.stdout + bad.stderr, bad.stderr[-2000:]  # every call met the refusal
    assert secret not in bad.stdout + bad.stderr


def test_ctrl_c_keeps_finished_verdicts_and_the_cache(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--latency-ms", "300")
    items = generated_items(tmp_path / "items.jsonl", 400)
    out = tmp_path / "v.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pjudge", "judge", str(items), "-o", str(out), "--provider", "openai-compatible",
         "--model", "sim-judge", "--base-url", sim.openai_base_url, "--concurrency", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(4.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    written = read_jsonl(out)
    assert 0 < len(written) < 400
    assert "interrupted" in stderr
    # The calls in flight at the interrupt were abandoned, not cancelled at the server: it still
    # finishes (and counts) them within its 300 ms latency, so read the count once it is still.
    served = -1
    while served != (now := sim.stats()["completions"]):
        served = now
        time.sleep(0.6)
    # A rerun answers every finished call from the cache and only asks for the rest.
    summary = judge_cli(items, tmp_path / "v2.jsonl", sim.openai_base_url, "--concurrency", "128")
    assert summary["cached_calls"] >= 2 * len(written)
    assert sim.stats()["completions"] - served == 800 - summary["cached_calls"]


@pytest.mark.parametrize("flag", ["--first-bias", "--noise", "--fail-rate", "--malformed-rate"])
def test_sim_rejects_rates_outside_zero_one(flag: str) -> None:
    result = run_pjudge("llm-sim", flag, "1.5", "--port", "0", timeout=30)
    assert result.returncode == 2 and "1.5" in result.stderr


def test_direct_transport_makes_the_same_requests_and_verdicts_as_the_sdk(tmp_path: Path, start_sim) -> None:
    """transport 'direct' keeps the SDK's retry rules: against the same faults (drawn per retry
    number), both transports send the same requests and reach the same verdicts."""
    items = generated_items(tmp_path / "items.jsonl", 120, seed=4)
    runs = {}
    for transport in ("sdk", "direct"):
        sim = start_sim("--fail-rate", "0.25", "--malformed-rate", "0.1", "--retry-after-ms", "10", "--seed", "8")
        out = tmp_path / f"{transport}.jsonl"
        judge_cli(items, out, sim.openai_base_url, "--transport", transport, "--no-cache")
        runs[transport] = (read_jsonl(out), sim.stats())
        sim.stop()
    (sdk, sdk_stats), (direct, direct_stats) = runs["sdk"], runs["direct"]
    assert sdk_stats["failures_injected"] > 30
    for key in ("requests", "failures_injected", "malformed", "completions"):
        assert sdk_stats[key] == direct_stats[key], key
    for a, b in zip(sdk, direct, strict=True):
        assert (a["id"], a["winner"], a["p_a"], a["error"]) == (b["id"], b["winner"], b["p_a"], b["error"])
        assert [(c["choice"], c["attempts"], c["raw"]) for c in a["calls"]] == \
               [(c["choice"], c["attempts"], c["raw"]) for c in b["calls"]]


def test_direct_transport_errors_read_like_the_sdks(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--fail-rate", "1.0", "--retry-after-ms", "5", "--seed", "3")
    items = generated_items(tmp_path / "items.jsonl", 6)
    errors = {}
    for transport in ("sdk", "direct"):
        profile = tmp_path / f"{transport}.toml"
        profile.write_text(f'provider = "openai-compatible"\nmodel = "sim-judge"\nmax_retries = 1\n'
                           f'transport = "{transport}"\nbase_url = "{sim.openai_base_url}"\n')
        out = tmp_path / f"{transport}.jsonl"
        result = run_pjudge("judge", str(items), "-o", str(out), "--profile", str(profile), "--no-cache")
        assert result.returncode == 0, result.stderr
        errors[transport] = [c["error"] for v in read_jsonl(out) for c in v["calls"]]
    assert all(errors["direct"]) and len(errors["direct"]) == 12
    assert errors["direct"] == errors["sdk"]
    assert any("RateLimitError (HTTP 429): simulated rate limit" in e for e in errors["direct"])


def test_direct_transport_only_for_openai_compatible(tmp_path: Path) -> None:
    items = generated_items(tmp_path / "items.jsonl", 2)
    result = run_pjudge("judge", str(items), "-o", str(tmp_path / "v.jsonl"), "--provider", "anthropic",
                        "--transport", "direct")
    assert result.returncode == 2
    assert "transport 'direct' is for provider 'openai-compatible' only" in result.stderr


def test_openai_compatible_defaults_to_the_direct_transport_and_the_official_endpoints_keep_their_sdks() -> None:
    from judge.profiles import available_profiles, load_profile

    assert load_profile("persona-certainty", provider="openai-compatible", model="m").transport == "direct"
    assert load_profile("persona-certainty", provider="openai-compatible", model="m", transport="sdk").transport == "sdk"
    assert load_profile("persona-certainty", provider="anthropic", model="m").transport == "sdk"
    assert {load_profile(name).transport for name in available_profiles()} == {"sdk"}  # the built-ins: openai
