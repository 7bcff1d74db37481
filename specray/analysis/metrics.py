"""Acceptance-dynamics metrics of a set of runs, per domain and over all domains.

Every metric is a vectorised reduction over trace rows (numpy bincounts, pyarrow group-bys), so a
million rows take seconds. Oracle/label rows are kept apart: they say what the target *would*
accept and would inflate every acceptance figure of the policies that actually drafted.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scipy.stats import rankdata

from specray.analysis.load import ORACLE_POLICY
from specray.analysis.predictors import compare_predictors
from specray.analysis.sources import row_sources

TARGET_POLICY = "target"  # target-only decoding: the speedup baseline
RESAMPLES = 1000
MAX_DRAWS = 4_000_000  # bootstrap weights held at once (resamples x prompts)


def compute_metrics(traces: pa.Table, results: pa.Table, seed: int = 0, resamples: int = RESAMPLES,
                    position_width: int = 16, entropy_bins: int = 10) -> dict[str, Any]:
    """`{"domains": {d: metrics}, "all": metrics}` from trace rows (with an `oracle` column) and result rows."""
    domains = sorted(set(pc.unique(traces["domain"]).to_pylist()) | set(pc.unique(results["domain"]).to_pylist()))
    scope = partial(scope_metrics, seed=seed, resamples=resamples, position_width=position_width, entropy_bins=entropy_bins)
    return {
        "domains": {d: scope(_where(traces, "domain", d), _where(results, "domain", d)) for d in domains},
        "all": scope(traces, results),
        "draft_sources": source_study(traces.filter(pc.invert(traces["oracle"])), seed, resamples),
    }


def source_study(drafts: pa.Table, seed: int, resamples: int) -> dict[str, Any]:
    """Per draft source: the predictor comparison (domain vs depth) and the study's per-domain table."""
    sources = row_sources(drafts)
    study = {}
    for source in sorted(pc.unique(sources).to_pylist()):
        mine = drafts.filter(pc.equal(sources, source))
        evaluated = _np(mine, "evaluated")
        clusters = prompt_clusters(mine)
        study[source] = {
            "predictors": compare_predictors(_np(mine, "domain")[evaluated], _np(mine, "depth")[evaluated],
                                             _np(mine, "accepted")[evaluated], clusters[evaluated], seed=seed),
            "domains": {d: study_row(_where(mine, "domain", d), seed, resamples) for d in sorted(pc.unique(mine["domain"]).to_pylist())},
        }
    return study


def study_row(traces: pa.Table, seed: int, resamples: int) -> dict[str, Any]:
    """The study's per-domain figures: acceptance rate, expected accepted length, depth profile, Spearman rho."""
    depth, accepted, evaluated = _np(traces, "depth"), _np(traces, "accepted"), _np(traces, "evaluated")
    return {
        "evaluated_tokens": int(evaluated.sum()),
        "acceptance_rate": acceptance_rate(accepted, evaluated),
        "expected_accepted_length": accepted_length(accepted, depth),
        "depth_profile": depth_profile(depth, accepted, evaluated),
        "entropy_acceptance_spearman": entropy_spearman(_np(traces, "entropy"), accepted, evaluated, prompt_clusters(traces),
                                                        seed, resamples),
    }


