"""Which predicts a draft token's acceptance better: the task's domain, or the token's depth in its draft?

The study behind per-domain budgets claims domain does. This tests it on our traces: three logistic
regressions of `accepted` on evaluated tokens, from domain alone, depth alone, and both (additive), each
scored out of fold by prompt-grouped K-fold cross-validation (every token of a generation falls in one
fold, so no model is scored on a prompt it saw), on held-out log-loss, AUC and deviance explained
(1 - model deviance / deviance of the training folds' base rate). Intervals are percentile intervals of a
bootstrap over prompts of the out-of-fold predictions (models are not refit per resample: the interval
is for the evaluation sample, which is where prompts vary most). The verdict compares log-loss, domain
minus depth, per resample.

Both predictors are categorical (one indicator per domain, per depth), so every model is fitted on the
counts of its cells (domain x depth: a few dozen) by Newton's method: a million tokens fit in
milliseconds. Depths past MAX_DEPTH share one cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MODELS = ("domain", "depth", "domain+depth")
FOLDS = 5
RESAMPLES = 400
MAX_DEPTH = 12
RIDGE = 1e-4  # keeps a cell whose tokens were all accepted (or all rejected) finite
EPS = 1e-12


def compare_predictors(domain: np.ndarray, depth: np.ndarray, accepted: np.ndarray, prompt: np.ndarray,
                       seed: int = 0, folds: int = FOLDS, resamples: int = RESAMPLES) -> dict[str, Any]:
    """Out-of-fold metrics per model with bootstrap intervals, and the verdict. Inputs are per evaluated
    token: domain labels, 1-based depth, accepted (bool), and a prompt id (any hashable codes)."""
    y = np.asarray(accepted, bool)
    out: dict[str, Any] = {"tokens": int(len(y)), "prompts": 0, "folds": folds, "resamples": resamples, "models": {}, "verdict": None}
    _, domain_code = np.unique(np.asarray(domain), return_inverse=True)
    _, prompt_code = np.unique(np.asarray(prompt), return_inverse=True)
    depth_code = np.clip(np.asarray(depth, np.int64), 1, MAX_DEPTH) - 1
    out["prompts"] = int(prompt_code.max() + 1) if len(y) else 0
    if out["prompts"] < folds or y.all() or not y.any():
        out["verdict"] = "not enough data: needs at least one prompt per fold and both outcomes"
        return out
    rng = np.random.default_rng(seed)
    fold_of_prompt = rng.permutation(out["prompts"]) % folds
    fold = fold_of_prompt[prompt_code]
    designs = {"domain": (domain_code,), "depth": (depth_code,), "domain+depth": (domain_code, depth_code)}
    preds = {name: out_of_fold(cols, y, fold, folds) for name, cols in designs.items()}
    base = out_of_fold((), y, fold, folds)
    draws = prompt_draws(out["prompts"], resamples, rng)
    for name, p in preds.items():
        out["models"][name] = scored(p, base, y, prompt_code, draws)
    out["models"]["base rate"] = scored(base, base, y, prompt_code, draws)
    diff = _per_prompt_logloss(preds["domain"], y, prompt_code) - _per_prompt_logloss(preds["depth"], y, prompt_code)
    n = np.bincount(prompt_code).astype(np.float64)
    point = float(diff.sum() / n.sum())
    boot = (draws @ diff) / (draws @ n)
    ci = [float(v) for v in np.percentile(boot, [2.5, 97.5])]
    out["logloss_domain_minus_depth"] = {"value": point, "ci95": ci}
    out["verdict"] = verdict(ci)
    return out


def verdict(ci: list[float]) -> str:
    """Lower log-loss wins; a tie unless the whole interval of the difference is on one side of 0."""
    if ci[1] < 0:
        return "domain alone predicts acceptance better than depth alone"
    if ci[0] > 0:
        return "depth alone predicts acceptance better than domain alone"
    return "no clear winner: the interval of the log-loss difference contains 0"


def out_of_fold(columns: tuple[np.ndarray, ...], y: np.ndarray, fold: np.ndarray, folds: int) -> np.ndarray:
    """P(accept) of every token from the model fitted on the other folds."""
    cell, x = cells(columns, len(y))
    p = np.empty(len(y))
    for k in range(folds):
        test = fold == k
        n = np.bincount(cell[~test], minlength=len(x)).astype(np.float64)
        hits = np.bincount(cell[~test], weights=y[~test], minlength=len(x))
        beta = fit_logistic(x, n, hits)
        p[test] = _sigmoid(x[cell[test]] @ beta)
    return np.clip(p, EPS, 1 - EPS)


def cells(columns: tuple[np.ndarray, ...], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(cell of each token, design matrix per cell): intercept plus one indicator per level beyond the first."""
    if not columns:
        return np.zeros(n, np.int64), np.ones((1, 1))
    levels = [int(c.max()) + 1 for c in columns]
    cell = np.ravel_multi_index(tuple(c.astype(np.int64) for c in columns), levels)
    grid = np.array(np.unravel_index(np.arange(int(np.prod(levels))), levels)).T  # every combination
    blocks = [np.ones((len(grid), 1))] + [np.eye(m)[grid[:, i]][:, 1:] for i, m in enumerate(levels)]
    return cell, np.concatenate(blocks, axis=1)


