"""The library API (`from judge import evaluate`) in-process, against the MockProvider: every kind
of items and profile, the cache, a custom provider, a running event loop, and clear errors."""

from __future__ import annotations

import _thread
import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import calibration
import judge
from judge import (
    CallRequest,
    CallResult,
    CascadeProfile,
    EvaluationResult,
    InputError,
    PairItem,
    ProfileError,
    evaluate,
    evaluate_async,
    load_judging,
)
from judge.jsonl import read_verdicts
from judge.paths import cache_path
from judge.providers.mock import MockProvider, ScriptExhausted
from tests.support.cli import EXAMPLE_ITEMS


def prefers_a(request: CallRequest) -> str:
    """An answer that always prefers the item's own response A (shown second in order BA)."""
    return "[[A]] [[90]]" if request.order == "AB" else "[[B]] [[90]]"


def rows(n: int = 3) -> list[dict[str, Any]]:
    return [{"id": f"i{k}", "prompt": f"question {k}", "response_a": "yes", "response_b": "no",
             "persona": "a tester", "human_label": "A", "metadata": {"group": k % 2}} for k in range(n)]


class FakeDataset:
    """What evaluate reads of a `datasets.Dataset` (not a dependency): column names, features, rows."""

    def __init__(self, data: list[dict[str, Any]]):
        self._rows = data
        self.column_names = list(data[0])
        self.features = {name: "string" for name in self.column_names}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(dict(row) for row in self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def test_a_list_of_dicts_gives_one_verdict_per_item_in_order() -> None:
    result = evaluate(rows(5), provider=MockProvider(prefers_a), cache=None)
    assert isinstance(result, EvaluationResult) and isinstance(result, list)
    assert [v.id for v in result] == [f"i{k}" for k in range(5)]
    assert all(v.winner == "A" and v.consistent and len(v.calls) == 2 for v in result)
    assert result.progress.calls == 10 and result.progress.cached_calls == 0
    assert result.judging.name == "persona-certainty"


def test_pair_items_a_generator_and_a_dataset_are_items_too() -> None:
    items = [PairItem.model_validate(row) for row in rows()]
    assert [v.id for v in evaluate(items, provider=MockProvider(prefers_a), cache=None)] == ["i0", "i1", "i2"]
    generated = (row for row in rows())
    assert len(evaluate(generated, provider=MockProvider(prefers_a), cache=None)) == 3
    dataset = FakeDataset(rows(4))
    result = evaluate(dataset, provider=MockProvider(prefers_a), cache=None)
    assert [v.id for v in result] == [f"i{k}" for k in range(4)]


def test_a_real_datasets_dataset_and_its_dataset_dict() -> None:
    datasets = pytest.importorskip("datasets")  # optional: not a dependency of the project
    dataset = datasets.Dataset.from_list(rows(4))
    result = evaluate(dataset, provider=MockProvider(prefers_a), cache=None)
    assert [v.id for v in result] == [f"i{k}" for k in range(4)] and result[1].metadata == {"group": 1}
    with pytest.raises(InputError, match=r"a DatasetDict holds splits: pass one, e.g. dataset\['train'\]"):
        evaluate(datasets.DatasetDict({"train": dataset}), cache=None)
    with pytest.raises(InputError, match=r"dataset\[0\], field 'chosen': unknown field"):
        evaluate(dataset.add_column("chosen", ["x"] * 4), cache=None)


@pytest.mark.parametrize("as_path", [str, Path])
def test_a_jsonl_path_is_read_as_pjudge_judge_reads_it(as_path: type) -> None:
    result = evaluate(as_path(EXAMPLE_ITEMS), provider=MockProvider(prefers_a), cache=None)
    expected = [json.loads(line)["id"] for line in EXAMPLE_ITEMS.read_text().splitlines() if line.strip()]
    assert [v.id for v in result] == expected


def test_bad_rows_are_named_by_index_and_field() -> None:
    bad = rows(3)
    del bad[1]["prompt"]
    bad[2]["colour"] = "red"
    with pytest.raises(InputError) as caught:
        evaluate(bad, provider=MockProvider(prefers_a), cache=None)
    assert str(caught.value).splitlines() == ["items[1], field 'prompt': required field is missing",
                                              "items[2], field 'colour': unknown field"]
    with pytest.raises(InputError, match=r"items\[1\], field 'id': duplicate id 'i0' \(first at index 0\)"):
        evaluate([rows()[0], rows()[0]], cache=None)
    with pytest.raises(InputError, match=r"items\[0\]: expected a mapping or a PairItem, not str"):
        evaluate(["not an item"], cache=None)
    data = rows(2)
    data[1]["response_b"] = " "
    with pytest.raises(InputError, match=r"dataset\[1\], field 'response_b': .*must not be blank"):
        evaluate(FakeDataset(data), cache=None)
    with pytest.raises(InputError, match="items: no items"):
        evaluate([], cache=None)


def test_a_single_dict_a_dataset_dict_and_a_number_are_refused_with_a_reason() -> None:
    with pytest.raises(InputError, match="not a single mapping: wrap it in a list"):
        evaluate(rows()[0], cache=None)  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(InputError, match=r"a DatasetDict holds splits: pass one, e.g. dataset\['train'\]"):
        splits = {"train": FakeDataset(rows()), "test": FakeDataset(rows())}
        evaluate(splits, cache=None)  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(InputError, match="not int"):
        evaluate(3, cache=None)  # type: ignore[arg-type]  # the mistake under test


def test_a_bad_jsonl_file_names_its_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    good, bad = rows(2)
    del bad["response_a"]
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=f"{path}, line 2, field 'response_a': required field is missing"):
        evaluate(path, cache=None)


