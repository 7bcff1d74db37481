"""The report's figures, drawn from the metrics dict alone (no trace access), as PNG files.

Matplotlib's Agg backend: no display, so the report renders on a headless cluster node. Every profile
point carries its 95% interval (Wilson, from the tokens behind it), and points resting on fewer than
FEW tokens are labelled with their count: a depth-6 rate of 1.0 from three tokens must look like it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

FIGURES = {
    "depth_acceptance.png": "Acceptance rate by draft depth",
    "entropy_acceptance.png": "Acceptance rate by draft entropy (quantile bins)",
    "lookahead.png": "Lookahead: chosen by the policies vs the oracle's stopping length",
    "position_acceptance.png": "Acceptance rate over the generation",
    "tokens_per_s.png": "Tokens/s per sequence, by policy and domain",
    "predictors.png": "Acceptance: held-out deviance explained (95% CI)",
}
FEW = 200  # a profile point on fewer tokens shows its count


def write_plots(metrics: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Draw every figure into out_dir; returns {file name: caption}."""
    domains = metrics["domains"]
    drawers = {
        "depth_acceptance.png": lambda ax: _curves(ax, domains, "depth_profile", "draft depth"),
        "entropy_acceptance.png": lambda ax: _entropy(ax, domains),
        "lookahead.png": lambda ax: _lookahead(ax, metrics["all"]),
        "position_acceptance.png": lambda ax: _curves(ax, domains, "position_profile", "generated position (window start)"),
        "tokens_per_s.png": lambda ax: _throughput(ax, domains),
        "predictors.png": lambda ax: _predictors(ax, metrics.get("draft_sources", {})),
    }
    for name, draw in drawers.items():
        fig, ax = plt.subplots(figsize=(6.4, 4))
        draw(ax)
        ax.set_title(FIGURES[name], fontsize=10)
        if not ax.has_data():
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
    return dict(FIGURES)


def _curves(ax, domains: dict[str, Any], key: str, xlabel: str) -> None:
    """One acceptance-rate line per domain from a {x: {acceptance_rate}} profile."""
    for domain, m in domains.items():
        profile = m[key]
        if profile:
            xs = [int(x) for x in profile]
            _points(ax, xs, list(profile.values()), domain)
    _finish(ax, xlabel, "acceptance rate (95% CI; n shown below " + str(FEW) + " tokens)")


def _entropy(ax, domains: dict[str, Any]) -> None:
    for domain, m in domains.items():
        bins = m["entropy_profile"]
        if bins:
            rho = m["entropy_acceptance_pearson"]["rho"]
            label = domain if rho is None else f"{domain} (ρ={rho:.2f})"
            _points(ax, [b["entropy_mean"] for b in bins], bins, label)
    _finish(ax, "draft entropy (nats)", "acceptance rate (95% CI)")


def _points(ax, xs: list[float], points: list[dict[str, Any]], label: str) -> None:
    """Rates with their intervals as error bars, and the token count beside thinly supported points."""
    xs = [math.nan if x is None else x for x in xs]  # a value JSON could not hold (NaN) arrives as None
    ys = [math.nan if p["acceptance_rate"] is None else p["acceptance_rate"] for p in points]
    bounds = [p.get("ci95") or [y, y] for y, p in zip(ys, points)]
    lo = [max(0.0, y - b[0]) if math.isfinite(y) else 0.0 for y, b in zip(ys, bounds)]  # rounding may put a bound a
    hi = [max(0.0, b[1] - y) if math.isfinite(y) else 0.0 for y, b in zip(ys, bounds)]  # hair inside the rate
    ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=2, label=label)
    for x, y, p in zip(xs, ys, points):
        if p["tokens"] < FEW:
            ax.annotate(f"n={p['tokens']}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6)


def _predictors(ax, sources: dict[str, Any]) -> None:
    """Grouped bars: per draft source, deviance explained by domain, depth, and both, with intervals."""
    models = ("domain", "depth", "domain+depth")
    names = [s for s, study in sources.items() if study["predictors"]["models"]]
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        cells = [sources[s]["predictors"]["models"][model]["deviance_explained"] for s in names]
        ys = [c["value"] for c in cells]
        err = [[max(0.0, y - (c["ci95"] or [y, y])[0]) for y, c in zip(ys, cells)],
               [max(0.0, (c["ci95"] or [y, y])[1] - y) for y, c in zip(ys, cells)]]
        ax.bar([j + i * width for j in range(len(names))], ys, width=width, yerr=err, capsize=2, label=model)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    _finish(ax, "draft source", "deviance explained (held out)")


def _lookahead(ax, scope: dict[str, Any]) -> None:
    """Share of iterations at each length, chosen lookahead beside the oracle's stopping length."""
    for key, label, offset in (("chosen_lookahead", "chosen", -0.2), ("oracle_sl", "oracle", 0.2)):
        dist = scope[key]
        if dist:
            total = dist["iterations"]
            ks = [int(k) for k in dist["histogram"]]
            ax.bar([k + offset for k in ks], [n / total for n in dist["histogram"].values()], width=0.4,
                   label=f"{label} (mean {dist['mean']:.2f})")
    _finish(ax, "tokens per iteration", "share of iterations")


def _throughput(ax, domains: dict[str, Any]) -> None:
    """Grouped bars: one group per domain, one bar per policy."""
    policies = sorted({p for m in domains.values() for p, row in m["policies"].items() if row.get("tokens_per_s")})
    width = 0.8 / max(1, len(policies))
    for i, policy in enumerate(policies):
        heights = [m["policies"].get(policy, {}).get("tokens_per_s") or 0 for m in domains.values()]
        ax.bar([d + i * width for d in range(len(domains))], heights, width=width, label=policy)
    ax.set_xticks([d + 0.4 - width / 2 for d in range(len(domains))], list(domains))
    _finish(ax, "domain", "tokens/s")


def _finish(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
