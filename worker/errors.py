"""What a worker reports when items cannot be judged: error verdicts of a single judge, and
tracebacks fit for the log (worker.provider_batches; worker.tasks has its own copies, which the
cascade work extended: merge them here)."""

from __future__ import annotations

import re
import traceback

from judge.records import JudgeInfo, PairItem, Verdict


def error_verdicts(judge_info: JudgeInfo, items: list[tuple[int, PairItem]], message: str) -> list[tuple[int, Verdict]]:
    return [
        (position, Verdict(id=item.id, winner=None, p_a=None, certainty=None, consistent=None, abstained=False,
                           bpde=None, human_label=item.human_label, judge=judge_info, calls=[],
                           len_a=len(item.response_a), len_b=len(item.response_b), error=message,
                           metadata=dict(item.metadata)))
        for position, item in items
    ]


_URL_PASSWORD = re.compile(r"(://[^/\s:@]*:)[^@/\s]+@")


def safe_traceback(exc: BaseException) -> str:
    """The exception's traceback for the log, without secrets: key-like strings and the values of
    key variables struck (judge.providers.base.redact), and URL passwords masked."""
    from judge.providers.base import redact

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return _URL_PASSWORD.sub(r"\1***@", redact(text))
