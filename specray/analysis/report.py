"""`specray report RUN_DIR [RUN_DIR ...]`: metrics.json, the figures, report.html and summary.md of finished runs.

Reads only committed traces/ and results/ (no model), so it runs anywhere the Parquet files are.
report.html embeds its PNGs as data URIs: one file that opens offline and survives being mailed;
the PNGs also stay next to it for summary.md and for reuse.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import sys
from pathlib import Path
from typing import Any

from specray.analysis.load import RunReadError, load_runs
from specray.analysis.metrics import compute_metrics
from specray.analysis.plots import write_plots
from specray.storage import is_remote


def write_report(run_dirs: list[str], out_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """Compute the metrics of `run_dirs` together and write metrics.json, PNGs, report.html, summary.md; returns the metrics."""
    out = Path(out_dir)
    metrics = json_safe(compute_metrics(*load_runs(run_dirs), seed=seed))  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n")
    figures = write_plots(metrics, out)
    tables = "\n\n".join([headline_table(metrics), policy_table_md(metrics), predictor_table(metrics), study_table(metrics)])
    (out / "summary.md").write_text(summary_markdown(run_dirs, tables, figures))
    (out / "report.html").write_text(report_html(run_dirs, tables, figures, out))
    return metrics


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinite float as None: bare NaN is not JSON, and no reader should guess."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:  # a numpy scalar
        return json_safe(value.item())
    return value


def headline_table(metrics: dict[str, Any]) -> str:
    """One row per domain and one for all: the acceptance-dynamics view and DISCO's oracle SL."""
    lines = [
        "| domain | acceptance rate | E[accepted] (no bonus) | E[tokens/iter] | entropy ρ [95% CI] | oracle SL mean ± std | chosen lookahead mean | evaluated tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in [*metrics["domains"].items(), ("all", metrics["all"])]:
        lines.append("| " + " | ".join([
            name, _f(m["acceptance_rate"]), _f(m["expected_accepted_length"]), _f(m["expected_tokens_per_iteration"]),
            _rho(m["entropy_acceptance_pearson"]), _mean_std(m["oracle_sl"]),
            _f(m["chosen_lookahead"] and m["chosen_lookahead"]["mean"]), str(m["evaluated_tokens"]),
        ]) + " |")
    return "\n".join(lines)


def policy_table_md(metrics: dict[str, Any]) -> str:
    """Speed and acceptance per (domain, policy); speedup is against target-only decoding of the same scope."""
    lines = [
        "| domain | policy | versions | acceptance rate | E[accepted] | mean lookahead | tokens/s | speedup | prompts |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in [*metrics["domains"].items(), ("all", metrics["all"])]:
        for policy, row in m["policies"].items():
            versions = ", ".join(v or "-" for v in m["policy_versions"].get(policy, []))
            lines.append("| " + " | ".join([
                name, policy, versions, _f(row["acceptance_rate"]), _f(row["expected_accepted_length"]),
                _f(row["mean_lookahead"]), _f(row.get("tokens_per_s"), 1), _f(row.get("speedup"), 2), str(row.get("prompts", 0)),
            ]) + " |")
    return "\n".join(lines)


def predictor_table(metrics: dict[str, Any]) -> str:
    """Per draft source: which predicts acceptance better, domain or depth (held-out, prompt-grouped CV)."""
    lines = [
        "| draft source | model | evaluated tokens | prompts | held-out log-loss [95% CI] | AUC [95% CI] | deviance explained [95% CI] | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for source, study in metrics.get("draft_sources", {}).items():
        p = study["predictors"]
        for model, row in p["models"].items():
            lines.append("| " + " | ".join([
                source, model, str(p["tokens"]), str(p["prompts"]), _ci(row["log_loss"]), _ci(row["auc"]),
                _ci(row["deviance_explained"]), p["verdict"] if model == "domain" else "",
            ]) + " |")
        if not p["models"]:
            lines.append(f"| {source} | – | {p['tokens']} | {p['prompts']} | – | – | – | {p['verdict']} |")
    return "\n".join(lines)


def study_table(metrics: dict[str, Any]) -> str:
    """Per draft source and domain: the study's figures (acceptance, E[accepted], depth profile, Spearman rho)."""
    lines = [
        "| draft source | domain | acceptance rate | E[accepted] | acceptance at depth 1/2/3/4 (tokens) | entropy Spearman ρ [95% CI] | evaluated tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for source, study in metrics.get("draft_sources", {}).items():
        for domain, row in study["domains"].items():
            profile = row["depth_profile"]
            depths = " / ".join(f"{_f(profile[d]['acceptance_rate'], 2)} ({profile[d]['tokens']})" if d in profile else "–"
                                for d in ("1", "2", "3", "4"))
            lines.append("| " + " | ".join([
                source, domain, _f(row["acceptance_rate"]), _f(row["expected_accepted_length"]), depths,
                _rho(row["entropy_acceptance_spearman"]), str(row["evaluated_tokens"]),
            ]) + " |")
    return "\n".join(lines)


def summary_markdown(run_dirs: list[str], tables: str, figures: dict[str, str]) -> str:
    images = "\n".join(f"![{caption}]({name})" for name, caption in figures.items())
    return f"# specray report\n\nRuns: {', '.join(run_dirs)}\n\n{tables}\n\n{images}\n"


def report_html(run_dirs: list[str], tables: str, figures: dict[str, str], out: Path) -> str:
    """A standalone page: the tables, then each figure inlined as a base64 PNG."""
    body = "\n".join(
        f'<figure><img alt="{html.escape(caption)}" data-file="{name}" src="data:image/png;base64,'
        f'{base64.b64encode((out / name).read_bytes()).decode()}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        for name, caption in figures.items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>specray report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}figure{display:inline-block}</style></head><body>"
        f"<h1>specray report</h1><p>Runs: {html.escape(', '.join(run_dirs))}. Metrics: <a href='metrics.json'>metrics.json</a>; "
        f"E[accepted] excludes the bonus token.</p>{_tables_html(tables)}{body}</body></html>\n"
    )


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    """Register `report` on an argparse subparsers object; the handler is stored as `handler`."""
    p = subparsers.add_parser("report", help="acceptance-dynamics report (metrics.json, report.html, summary.md) of finished runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output dirs of `specray generate`/`label` runs (paths or URIs)")
    p.add_argument("--out", help="report dir (default: RUN_DIR/report of the first run; required when that run is a URI)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap interval")
    p.set_defaults(handler=report_command)
    return p


def report_command(args: argparse.Namespace) -> int:
    """A run that cannot be read is one line on stderr naming the dir or file, and exit 2."""
    if args.out is None and is_remote(args.run_dirs[0]):
        print(f"specray report: {args.run_dirs[0]} is on an object store; say where the report goes with --out DIR", file=sys.stderr)
        return 2
    out = Path(args.out or Path(args.run_dirs[0]) / "report")
    try:
        metrics = write_report(args.run_dirs, out, seed=args.seed)
    except RunReadError as exc:
        print(f"specray report: {exc}", file=sys.stderr)
        return 2
    print(f"{metrics['all']['drafted_tokens']} drafted tokens -> {out}/report.html", file=sys.stderr)
    return 0


def _tables_html(markdown: str) -> str:
    """The summary's pipe tables as HTML tables (they are ours: header, rule, rows)."""
    parts = []
    for block in markdown.split("\n\n"):
        rows = [[html.escape(c.strip()) for c in line.strip("|").split("|")] for line in block.splitlines()]
        head, body = rows[0], rows[2:]
        parts.append(
            "<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body) + "</table>"
        )
    return "".join(parts)


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _rho(p: dict[str, Any]) -> str:
    if p["rho"] is None:
        return "–"
    ci = p["ci95"]
    return f"{p['rho']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _ci(cell: dict[str, Any]) -> str:
    ci = cell["ci95"]
    return _f(cell["value"]) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _mean_std(dist: dict[str, Any] | None) -> str:
    return "–" if dist is None else f"{dist['mean']:.2f} ± {dist['std']:.2f}"
