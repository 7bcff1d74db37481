"""Time `write_report` on a synthetic run of about a million trace rows.

    python -m specray.analysis.bench_report [--rows 1000000] [--dir /tmp/specray-bench-report]

The run is written through the real sink (manifest, domain partitions), 80% of prompts by a
drafting policy, 10% oracle, 10% target-only, so every path of the report is exercised.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from specray.analysis.report import write_report
from specray.distributed.manifest import ManifestError, read_records
from specray.distributed.sink import MANIFEST, RunMeta, RunSink
from specray.schema import DOMAINS, RESULT_SCHEMA, TOPK, TRACE_SCHEMA

ITERATIONS = 50  # per prompt


def synthesize_run(out_dir: Path, rows: int, seed: int = 0) -> int:
    """Write a run of roughly `rows` trace rows to out_dir; returns the exact count."""
    rng = np.random.default_rng(seed)
    prompts = max(1, round(rows / (ITERATIONS * 4.5 * 0.9)))  # lookahead 1..8 averages 4.5; target prompts draft nothing
    policy = np.array(["heuristic", "oracle", "target"])[rng.choice(3, prompts, p=[0.8, 0.1, 0.1])]
    drafting = np.flatnonzero(policy != "target")
    prompt = np.repeat(drafting, ITERATIONS)
    k = rng.integers(1, 9, len(prompt))
    n_acc = np.where(policy[prompt] == "oracle", k, np.minimum(k, rng.geometric(0.3, len(prompt)) - 1))
    step = n_acc + 1
    start = np.cumsum(step) - step
    first_position = start - np.repeat(start[::ITERATIONS], ITERATIONS)
    row_iter = np.repeat(np.arange(len(prompt)), k)
    depth = np.arange(len(row_iter)) - np.repeat(np.cumsum(k) - k, k) + 1
    accepted = depth <= n_acc[row_iter]
    traces = pa.table({
        "run_id": np.full(len(row_iter), "bench"),
        "source": np.full(len(row_iter), "generate"),
        "prompt_id": np.char.add("p", prompt[row_iter].astype(str)),
        "domain": np.array(DOMAINS)[prompt[row_iter] % len(DOMAINS)],
        "iteration": np.tile(np.arange(ITERATIONS), len(drafting))[row_iter],
        "depth": depth,
        "gen_position": first_position[row_iter] + depth - 1,
        "draft_token": rng.integers(0, 49152, len(row_iter)),
        "draft_prob": rng.random(len(row_iter)),
        "target_prob": rng.random(len(row_iter)),
        "accept_prob": rng.random(len(row_iter)),
        "accepted": accepted,
        "evaluated": depth <= n_acc[row_iter] + 1,
        "entropy": rng.gamma(2.0, 0.8, len(row_iter)) * np.where(accepted, 0.8, 1.2),
        "topk_probs": pa.ListArray.from_arrays(np.arange(0, (len(row_iter) + 1) * TOPK, TOPK), rng.random(len(row_iter) * TOPK)),
        "policy": policy[prompt[row_iter]],
        "policy_version": np.full(len(row_iter), "v1"),
        "lookahead": k[row_iter],
        "stop_reason": np.full(len(row_iter), "policy"),
        "draft_ms": rng.random(len(row_iter)),
        "verify_ms": rng.random(len(row_iter)),
    }).cast(TRACE_SCHEMA)
    new_tokens = np.bincount(prompt, weights=step, minlength=prompts).astype(np.int64)
    new_tokens[policy == "target"] = ITERATIONS
    ids = np.char.add("p", np.arange(prompts).astype(str))
    results = pa.table({
        "id": ids, "domain": np.array(DOMAINS)[np.arange(prompts) % len(DOMAINS)], "prompt": ids,
        "output_text": ids, "output_tokens": pa.array([[]] * prompts, pa.list_(pa.int32())),
        "prompt_tokens": np.full(prompts, 32), "new_tokens": new_tokens, "iterations": np.full(prompts, ITERATIONS),
        "drafted": np.bincount(prompt, weights=k, minlength=prompts).astype(np.int64),
        "accepted": np.bincount(prompt, weights=n_acc, minlength=prompts).astype(np.int64),
        "wall_ms": new_tokens * np.where(policy == "target", 20.0, 12.0), "stop_reason": np.full(prompts, "max_new_tokens"),
        "policy": policy, "policy_version": np.where(policy == "target", "", "v1"),
        "target": np.full(prompts, "t"), "draft": np.full(prompts, "d"),
    }).cast(RESULT_SCHEMA)
    with RunSink(out_dir, RunMeta("bench", "t", "d"), rows_per_file=250_000) as sink:
        sink.commit(results, traces)
    return traces.num_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dir", default="/tmp/specray-bench-report")
    args = parser.parse_args(argv)
    run = Path(args.dir)
    if run.exists():  # only ever delete a run this benchmark made: its manifest names run id "bench"
        try:
            ours = read_records(run / MANIFEST)[0].get("run_id") == "bench"
        except (ManifestError, OSError, ValueError):
            ours = False
        if not ours:
            parser.error(f"--dir {run}: exists and is not an earlier bench-report run; pick a new directory")
        shutil.rmtree(run)
    rows = synthesize_run(run, args.rows)
    start = time.perf_counter()
    write_report([str(run)], run / "report")
    print(f"{rows} trace rows: report in {time.perf_counter() - start:.1f} s -> {run / 'report'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
