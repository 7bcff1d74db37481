"""Accuracy of the detector on the evaluation files under ``eval/`` (``python -m specray.domains.evaluate``).

``eval/public.jsonl`` holds real public benchmark prompts (see ``collect_eval``); ``eval/styled.jsonl``
holds prompts written for this project in the style of benchmarks no package ships. Neither is
ever used for training.
"""

import json
from collections import defaultdict
from pathlib import Path

from specray.domains.detector import DomainDetector

EVAL_DIR = Path(__file__).parent / "eval"
EVAL_FILES = ("public.jsonl", "styled.jsonl")


def eval_rows() -> list[dict]:
    """All evaluation rows {id, prompt, domain, source}."""
    rows = []
    for name in EVAL_FILES:
        with open(EVAL_DIR / name, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def accuracy_report(detector: DomainDetector, rows: list[dict]) -> dict:
    """Overall, per-domain and per-source accuracy, plus the misclassified rows."""
    preds = [d for d, _ in detector.predict([r["prompt"] for r in rows])]
    hits = defaultdict(lambda: [0, 0])
    errors = []
    for row, pred in zip(rows, preds):
        ok = pred == row["domain"]
        for key in ("overall", f"domain:{row['domain']}", f"source:{row['source']}"):
            hits[key][0] += ok
            hits[key][1] += 1
        if not ok:
            errors.append({"id": row["id"], "expected": row["domain"], "predicted": pred, "prompt": row["prompt"][:200]})
    return {"accuracy": {k: (c / n, n) for k, (c, n) in sorted(hits.items())}, "errors": errors}


if __name__ == "__main__":
    report = accuracy_report(DomainDetector.load(), eval_rows())
    for key, (acc, n) in report["accuracy"].items():
        print(f"{acc:7.2%}  n={n:4d}  {key}")
    for e in report["errors"]:
        print(f"  {e['id']}: {e['expected']} -> {e['predicted']}: {e['prompt'][:120]!r}")
