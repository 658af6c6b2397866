#!/usr/bin/env python
"""Convert the PENS personalized test data into responses.jsonl (SPEC 1.3) for `pjudge personalization`.

One line per (news item, user, model): prompt_id = news id, persona_id = user id, system = model,
response = the model's headline for that user, reference = the user's own headline. The PENS news
bodies are not available, so there is no persona-agnostic line (only the simplified variant applies).

Two sources, both under the reference data folder (default ../shared/data/perseval from the repository):
- `consolidated` (default): derived/pens_personalized_consolidated.jsonl, one news item per line with
  m_summary_dict {user: {"user": headline, "NRMS_1": ..., ...}};
- `raw`: KDM-LAB__Evaluation-Framework-for-Personalized-Summarization/temporal_variance/
  personalized_test.tsv (users' own headlines) and hyps_<model>.txt (one model headline per
  (user, news) pair in file order, skipping pairs whose user headline is empty).

The data is research-only and must never enter the repository: the output path must lie outside it.

    python scripts/pens_to_responses.py -o /tmp/pens_responses.jsonl [--source raw] [--data DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "perseval"
CONSOLIDATED = Path("derived") / "pens_personalized_consolidated.jsonl"
RAW_DIR = Path("KDM-LAB__Evaluation-Framework-for-Personalized-Summarization") / "temporal_variance"
# hyps file suffix -> the model name used by the EGISES code and the consolidated file
RAW_MODELS = {"NRMS": "NRMS_1", "NRMS_2": "NRMS_2", "NAML": "NAML_1", "EBNR": "EBNR_1", "EBNR_2": "EBNR_2"}

Line = dict[str, str | None]


def from_consolidated(path: Path) -> Iterator[Line]:
    with path.open(encoding="utf-8") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            record = json.loads(raw)
            for user, texts in record["m_summary_dict"].items():
                for model, text in texts.items():
                    if model != "user":
                        yield _line(record["doc_id"], user, model, text, texts["user"])


def from_raw(directory: Path) -> Iterator[Line]:
    """Pair every non-empty user headline of personalized_test.tsv with the models' lines.

    A user who was shown the same news twice wrote two headlines; the last one is kept (as the
    consolidated file does), since responses.jsonl allows one line per (prompt, persona, system).
    """
    pairs = list(_user_headlines(directory / "personalized_test.tsv"))
    hypotheses = {}
    for suffix, model in RAW_MODELS.items():
        lines = (directory / f"hyps_{suffix}.txt").read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) != len(pairs):
            raise SystemExit(f"hyps_{suffix}.txt has {len(lines)} lines for {len(pairs)} user headlines")
        hypotheses[model] = lines
    latest: dict[tuple[str, str], int] = {}  # (news, user) -> index of its last headline
    for index, (user, news, _) in enumerate(pairs):
        latest.pop((news, user), None)  # re-insert so that the order follows the kept headline
        latest[(news, user)] = index
    by_news: dict[str, list[int]] = {}
    for (news, _), index in latest.items():
        by_news.setdefault(news, []).append(index)
    for news, indices in by_news.items():
        for index in sorted(indices):
            user, _, headline = pairs[index]
            for model, lines in hypotheses.items():
                yield _line(news, user, model, lines[index], headline)


def _user_headlines(path: Path) -> Iterator[tuple[str, str, str]]:
    """(user, news, headline) for every non-empty headline, in file order."""
    csv.field_size_limit(sys.maxsize)  # the click histories are long fields
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")  # csv: one headline field holds a quoted tab
        header = next(reader)
        if header[:4] != ["userid", "clicknewsID", "posnewID", "rewrite_titles"]:
            raise SystemExit(f"{path}: unexpected header {header}")
        for row in reader:
            user, news_ids, headlines = row[0], row[2].split(","), row[3].split(";;")
            if len(news_ids) != len(headlines):
                raise SystemExit(f"{path}: user {user} has {len(news_ids)} news and {len(headlines)} headlines")
            for news, headline in zip(news_ids, headlines, strict=True):
                if headline.strip():
                    yield user, news, headline


def _line(prompt_id: str, persona_id: str, system: str, response: str, reference: str) -> Line:
    return {"prompt_id": prompt_id, "persona_id": persona_id, "system": system, "response": response,
            "reference": reference}


def _inside_repository(path: Path) -> bool:
    resolved = path.resolve()
    return resolved == REPO or REPO in resolved.parents


def convert(source: str, data: Path, output: Path) -> int:
    if _inside_repository(output):
        raise SystemExit(f"refusing to write {output}: the PENS data is research-only and stays out of the repository")
    lines = from_consolidated(data / CONSOLIDATED) if source == "consolidated" else from_raw(data / RAW_DIR)
    count = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="responses.jsonl to write (outside the repo)")
    parser.add_argument("--source", choices=["consolidated", "raw"], default="consolidated")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"perseval data folder [{DEFAULT_DATA}]")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"data folder not found: {args.data}")
    count = convert(args.source, args.data, args.output)
    print(f"wrote {count} lines to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