def scope_metrics(traces: pa.Table, results: pa.Table, seed: int, resamples: int, position_width: int,
                  entropy_bins: int) -> dict[str, Any]:
    """Every metric of one scope (a domain, or all of them)."""
    drafts, oracle = traces.filter(pc.invert(traces["oracle"])), traces.filter(traces["oracle"])
    depth, accepted, evaluated = _np(drafts, "depth"), _np(drafts, "accepted"), _np(drafts, "evaluated")
    first = depth == 1  # one row per drafting iteration
    return {
        "drafted_tokens": int(len(depth)),
        "evaluated_tokens": int(evaluated.sum()),
        "accepted_tokens": int(accepted.sum()),
        "drafting_iterations": int(first.sum()),
        "acceptance_rate": acceptance_rate(accepted, evaluated),
        "expected_accepted_length": accepted_length(accepted, depth),
        "expected_tokens_per_iteration": _plus_one(accepted_length(accepted, depth)),
        "depth_profile": depth_profile(depth, accepted, evaluated),
        "position_profile": position_profile(_np(drafts, "gen_position"), accepted, evaluated, position_width),
        "entropy_profile": entropy_profile(_np(drafts, "entropy"), accepted, evaluated, entropy_bins),
        "entropy_acceptance_pearson": entropy_pearson(
            _np(drafts, "entropy"), accepted, evaluated, prompt_clusters(drafts), seed, resamples
        ),
        "entropy_acceptance_spearman": entropy_spearman(
            _np(drafts, "entropy"), accepted, evaluated, prompt_clusters(drafts), seed, resamples
        ),
        "chosen_lookahead": distribution(_np(drafts, "lookahead")[first]),
        "oracle_sl": distribution(np.concatenate([oracle_sl(oracle, results), label_sl(drafts)])),
        "policies": policy_table(drafts, results),
        "policy_versions": policy_versions(traces, results),
    }


def acceptance_rate(accepted: np.ndarray, evaluated: np.ndarray) -> float | None:
    """Accepted / evaluated: tokens drafted after the first rejection were never judged, so they do not count."""
    n = int(evaluated.sum())
    return float((accepted & evaluated).sum() / n) if n else None


def accepted_length(accepted: np.ndarray, depth: np.ndarray) -> float | None:
    """Mean accepted draft tokens per drafting iteration, the target's bonus token not counted."""
    iterations = int((depth == 1).sum())
    return float(accepted.sum() / iterations) if iterations else None


def depth_profile(depth: np.ndarray, accepted: np.ndarray, evaluated: np.ndarray) -> dict[str, dict[str, Any]]:
    """Acceptance rate at each draft depth (over evaluated tokens): how fast agreement decays inside a draft."""
    return _binned_rate(depth[evaluated].astype(np.int64), accepted[evaluated], key=lambda b: str(b))


def position_profile(position: np.ndarray, accepted: np.ndarray, evaluated: np.ndarray, width: int) -> dict[str, dict[str, Any]]:
    """Acceptance rate per `width`-token window of the generation, keyed by the window's first position."""
    return _binned_rate(position[evaluated].astype(np.int64) // width, accepted[evaluated], key=lambda b: str(b * width))


def entropy_profile(entropy: np.ndarray, accepted: np.ndarray, evaluated: np.ndarray, bins: int) -> list[dict[str, float]]:
    """Acceptance rate per entropy quantile bin (equal-count bins, so sparse tails do not dominate the plot)."""
    x, y = entropy[evaluated].astype(np.float64), accepted[evaluated]
    if not len(x):
        return []
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    which = np.searchsorted(edges[1:-1], x, side="right")
    n = np.bincount(which, minlength=len(edges) - 1)
    mean = np.bincount(which, weights=x, minlength=len(n))
    hits = np.bincount(which, weights=y, minlength=len(n))
    ci = wilson(hits, np.maximum(n, 1))
    return [
        {"entropy_mean": float(mean[b] / n[b]), "acceptance_rate": float(hits[b] / n[b]), "tokens": int(n[b]),
         "ci95": [float(v) for v in ci[b]]}
        for b in range(len(n)) if n[b]
    ]


def prompt_clusters(traces: pa.Table) -> np.ndarray:
    """An integer per (run, prompt): the bootstrap resamples whole generations, whose tokens are not independent."""
    if not traces.num_rows:
        return np.zeros(0, np.int64)
    key = pc.binary_join_element_wise(traces["run_id"], traces["prompt_id"], "\x1f").combine_chunks()
    return pc.dictionary_encode(key).indices.to_numpy(zero_copy_only=False).astype(np.int64)


def entropy_pearson(entropy: np.ndarray, accepted: np.ndarray, evaluated: np.ndarray, clusters: np.ndarray,
                    seed: int, resamples: int) -> dict[str, Any]:
    """Pearson rho of draft entropy vs acceptance over evaluated tokens, with a seeded prompt-bootstrap 95% interval."""
    x, y, c = entropy[evaluated].astype(np.float64), accepted[evaluated].astype(np.float64), clusters[evaluated]
    out: dict[str, Any] = {"rho": None, "ci95": None, "tokens": int(len(x)), "prompts": 0, "resamples": resamples}
    if len(x) < 2:
        return out
    _, c = np.unique(c, return_inverse=True)
    x, y = x - x.mean(), y - y.mean()  # centred: the moment sums below stay well conditioned
    sums = np.stack([np.bincount(c, weights=w) for w in (np.ones_like(x), x, y, x * x, y * y, x * y)], axis=1)
    out["rho"], out["prompts"] = _num(_pearson(sums.sum(axis=0))), int(len(sums))
    draws = _bootstrap(sums, seed, resamples)
    draws = draws[np.isfinite(draws)]
    if out["rho"] is not None and len(draws):
        out["ci95"] = [float(v) for v in np.percentile(draws, [2.5, 97.5])]
    return out


def entropy_spearman(entropy: np.ndarray, accepted: np.ndarray, evaluated: np.ndarray, clusters: np.ndarray,
                     seed: int, resamples: int) -> dict[str, Any]:
    """Spearman rho of draft entropy vs acceptance (the study's statistic): Pearson rho of the entropies' average
    ranks among evaluated tokens against the 0/1 outcome (ranking a 0/1 variable changes nothing). The interval
    bootstraps prompts with the ranks held fixed."""
    ranks = np.zeros(len(entropy))
    ranks[evaluated] = rankdata(entropy[evaluated])
    return entropy_pearson(ranks, accepted, evaluated, clusters, seed, resamples)


def wilson(hits: np.ndarray, n: np.ndarray, z: float = 1.96) -> np.ndarray:
    """95% Wilson score interval of a proportion, (len, 2): honest at small n and at rates of 0 or 1."""
    n = np.asarray(n, np.float64)
    p = np.asarray(hits, np.float64) / np.maximum(n, 1)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.stack([np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)], axis=-1)


