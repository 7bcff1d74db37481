"""The few lines `specray generate` ends with, made from the job's summary dict.

A first run should end by saying what happened and what to do next, not with a page of JSON:
prompts done and errors, tokens/s, the speed-up over target-only decoding when the workers could
estimate it, acceptance per domain, where the Parquet files are, and the exact `specray report`
command. The full summary stays available as JSON (`--json`; `jobs/*.py` print both).
"""

from __future__ import annotations

import shlex


def format_summary(summary: dict, job: str = "generate") -> str:
    """Human-readable summary lines (no trailing newline)."""
    out = summary["output_dir"]
    done = summary["results"] + summary["errors"]
    head = f"specray {job}: {done} prompts done ({summary['results']} results, {summary['errors']} errors)"
    if summary.get("skipped"):
        head += f", {summary['skipped']} already done earlier"
    lines = [f"{head}; {summary['new_tokens']} new tokens in {summary['seconds']:.0f} s after the models loaded, "
             f"{rate(summary['tokens_per_s'])} tok/s"]
    speedup = summary.get("speedup_vs_target")
    if speedup is not None:
        lines.append(f"speed-up over target-only decoding: {speedup:.2f}x (estimated from the target's measured cost per "
                     "decoding step; `specray bench` measures it side by side)")
    domains = summary.get("domains") or {}
    if domains:
        lines.append("acceptance per domain (accepted / drafted draft tokens):")
        for domain, d in sorted(domains.items()):
            share = "no drafting (the cost gate kept it off)" if not d["drafted"] else f"{d['acceptance']:.2f}"
            lines.append(f"  {domain:<6} {share:>6}  {d['accepted']}/{d['drafted']}  over {d['prompts']} prompts")
    lines.append(f"Parquet: {out}/ (results/, traces/, errors/)")
    lines.append(f"look at it: {shlex.join(['specray', 'report', out])}   (writes {out}/report/report.html)")
    return "\n".join(lines)


def rate(value: float) -> str:
    """Tokens per second: one decimal below 10, so a slow CPU run never reads as 0."""
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"
