"""Domain detector inference in numpy: TF-IDF features + multinomial logistic regression, loaded from JSON.

The artifact holds plain numbers (vocabulary, idf, coefficients, intercepts, classes), so loading
it runs no pickled code and needs no scikit-learn.
"""

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np

from specray.domains.features import analyze

ARTIFACT = Path(__file__).parent / "detector.json"
FORMAT = "specray-domain-detector/1"


class DomainDetector:
    """Predicts code | math | logic | chat for prompts, with the model's probability as confidence."""

    def __init__(self, classes: list[str], vocabulary: list[str], idf, coef, intercept, sublinear_tf: bool):
        self.classes = list(classes)
        self.index = {term: i for i, term in enumerate(vocabulary)}
        self.idf = np.asarray(idf, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.sublinear_tf = sublinear_tf

    @classmethod
    def load(cls, path: str | Path | None = None) -> "DomainDetector":
        """Load an artifact written by ``train_detector`` (default: the one shipped with the package)."""
        path = Path(path) if path else ARTIFACT
        spec = json.loads(path.read_text(encoding="utf-8"))
        if spec.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} artifact (format={spec.get('format')!r})")
        return cls.from_artifact(spec)

    @classmethod
    def from_artifact(cls, spec: dict) -> "DomainDetector":
        """Build from the artifact's parsed JSON (what ``train.export_artifact`` returns)."""
        return cls(spec["classes"], spec["vocabulary"], spec["idf"], spec["coef"], spec["intercept"], spec["sublinear_tf"])

    def features(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and l2-normalised TF-IDF values of one prompt, as sklearn's TfidfVectorizer computes them."""
        counts = Counter(self.index[t] for t in analyze(prompt) if t in self.index)
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        if self.sublinear_tf:
            tf = 1.0 + np.log(tf)
        vals = tf * self.idf[idx]
        norm = np.sqrt(vals @ vals)
        return idx, (vals / norm if norm > 0 else vals)

    def predict_proba(self, prompts: list[str]) -> np.ndarray:
        """(n_prompts, n_classes) class probabilities."""
        logits = np.empty((len(prompts), len(self.classes)))
        for row, prompt in enumerate(prompts):
            idx, vals = self.features(prompt)
            logits[row] = self.intercept + self.coef[:, idx] @ vals
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def predict(self, prompts: list[str]) -> list[tuple[str, float]]:
        """(domain, confidence) per prompt."""
        probs = self.predict_proba(prompts)
        best = probs.argmax(axis=1)
        return [(self.classes[b], float(probs[i, b])) for i, b in enumerate(best)]


def resolve_domains(rows: list, detector: DomainDetector) -> list[tuple[object, float]]:
    """(row with its domain set, confidence) per row; an explicit domain wins (confidence 1.0) and is never re-detected.

    Rows are PromptRow-like dataclasses or dicts with "prompt" and "domain"."""
    todo = [i for i, row in enumerate(rows) if not _field(row, "domain")]
    detected = dict(zip(todo, detector.predict([_field(rows[i], "prompt") for i in todo]))) if todo else {}
    out = []
    for i, row in enumerate(rows):
        if i not in detected:
            out.append((row, 1.0))
            continue
        domain, confidence = detected[i]
        out.append(({**row, "domain": domain} if isinstance(row, dict) else dataclasses.replace(row, domain=domain), confidence))
    return out


def _field(row, key: str):
    return row[key] if isinstance(row, dict) else getattr(row, key)
