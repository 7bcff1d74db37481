"""Train the domain detector with scikit-learn and export it as a JSON artifact (``python -m specray.domains.train``).

Deterministic: the corpus is seeded, the vocabulary is chosen with an explicit tie-break, and lbfgs
has no randomness, so re-running reproduces the shipped ``detector.json`` (to the rounding of its
numbers, whatever the numpy and scikit-learn releases).
"""

import json
import sys
from pathlib import Path

import numpy as np

from specray.domains.corpus import training_corpus
from specray.domains.detector import ARTIFACT, FORMAT
from specray.domains.features import analyze

MAX_FEATURES = 40000
MIN_DF = 2
C = 10.0
DIGITS = 6  # significant digits kept in the artifact: ~1e-6 relative error, a third of the file size


def select_vocabulary(prompts: list[str]) -> list[str]:
    """The MAX_FEATURES most frequent features seen in at least MIN_DF prompts, ties broken by the
    feature itself. sklearn's own `max_features` breaks ties by an unstable argsort, whose order moved
    between numpy releases and with it the shipped artifact; choosing here keeps training reproducible."""
    from sklearn.feature_extraction.text import CountVectorizer

    counts = CountVectorizer(analyzer=analyze, min_df=MIN_DF)
    totals = np.asarray(counts.fit_transform(prompts).sum(axis=0)).ravel()
    names = counts.get_feature_names_out()
    order = sorted(range(len(names)), key=lambda i: (-totals[i], names[i]))[:MAX_FEATURES]
    return sorted(names[i] for i in order)


def fit_detector(prompts: list[str], labels: list[str]):
    """(vectorizer, model) fitted on the prompts; sklearn is imported only here, for training."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(analyzer=analyze, sublinear_tf=True, vocabulary=select_vocabulary(prompts))
    x = vectorizer.fit_transform(prompts)
    model = LogisticRegression(C=C, max_iter=5000).fit(x, labels)
    return vectorizer, model


def export_artifact(vectorizer, model) -> dict:
    """The fitted pipeline as plain JSON-able numbers, columns in vocabulary order."""
    vocabulary = vectorizer.get_feature_names_out().tolist()
    return {
        "format": FORMAT,
        "classes": model.classes_.tolist(),
        "sublinear_tf": bool(vectorizer.sublinear_tf),
        "vocabulary": vocabulary,
        "idf": _rounded(vectorizer.idf_),
        "coef": [_rounded(row) for row in model.coef_],
        "intercept": _rounded(model.intercept_),
    }


def _rounded(values) -> list[float]:
    return [float(f"{v:.{DIGITS}g}") for v in values]


def train_detector(out_path: str | Path = ARTIFACT) -> Path:
    """Train on the project's own corpus and write the artifact; returns its path."""
    vectorizer, model = fit_detector(*training_corpus())
    out_path = Path(out_path)
    out_path.write_text(json.dumps(export_artifact(vectorizer, model), separators=(",", ":")) + "\n", encoding="utf-8")
    return out_path


if __name__ == "__main__":
    print(train_detector(*sys.argv[1:2]))
