"""Print the leave-one-corpus-out table of docs/results/cross-corpus.md from finished runs.

  python scripts/cross_corpus_table.py --loco RUN_DIR [RUN_DIR ...] \\
      --reference "CREMA-D-only primary" crema-d models/primary/cv_metrics.json \\
      --reference "CREMA-D-only primary" ravdess runs/primary-on-ravdess/metrics.json ...

--loco: `python -m train loco` runs (their loco.json; every held-out corpus and scoring variant is
a row). --reference NAME CORPUS METRICS: a `train evaluate` metrics.json ("eval") or a cv run's
cv_metrics.json ("oof") scored on CORPUS. Rows give macro-F1 over the corpus's classes, per-class
recall and the sad -> disgust and neutral -> disgust shares; one confusion matrix per row follows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.labels import EMOTIONS  # noqa: E402
from train.evaluate import EvalResult  # noqa: E402
from train.loco import LOCO_JSON, holdout_record  # noqa: E402


def rows_from_loco(run: Path) -> list[tuple[str, str, dict]]:
    """One row per held-out corpus and scoring variant, read from each RUN/holdout-*/loco.json."""
    rows = []
    for path in sorted(run.glob(f"holdout-*/{LOCO_JSON}")):
        record = json.loads(path.read_text())
        corpus = record["held_out"]
        for variant, scores in record["scores"].items():
            rows.append((f"{run.name} ({variant}; trained on {' + '.join(record['trained_on'])})", corpus, scores))
    return rows


def row_from_metrics(name: str, corpus: str, path: Path) -> tuple[str, str, dict]:
    payload = json.loads(path.read_text())
    result = EvalResult.from_dict(payload.get("eval") or payload["oof"])
    speakers = len(payload.get("data", {}).get("speakers", []))
    return name, corpus, holdout_record(result, speakers)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def table(rows: list[tuple[str, str, dict]]) -> str:
    head = ["model", "scored on", "macro-F1", *(f"{c} recall" for c in EMOTIONS), "sad → disgust",
            "neutral → disgust"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, corpus, s in rows:
        recalls = [_pct(s["recall"].get(c)) for c in EMOTIONS]
        lines.append(f"| {name} | {corpus} | **{s['macro_f1']:.3f}** | " + " | ".join(recalls)
                     + f" | {_pct(s['sad_as_disgust'])} | {_pct(s['neutral_as_disgust'])} |")
    return "\n".join(lines)


def confusions(rows: list[tuple[str, str, dict]]) -> str:
    out = []
    for name, corpus, s in rows:
        ev = s["eval"]
        out += [f"**{name}, scored on {corpus}** (rows: true class, columns: predicted; {ev['n']} clips)", "",
                "| | " + " | ".join(ev["labels"]) + " |", "|" + "---|" * (len(ev["labels"]) + 1)]
        out += [f"| {label} | " + " | ".join(str(n) for n in row) + " |" for label, row in zip(ev["labels"],
                                                                                           ev["confusion"])]
        out.append("")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loco", nargs="*", type=Path, default=[], metavar="RUN_DIR")
    parser.add_argument("--reference", nargs=3, action="append", default=[], metavar=("NAME", "CORPUS", "JSON"))
    ns = parser.parse_args()
    rows = [row_from_metrics(name, corpus, Path(path)) for name, corpus, path in ns.reference]
    for run in ns.loco:
        rows += rows_from_loco(run)
    print(table(rows))
    print()
    print(confusions(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