def oracle_sl(oracle: pa.Table, results: pa.Table) -> np.ndarray:
    """Oracle stopping length per iteration: the lookahead of oracle rounds, plus a 0 for each oracle round
    that drafted nothing (those leave no trace row; results count them in `iterations`)."""
    first = _np(oracle, "depth") == 1
    lengths = _np(oracle, "lookahead")[first].astype(np.int64)
    oracle_results = _where(results, "policy", ORACLE_POLICY)
    zeros = max(0, int(pc.sum(oracle_results["iterations"]).as_py() or 0) - int(first.sum()))
    return np.concatenate([lengths, np.zeros(zeros, np.int64)])


def label_sl(drafts: pa.Table) -> np.ndarray:
    """A label run drafts a fixed K every round and, greedy, accepts exactly the oracle's tokens: each
    round's accepted count is the oracle's stopping length, censored at K."""
    label = _where(drafts, "source", "label")
    if not label.num_rows:
        return np.zeros(0, np.int64)
    label = label.set_column(label.schema.get_field_index("accepted"), "accepted", pc.cast(label["accepted"], pa.int64()))
    rounds = label.group_by(["run_id", "prompt_id", "iteration"]).aggregate([("accepted", "sum")])
    return rounds["accepted_sum"].to_numpy().astype(np.int64)


def distribution(values: np.ndarray) -> dict[str, Any] | None:
    """Mean, population std and histogram of integer lengths; None when there are none."""
    if not len(values):
        return None
    counts = np.bincount(values.astype(np.int64))
    return {
        "mean": float(values.mean()), "std": float(values.std()), "iterations": int(len(values)),
        "histogram": {str(k): int(n) for k, n in enumerate(counts) if n},
    }


def policy_table(drafts: pa.Table, results: pa.Table) -> dict[str, dict[str, Any]]:
    """Per policy: acceptance from traces, speed from results (tokens/s per sequence, speedup vs target-only)."""
    speed = throughput(results)
    rows: dict[str, dict[str, Any]] = {}
    for policy in sorted(set(pc.unique(drafts["policy"]).to_pylist()) | set(speed)):
        mine = _where(drafts, "policy", policy)
        depth, accepted, evaluated = _np(mine, "depth"), _np(mine, "accepted"), _np(mine, "evaluated")
        lookahead = _np(mine, "lookahead")[depth == 1]
        rows[policy] = {
            "acceptance_rate": acceptance_rate(accepted, evaluated),
            "expected_accepted_length": accepted_length(accepted, depth),
            "mean_lookahead": float(lookahead.mean()) if len(lookahead) else None,
            **speed.get(policy, {}),
        }
    return rows