def test_every_profile_form_judges(tmp_path: Path) -> None:
    file = tmp_path / "mine.toml"
    file.write_text('name = "mine"\ntemplate = "persona-certainty"\nsamples = 2\n')
    for profile, name, calls in [("persona-certainty", "persona-certainty", 2), (file, "mine", 4),
                                 (str(file), "mine", 4), ({"profile": "persona-certainty", "swap": False},
                                                          "persona-certainty", 1),
                                 (load_judging("persona-tie"), "persona-tie", 2)]:
        answer = "[[A]]" if name == "persona-tie" else "[[A]] [[90]]"
        result = evaluate(rows(1), profile, provider=MockProvider(answer), cache=None)
        assert result[0].judge.profile == name and len(result[0].calls) == calls, profile
    with pytest.raises(ProfileError, match="unknown profile 'no-such-judge'"):
        evaluate(rows(1), "no-such-judge", cache=None)


def test_a_cascade_escalates_what_its_first_stage_does_not_accept() -> None:
    cascade = {"name": "two", "cascade": [{"profile": "persona-certainty", "threshold": 0.9},
                                          {"profile": {"profile": "persona-certainty", "model": "strong"}}]}

    def answer(request: CallRequest) -> str:
        sure = request.item_id == "i0" or request.model == "strong"
        certainty = 99 if sure else 60
        return f"[[A]] [[{certainty}]]" if request.order == "AB" else f"[[B]] [[{certainty}]]"

    result = evaluate(rows(2), cascade, provider=MockProvider(answer), cache=None)
    assert isinstance(result.judging, CascadeProfile)
    first, second = result
    assert first.stage == 0 and [s.model for s in first.stages or []] == ["gpt-4o-2024-08-06"]
    assert second.abstained and [s.model for s in second.stages or []] == ["gpt-4o-2024-08-06", "strong"]
    assert result.progress.calls == 2 + 2 + 2
    assert "cascade_stages" in result.report(bootstrap_resamples=0)
    abstaining = evaluate(rows(2), {**cascade, "then": "abstain"}, provider=MockProvider(answer), cache=None)
    assert abstaining.report(bootstrap_resamples=0) == calibration.build_report(
        list(abstaining), bootstrap_resamples=0, cascade_then="abstain")
    assert abstaining.report(bootstrap_resamples=0)["cascade_stages"]["then"] == "abstain"


def test_the_default_cache_is_the_clis_and_a_rerun_makes_no_call(tmp_path: Path) -> None:
    provider = MockProvider(prefers_a)
    first = evaluate(rows(), provider=provider)
    assert cache_path().exists() and len(provider.requests) == 6
    again = evaluate(rows(), provider=provider)
    assert len(provider.requests) == 6 and again.progress.cached_calls == 6
    assert [c.raw for v in again for c in v.calls] == [c.raw for v in first for c in v.calls]
    own = tmp_path / "own.sqlite"
    evaluate(rows(), provider=provider, cache=own)
    assert own.exists() and len(provider.requests) == 12
    evaluate(rows(), provider=provider, cache=False)
    assert len(provider.requests) == 18


