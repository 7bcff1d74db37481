"""Domain vs depth as predictors of acceptance, on synthetic traces whose answer is known."""

import numpy as np
import pyarrow as pa
import pytest

from specray.analysis.metrics import compute_metrics
from specray.analysis.predictors import compare_predictors, fit_logistic, out_of_fold

DOMAIN_RATE = {"chat": 0.6, "code": 0.3, "math": 0.45, "logic": 0.2}


def synthetic(depth_driven: bool, prompts: int = 400, rounds: int = 20, depth_max: int = 6, seed: int = 0):
    """Rounds drafted to `depth_max`, evaluated up to the first rejection. Acceptance depends on the domain
    alone (depth_driven=False) or on the depth alone (0.8 at depth 1 falling to 0.05)."""
    rng = np.random.default_rng(seed)
    domains = np.array(list(DOMAIN_RATE))[rng.integers(0, 4, prompts)]
    depth_rate = np.linspace(0.8, 0.05, depth_max)
    rows = {k: [] for k in ("domain", "depth", "accepted", "prompt", "evaluated", "iteration")}
    for p in range(prompts):
        for r in range(rounds):
            alive = True
            for k in range(1, depth_max + 1):
                rate = depth_rate[k - 1] if depth_driven else DOMAIN_RATE[domains[p]]
                accepted = alive and bool(rng.random() < rate)
                for key, value in (("domain", domains[p]), ("depth", k), ("accepted", accepted), ("prompt", f"p{p}"),
                                   ("evaluated", alive), ("iteration", r)):
                    rows[key].append(value)
                alive = accepted
    return {k: np.array(v) for k, v in rows.items()}


def evaluated(data):
    e = data["evaluated"]
    return data["domain"][e], data["depth"][e], data["accepted"][e], data["prompt"][e]


def test_domain_driven_acceptance_is_called_for_domain():
    out = compare_predictors(*evaluated(synthetic(depth_driven=False)))
    assert out["verdict"] == "domain alone predicts acceptance better than depth alone"
    models = out["models"]
    assert models["domain"]["log_loss"]["value"] < models["depth"]["log_loss"]["value"]
    assert models["domain"]["auc"]["value"] > 0.6 and abs(models["depth"]["auc"]["value"] - 0.5) < 0.06
    ci = out["logloss_domain_minus_depth"]["ci95"]
    assert ci[1] < 0
    for name in ("domain", "depth", "domain+depth"):
        cell = models[name]["deviance_explained"]
        assert cell["ci95"][0] <= cell["value"] <= cell["ci95"][1]
    # both together add nothing to domain alone: within its interval
    low, high = models["domain"]["deviance_explained"]["ci95"]
    assert low <= models["domain+depth"]["deviance_explained"]["value"] <= high


def test_depth_driven_acceptance_is_called_for_depth():
    out = compare_predictors(*evaluated(synthetic(depth_driven=True)))
    assert out["verdict"] == "depth alone predicts acceptance better than domain alone"
    assert out["models"]["depth"]["deviance_explained"]["value"] > 0.1 > out["models"]["domain"]["deviance_explained"]["value"]


def test_folds_hold_out_whole_prompts_and_the_fit_recovers_cell_rates():
    rng = np.random.default_rng(1)
    cell = rng.integers(0, 3, 30_000)
    y = rng.random(30_000) < np.array([0.2, 0.5, 0.9])[cell]
    x = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 1]], float)
    beta = fit_logistic(x, np.bincount(cell).astype(float), np.bincount(cell, weights=y))
    assert 1 / (1 + np.exp(-(x @ beta))) == pytest.approx([0.2, 0.5, 0.9], abs=0.02)
    fold = np.repeat(np.arange(5), 6000)  # a fold of constant prediction: it never saw its own tokens
    p = out_of_fold((), y, fold, 5)
    for k in range(5):
        assert p[fold == k] == pytest.approx(y[fold != k].mean())


def test_too_few_prompts_give_no_verdict_rather_than_a_number():
    out = compare_predictors(np.array(["code"] * 4), np.array([1, 2, 1, 2]), np.array([True, False, True, False]), np.array(["a"] * 4))
    assert out["models"] == {} and out["verdict"].startswith("not enough data")


def test_report_runs_the_comparison_per_draft_source():
    """Through compute_metrics: `model` rows domain-driven, `ngram` rows depth-driven, old label rows (null
    draft_source) counted as the model draft's."""
    parts = []
    for source, depth_driven, seed in (("model", False, 0), ("ngram", True, 1), (None, False, 2)):
        d = synthetic(depth_driven, prompts=150, seed=seed)
        n = len(d["depth"])
        parts.append(pa.table({
            "run_id": [f"r{seed}"] * n, "prompt_id": d["prompt"], "domain": d["domain"], "iteration": d["iteration"],
            "depth": d["depth"], "gen_position": d["iteration"] * 6 + d["depth"], "accepted": d["accepted"],
            "evaluated": d["evaluated"], "entropy": np.where(d["accepted"], 0.5, 1.5) + np.random.default_rng(seed).random(n),
            "policy": ["static"] * n, "policy_version": ["builtin"] * n, "lookahead": [6] * n,
            "source": ["label"] * n, "draft_source": pa.array([source] * n, pa.string()), "oracle": [False] * n,
        }))
    traces = pa.concat_tables(parts)
    results = pa.table({"id": ["x"], "domain": ["code"], "new_tokens": [1], "iterations": [1], "drafted": [1], "accepted": [1],
                        "wall_ms": [1.0], "policy": ["static"], "policy_version": ["builtin"], "draft_source": ["model"]})
    study = compute_metrics(traces, results, resamples=50)["draft_sources"]
    assert set(study) == {"model", "ngram"}
    assert study["model"]["predictors"]["tokens"] == int(sum(p.filter(p["evaluated"]).num_rows for p in (parts[0], parts[2])))
    assert study["model"]["predictors"]["verdict"].startswith("domain alone")
    assert study["ngram"]["predictors"]["verdict"].startswith("depth alone")
    chat = study["model"]["domains"]["chat"]
    assert chat["acceptance_rate"] == pytest.approx(0.6, abs=0.03)
    assert chat["entropy_acceptance_spearman"]["rho"] < -0.5  # entropy was made to separate accepted tokens
    assert chat["depth_profile"]["1"]["ci95"][0] < chat["depth_profile"]["1"]["acceptance_rate"] < chat["depth_profile"]["1"]["ci95"][1]
