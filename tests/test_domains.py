"""Domain detector: accuracy on benchmark prompts it never saw, numpy == sklearn, safe artifact, helpers, CLI."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from specray.data.readers import ReaderConfig
from specray.data.rows import PromptRow
from specray.domains.cli import add_detect_parser, detect_main
from specray.domains.corpus import training_corpus
from specray.domains.detector import ARTIFACT, DomainDetector, resolve_domains
from specray.domains.evaluate import accuracy_report, eval_rows

DOMAINS = {"code", "math", "logic", "chat"}


@pytest.fixture(scope="module")
def detector():
    return DomainDetector.load()


@pytest.fixture(scope="module")
def corpus():
    return training_corpus()


@pytest.fixture(scope="module")
def small_fit(corpus):
    """A model fitted on every 6th training prompt: same code path as the shipped one, a few seconds."""
    pytest.importorskip("sklearn")
    from specray.domains.train import fit_detector

    prompts, labels = corpus
    return fit_detector(prompts[::6], labels[::6])


def test_accuracy_on_unseen_benchmark_prompts(detector):
    acc = accuracy_report(detector, eval_rows())["accuracy"]
    assert acc["overall"][0] >= 0.95, acc
    for domain in DOMAINS:
        assert acc[f"domain:{domain}"][0] >= 0.85, (domain, acc)


def test_public_benchmark_prompts_alone_pass_too(detector):
    rows = [r for r in eval_rows() if "not benchmark data" not in r["source"]]
    acc = accuracy_report(detector, rows)["accuracy"]
    assert acc["overall"][0] >= 0.95, acc
    assert all(acc[f"domain:{d}"][0] >= 0.85 for d in DOMAINS), acc


def test_evaluation_prompts_are_not_in_the_training_corpus(corpus):
    train = set(corpus[0])
    assert not train & {r["prompt"] for r in eval_rows()}


def test_training_corpus_is_balanced_and_labelled(corpus):
    prompts, labels = corpus
    counts = {d: labels.count(d) for d in DOMAINS}
    assert set(labels) == DOMAINS and min(counts.values()) >= 2000, counts
    assert len(set(prompts)) == len(prompts)


def test_numpy_inference_equals_sklearn(small_fit, corpus):
    from specray.domains.train import export_artifact

    vectorizer, model = small_fit
    numpy_detector = DomainDetector.from_artifact(json.loads(json.dumps(export_artifact(vectorizer, model))))
    prompts = [r["prompt"] for r in eval_rows()] + corpus[0][1::50] + ["", "   ", "???"]
    expected = model.predict_proba(vectorizer.transform(prompts))
    got = numpy_detector.predict_proba(prompts)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert [d for d, _ in numpy_detector.predict(prompts)] == model.predict(vectorizer.transform(prompts)).tolist()


def test_training_is_deterministic(small_fit, corpus):
    from specray.domains.train import export_artifact, fit_detector

    prompts, labels = corpus
    again = fit_detector(prompts[::6], labels[::6])
    assert export_artifact(*again) == export_artifact(*small_fit)


def test_train_detector_reproduces_shipped_artifact(tmp_path):
    from specray.domains.train import train_detector

    fresh = json.loads(train_detector(tmp_path / "d.json").read_text())
    shipped = json.loads(ARTIFACT.read_text())
    assert fresh["vocabulary"] == shipped["vocabulary"] and fresh["classes"] == shipped["classes"]
    for key in ("idf", "coef", "intercept"):
        np.testing.assert_allclose(fresh[key], shipped[key], rtol=1e-4, atol=1e-6)


def test_artifact_is_plain_json_and_loads_without_sklearn():
    spec = json.loads(ARTIFACT.read_text())
    assert set(spec) == {"format", "classes", "sublinear_tf", "vocabulary", "idf", "coef", "intercept"}
    code = ("import sys; from specray.domains.detector import DomainDetector; "
            "print(DomainDetector.load().predict(['def f(x):\\n    return x'])[0][0]); "
            "print(any(m.startswith('sklearn') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["code", "False"]


def test_predict_returns_domain_and_confidence(detector):
    preds = detector.predict(["Write a Python function that merges two dicts.",
                              "A baker sells 12 loaves at $3 each. How much does she earn?",
                              "All cats are mammals. Some mammals fly. Does it follow that some cats fly?",
                              "What should I cook for a dinner party with friends?"])
    assert [d for d, _ in preds] == ["code", "math", "logic", "chat"]
    assert all(0.25 < c <= 1.0 for _, c in preds)


def test_bad_artifact_is_rejected(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a specray-domain-detector"):
        DomainDetector.load(path)


def test_resolve_domains_keeps_explicit_domains(detector):
    rows = [PromptRow("a", "Solve 2x + 3 = 11 for x.", None, 0), PromptRow("b", "Solve 2x + 3 = 11 for x.", "chat", 1),
            {"id": "c", "prompt": "def add(a, b):\n    return a + b", "domain": None}]
    resolved = resolve_domains(rows, detector)
    assert resolved[0][0] == PromptRow("a", "Solve 2x + 3 = 11 for x.", "math", 0) and resolved[0][1] < 1.0
    assert resolved[1] == (rows[1], 1.0)
    assert resolved[2][0]["domain"] == "code" and rows[2]["domain"] is None


def test_detect_main_writes_one_line_per_prompt(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"id": "q1", "prompt": "Write a haiku about autumn leaves."},
        {"id": "q2", "prompt": "What is 15% of 240?", "domain": "math"},
        {"id": "q3", "prompt": ""},
    ]) + "\n")
    out = tmp_path / "out" / "domains.jsonl"
    assert detect_main(src, out) == {"prompts": 2, "errors": 1}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [set(x) for x in lines] == [{"id", "domain", "confidence"}] * 2
    assert lines[0]["id"] == "q1" and lines[0]["domain"] == "chat"
    assert lines[1] == {"id": "q2", "domain": "math", "confidence": 1.0}


def test_detect_parser(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"question": "Is every square a rectangle? Explain the logic."}) + "\n")
    parser = argparse.ArgumentParser()
    add_detect_parser(parser.add_subparsers())
    args = parser.parse_args(["detect", "--prompts", str(src), "--out", str(tmp_path / "o.jsonl"), "--prompt-column", "question"])
    assert args.handler(args) == 0
    assert json.loads((tmp_path / "o.jsonl").read_text())["id"] == "line:1"
    assert ReaderConfig(prompt_column=args.prompt_column).prompt_column == "question"