def throughput(results: pa.Table) -> dict[str, dict[str, Any]]:
    """Per policy: new tokens / summed per-sequence wall time, and the ratio to the `target` policy's rate."""
    grouped = results.group_by("policy").aggregate(
        [("id", "count"), ("new_tokens", "sum"), ("wall_ms", "sum"), ("accepted", "sum"), ("iterations", "sum")]
    ).to_pylist()
    rows = {
        g["policy"]: {
            "prompts": g["id_count"],
            "new_tokens": g["new_tokens_sum"],
            "tokens_per_s": _ratio(g["new_tokens_sum"], (g["wall_ms_sum"] or 0) / 1e3),
            "accepted_per_iteration": _ratio(g["accepted_sum"], g["iterations_sum"]),
        }
        for g in grouped
    }
    base = rows.get(TARGET_POLICY, {}).get("tokens_per_s")
    for row in rows.values():
        row["speedup"] = _ratio(row["tokens_per_s"], base)
    return rows


def policy_versions(traces: pa.Table, results: pa.Table) -> dict[str, list[str]]:
    """Every policy version that produced a row: mixing versions in one report should be visible."""
    pairs = pa.concat_tables([t.select(["policy", "policy_version"]) for t in (traces, results)])
    seen: dict[str, set[str]] = {}
    for row in pairs.group_by(["policy", "policy_version"]).aggregate([]).to_pylist():
        seen.setdefault(row["policy"], set()).add(row["policy_version"] or "")
    return {policy: sorted(versions) for policy, versions in sorted(seen.items())}


def _binned_rate(bins: np.ndarray, hits: np.ndarray, key) -> dict[str, dict[str, Any]]:
    """{key(bin): {acceptance_rate, tokens, ci95}} for each non-empty integer bin (ci95: Wilson interval)."""
    if not len(bins):
        return {}
    n = np.bincount(bins)
    k = np.bincount(bins, weights=hits.astype(np.float64), minlength=len(n))
    ci = wilson(k, np.maximum(n, 1))
    return {key(b): {"acceptance_rate": float(k[b] / n[b]), "tokens": int(n[b]), "ci95": [float(v) for v in ci[b]]}
            for b in np.flatnonzero(n)}


def _bootstrap(sums: np.ndarray, seed: int, resamples: int) -> np.ndarray:
    """Pearson rho of `resamples` prompt resamples, drawn as multinomial prompt counts in bounded chunks."""
    rng = np.random.default_rng(seed)
    prompts = len(sums)
    chunk = max(1, MAX_DRAWS // prompts)
    draws = []
    for start in range(0, resamples, chunk):
        counts = rng.multinomial(prompts, np.full(prompts, 1 / prompts), size=min(chunk, resamples - start))
        draws.append(_pearson(counts @ sums))
    return np.concatenate(draws) if draws else np.zeros(0)


def _pearson(s: np.ndarray) -> np.ndarray:
    """Pearson rho from moment sums (n, Σx, Σy, Σx², Σy², Σxy) along the last axis; nan where a variance is 0."""
    n, sx, sy, sxx, syy, sxy = np.moveaxis(np.asarray(s, np.float64), -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        vx, vy = sxx - sx * sx / n, syy - sy * sy / n
        rho = (sxy - sx * sy / n) / np.sqrt(vx * vy)
        return np.where((vx > 1e-12 * n) & (vy > 1e-12 * n), rho, np.nan)


def _where(table: pa.Table, column: str, value: str) -> pa.Table:
    return table.filter(pc.fill_null(pc.equal(table[column], value), False))


def _np(table: pa.Table, column: str) -> np.ndarray:
    return table[column].to_numpy()


def _ratio(a: float | None, b: float | None) -> float | None:
    return float(a / b) if a is not None and b else None


def _plus_one(value: float | None) -> float | None:
    return None if value is None else value + 1


def _num(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
