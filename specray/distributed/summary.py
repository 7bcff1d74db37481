"""The few lines `specray generate` ends with, made from the job's summary dict.

A first run should end by saying what happened and what to do next, not with a page of JSON:
prompts done and errors, tokens/s, acceptance per domain, where the Parquet files are, and the exact
`specray report` command. The speed-up over target-only decoding is printed when the summary carries
a measured one; a job does not measure it (it never decodes target-only), so by default the line
gives the `specray bench` command that does, side by side. An estimate from the engine's cost model
was tried and dropped: on a loaded 2-core machine it said 2.19x where side-by-side benchmarks of the
same pair measure about 1x. The full summary stays available as JSON (`--json`; `jobs/*.py` print both).
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
    domains = summary.get("domains") or {}
    speedup = summary.get("speedup_vs_target")
    if speedup is not None:
        lines.append(f"speed-up over target-only decoding: {speedup:.2f}x")
    else:
        lines.append(f"speed-up over target-only decoding: not measured by a job; side by side: {bench_command(domains)}")
    if domains:
        lines.append("acceptance per domain (accepted / drafted draft tokens):")
        for domain, d in sorted(domains.items()):
            share = "no drafting (the cost gate kept it off)" if not d["drafted"] else f"{d['acceptance']:.2f}"
            lines.append(f"  {domain:<6} {share:>6}  {d['accepted']}/{d['drafted']}  over {d['prompts']} prompts")
    lines.append(f"Parquet: {out}/ (results/, traces/, errors/)")
    lines.append(f"look at it: {shlex.join(['specray', 'report', out])}   (writes {out}/report/report.html)")
    return "\n".join(lines)


def bench_command(domains: dict) -> str:
    """`specray bench` on 8 held-out prompts with the policies this run used (target-only is always measured)."""
    specs = sorted({d["policy"]["spec"] for d in domains.values() if (d.get("policy") or {}).get("spec")})
    policies = ["--policies", ",".join(specs)] if specs and not any("," in spec for spec in specs) else []
    return shlex.join(["specray", "bench", *policies, "--limit", "8"])


def rate(value: float) -> str:
    """Tokens per second: one decimal below 10, so a slow CPU run never reads as 0."""
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"