def test_a_custom_provider_answers_every_call_and_stays_open() -> None:
    class Echo:
        name = "echo"

        def __init__(self) -> None:
            self.seen: list[tuple[str, str]] = []
            self.closed = False

        async def complete(self, request: CallRequest) -> CallResult:
            self.seen.append((request.item_id, request.order))
            text = "[[B]] [[70]]" if request.order == "AB" else "[[A]] [[70]]"
            return CallResult(text=text, input_tokens=100, output_tokens=5)

        async def aclose(self) -> None:
            self.closed = True

    provider = Echo()
    result = evaluate(rows(2), provider=provider, cache=None)
    assert sorted(provider.seen) == [("i0", "AB"), ("i0", "BA"), ("i1", "AB"), ("i1", "BA")]
    assert [v.winner for v in result] == ["B", "B"] and not provider.closed
    assert result.progress.cost_usd == pytest.approx(4 * (100 * 2.5 + 5 * 10.0) / 1e6)


def test_evaluate_works_inside_a_running_event_loop_and_evaluate_async_on_it() -> None:
    async def notebook_cell() -> tuple[list[str | None], list[str | None]]:
        blocking = evaluate(rows(), provider=MockProvider(prefers_a), cache=None)
        awaited = await evaluate_async(rows(), provider=MockProvider(prefers_a), cache=None)
        return [v.winner for v in blocking], [v.winner for v in awaited]

    assert asyncio.run(notebook_cell()) == (["A"] * 3, ["A"] * 3)

    async def failing_cell() -> None:
        evaluate(rows(), provider=MockProvider([]), cache=None)  # a script with no answer: the run fails

    with pytest.raises(ScriptExhausted, match="the mock's script has no answer left"):
        asyncio.run(failing_cell())


def test_interrupting_evaluate_in_a_running_loop_cancels_the_calls_and_raises() -> None:
    provider = MockProvider(prefers_a, delay_s=60)

    async def notebook_cell() -> None:
        threading.Timer(0.5, _thread.interrupt_main).start()  # the notebook's interrupt button
        evaluate(rows(), provider=provider, cache=None)

    loop = asyncio.new_event_loop()  # run_until_complete, unlike asyncio.run, leaves SIGINT as it is
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(notebook_cell())
    finally:
        loop.close()
    assert time.monotonic() - started < 10
    assert provider.cancelled == 6 and provider.in_flight == 0


def test_report_and_to_jsonl_are_the_clis(tmp_path: Path) -> None:
    result = evaluate(rows(6), provider=MockProvider(prefers_a), cache=None)
    report = result.report(group_by="group", bootstrap_resamples=0)
    assert report == calibration.build_report(list(result), group_by="group", bootstrap_resamples=0)
    assert report["counts"] == calibration.build_report(list(result), bootstrap_resamples=0)["counts"]
    with pytest.raises(ValueError, match="delta needs target_accuracy"):
        result.report(delta=0.1)
    path = tmp_path / "out" / "verdicts.jsonl"
    assert result.to_jsonl(path) == 6
    assert read_verdicts(path) == list(result)


def test_bad_options_are_refused_before_any_call() -> None:
    provider = MockProvider(prefers_a)
    with pytest.raises(ValueError, match="concurrency must be a positive integer"):
        evaluate(rows(), provider=provider, concurrency=0)
    with pytest.raises(TypeError, match="cache must be True, False, None, a path or a CallCache, not int"):
        evaluate(rows(), provider=provider, cache=3)  # type: ignore[arg-type]  # the mistake under test
    assert provider.requests == []


def test_the_public_names_resolve_and_importing_a_module_loads_no_more_than_before() -> None:
    for package in (judge, calibration):
        assert sorted(package.__all__) == package.__all__
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        with pytest.raises(AttributeError):
            package.no_such_name  # noqa: B018  # the attribute access under test
    heavy = ("judge._evaluate", "judge.runner", "calibration.report")
    code = (f"import sys, judge.records, calibration.counts; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_progress_bar_is_off_unless_asked_for_or_stderr_is_a_terminal(
        capfd: pytest.CaptureFixture[str]) -> None:
    evaluate(rows(2), provider=MockProvider(prefers_a), cache=None)  # pytest's stderr is no terminal
    assert capfd.readouterr().err == ""
    evaluate(rows(2), provider=MockProvider(prefers_a), cache=None, progress=True)
    assert "4/4 calls 0 failed, 0 cached, $0.0000" in capfd.readouterr().err