def fit_logistic(x: np.ndarray, n: np.ndarray, hits: np.ndarray, steps: int = 50) -> np.ndarray:
    """Maximum-likelihood coefficients from per-cell counts (n tokens, hits accepted), lightly ridged."""
    beta = np.zeros(x.shape[1])
    rate = (hits.sum() + 0.5) / (n.sum() + 1.0)
    beta[0] = np.log(rate / (1 - rate))
    ridge = RIDGE * max(n.sum(), 1.0) * np.eye(x.shape[1])
    ridge[0, 0] = 0.0
    for _ in range(steps):
        p = _sigmoid(x @ beta)
        grad = x.T @ (hits - n * p) - ridge @ beta
        hess = (x * (n * p * (1 - p))[:, None]).T @ x + ridge + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return beta


def prompt_draws(prompts: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, prompts) multinomial counts: how often each prompt appears in each resample."""
    return rng.multinomial(prompts, np.full(prompts, 1 / prompts), size=resamples).astype(np.float64)


def scored(p: np.ndarray, base: np.ndarray, y: np.ndarray, prompt: np.ndarray, draws: np.ndarray) -> dict[str, Any]:
    """Log-loss, AUC and deviance explained of out-of-fold predictions, each with a prompt-bootstrap 95% interval."""
    n = np.bincount(prompt).astype(np.float64)
    loss, null = _per_prompt_logloss(p, y, prompt), _per_prompt_logloss(base, y, prompt)
    boot_loss = (draws @ loss) / (draws @ n)
    boot_dev = 1 - (draws @ loss) / (draws @ null)
    group, pos, neg = _score_groups(p, y)
    boot_auc = np.array([_weighted_auc(group, y, counts[prompt]) for counts in draws])  # a token weighs its prompt's count
    return {
        "log_loss": _with_ci(float(loss.sum() / n.sum()), boot_loss),
        "auc": _with_ci(_auc(pos, neg), boot_auc),
        "deviance_explained": _with_ci(float(1 - loss.sum() / null.sum()), boot_dev),
    }


def _per_prompt_logloss(p: np.ndarray, y: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    return np.bincount(prompt, weights=-(y * np.log(p) + (~y) * np.log1p(-p)))


def _score_groups(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens grouped by predicted value (ascending): group index, accepted and rejected count per group."""
    _, group = np.unique(p, return_inverse=True)
    return group, np.bincount(group, weights=y.astype(np.float64)), np.bincount(group, weights=(~y).astype(np.float64))


def _weighted_auc(group: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return _auc(np.bincount(group, w * y), np.bincount(group, w * ~y))


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of an accepted token > a rejected one's), ties counting half, from per-score-group weights."""
    total = pos.sum() * neg.sum()
    if total <= 0:
        return float("nan")
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / total)


def _with_ci(value: float, draws: np.ndarray) -> dict[str, Any]:
    draws = draws[np.isfinite(draws)]
    return {"value": value, "ci95": [float(v) for v in np.percentile(draws, [2.5, 97.5])] if len(draws) else None}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(z, -30, 30)))
