"""Importers of recorded judge outputs from published tools into verdicts (SPEC section 5).

Each format has its own module with an `IMPORTER`; `import_verdicts` reads every file whole before
returning, so a bad file raises `InputError` (file, line, field) and nothing half-imported escapes.
"""

from __future__ import annotations

from pathlib import Path

from judge.importers import faireval, fastchat, llmbar, personalized_judge, trust_or_escalate
from judge.importers._common import Importer, LabelFile, input_error, read_label_file
from judge.records import Verdict

FORMATS: dict[str, Importer] = {
    importer.name: importer
    for importer in (
        personalized_judge.IMPORTER,
        faireval.IMPORTER,
        llmbar.IMPORTER,
        trust_or_escalate.IMPORTER,
        fastchat.IMPORTER,
    )
}

__all__ = ["FORMATS", "Importer", "LabelFile", "get_importer", "import_verdicts"]


def get_importer(format: str) -> Importer:
    try:
        return FORMATS[format]
    except KeyError:
        raise input_error("format", f"unknown format '{format}' (known: {', '.join(FORMATS)})") from None


def import_verdicts(format: str, paths: list[str], labels: str | None = None) -> list[Verdict]:
    """Verdicts of every file in `paths`, in file order then record order.

    `labels` is a FairEval-style label file (CHATGPT / VICUNA13B / TIE lines) for the formats
    whose review files carry no human label; the others take their labels from the files.
    Ids are those of each format; importing several runs of one judge together therefore repeats
    ids, and `metadata.source` / `metadata.path` tell the runs apart.
    """
    importer = get_importer(format)
    if not paths:
        raise input_error(format, "no input files given")
    label_file: LabelFile | None = None
    if labels is not None:
        if not importer.uses_labels:
            raise input_error(labels, f"format '{format}' takes its human labels from its own files, not --labels")
        label_file = read_label_file(labels)
    verdicts: list[Verdict] = []
    for path in paths:
        verdicts.extend(importer.import_file(Path(path), label_file))
    return verdicts
