"""The report's figures, drawn from the metrics dict alone (no trace access), as PNG files.

Matplotlib's Agg backend: no display, so the report renders on a headless cluster node.
"""

from __future__ import annotations

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
}


def write_plots(metrics: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Draw every figure into out_dir; returns {file name: caption}."""
    domains = metrics["domains"]
    drawers = {
        "depth_acceptance.png": lambda ax: _curves(ax, domains, "depth_profile", "draft depth"),
        "entropy_acceptance.png": lambda ax: _entropy(ax, domains),
        "lookahead.png": lambda ax: _lookahead(ax, metrics["all"]),
        "position_acceptance.png": lambda ax: _curves(ax, domains, "position_profile", "generated position (window start)"),
        "tokens_per_s.png": lambda ax: _throughput(ax, domains),
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
            ax.plot(xs, [profile[x]["acceptance_rate"] for x in profile], marker="o", label=domain)
    _finish(ax, xlabel, "acceptance rate")


def _entropy(ax, domains: dict[str, Any]) -> None:
    for domain, m in domains.items():
        bins = m["entropy_profile"]
        if bins:
            rho = m["entropy_acceptance_pearson"]["rho"]
            label = domain if rho is None else f"{domain} (ρ={rho:.2f})"
            ax.plot([b["entropy_mean"] for b in bins], [b["acceptance_rate"] for b in bins], marker="o", label=label)
    _finish(ax, "draft entropy (nats)", "acceptance rate")


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
