"""Benchmarks of the Ray layer, figures in docs/job.md.

    python jobs/bench_job.py scheduler [--prompts 40000] [--batch-size 8] [--workers 2] [--detect]
                                       [--output s3://bucket/prefix --endpoint http://host:port]
    python jobs/bench_job.py overhead [--target embedded --draft embedded-draft] [--policy static:4] [--max-new-tokens 32] [--repeats 1]

`scheduler`: a no-op engine answers every batch at once, so what is measured is the job itself:
reading, domain detection (with --detect), sharding, dispatch through the policy actors, result
transfer and Parquet commits (to a temp dir, or with --output to a new run under that URI, such as a
bucket of an S3-compatible store at --endpoint; credentials from the environment). `overhead`: the job with one worker owning every CPU, against the time
its worker's engine had sequences in flight, and against the same batches through the engine called
directly in this process with as many torch threads.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from dataclasses import replace
from functools import partial
from pathlib import Path

import ray
import torch

from specray.config import load_config
from specray.distributed.job import run_job
from specray.distributed.scheduler import plan
from specray.distributed.sink import read_results
from specray.distributed.resolve import domain_policy
from specray.distributed.runner import batch_seed, generation_config, load_engine
from specray.domains.detector import DomainDetector
from specray.engine.speculative import Generation, SequenceResult
from specray.models import encode_prompt
from specray.policies.factory import build_policy
from specray.schema import DOMAINS, trace_schema


class WordTokenizer:
    chat_template = None

    def encode(self, text: str) -> list[int]:
        return [1] * len(text.split())


class NoopEngine:
    """Answers every batch at once with an empty generation."""

    tokenizer = WordTokenizer()
    done = SequenceResult([], "", 0, 0, 0, 0.0, "max_new_tokens")

    def context_window(self) -> None:
        return None

    def generate(self, prompts, policy, config, prompt_ids=None, domain="", run_id="", origin="generate",
                 record_hidden=False) -> Generation:
        return Generation([self.done] * len(prompts), trace_schema(record_hidden).empty_table())


def noop_engine(models, device) -> NoopEngine:
    return NoopEngine()


def write_prompts(path: Path, n: int, detect: bool) -> Path:
    """A JSONL of `n` prompts; with `detect`, no domain column, so every prompt goes through the detector."""
    with open(path, "w") as f:
        for i in range(n):
            row = {"id": f"p{i}", "prompt": f"Write a function that returns the {i}th prime number, with tests."}
            f.write(json.dumps(row if detect else {**row, "domain": DOMAINS[i % len(DOMAINS)]}) + "\n")
    return path


def bench_scheduler(args: argparse.Namespace) -> dict:
    """End to end, and steady: after the first commit, so without actor start-up."""
    with tempfile.TemporaryDirectory() as tmp:
        data = write_prompts(Path(tmp, "prompts.jsonl"), args.prompts, args.detect)
        out = f"{args.output.rstrip('/')}/bench-{uuid.uuid4().hex[:8]}" if args.output else f"{tmp}/out"
        overrides = [f"data.path={data}", f"output.dir={out}", f"generation.batch_size={args.batch_size}",
                     f"cluster.num_workers={args.workers}", *([f"storage.endpoint={args.endpoint}"] if args.endpoint else [])]
        summary = run_job(load_config(None, overrides), make_engine=noop_engine)
        assert read_results(out, endpoint=args.endpoint).num_rows == args.prompts
    seconds, first = summary["seconds"], summary["seconds_to_first_result"]
    return {"prompts": args.prompts, "batch_size": args.batch_size, "workers": args.workers, "detect": args.detect,
            "output": "temp dir" if args.output is None else out,
            "seconds": seconds, "seconds_to_first_result": first,
            "end_to_end_prompts_per_s": round(args.prompts / seconds),
            "steady_prompts_per_s": round((args.prompts - args.batch_size) / (seconds - first))}


def _ignore(_) -> None:
    pass


def direct_seconds(cfg) -> float:
    """The job's batches (same sharding, policies and seeds) through the engine in this process."""
    engine = load_engine(cfg.models, "cpu", cfg.generation.batch_size)
    resolved = {d: domain_policy(cfg.policy, d) for d in DOMAINS}
    policies = {d: build_policy(p.resolved[p.spec]) for d, p in resolved.items()}
    batches = list(plan(cfg.data, cfg.generation.batch_size, set(), DomainDetector.load(), _ignore, _ignore))
    prompts = [[encode_prompt(engine.tokenizer, row.prompt) for row in batch.rows] for batch in batches]
    base = generation_config(cfg)
    start = time.perf_counter()
    for batch, tokens in zip(batches, prompts):
        ids = [row.id for row in batch.rows]
        engine.generate(tokens, policies[batch.domain], replace(base, seed=batch_seed(base.seed, ids)),
                        prompt_ids=ids, domain=batch.domain)
    return time.perf_counter() - start


class TimedEngine:
    """The real engine, appending to a file when each sequence it returns was in flight: from leaving the queue
    for a slot to its last round, as `perf_counter()` seconds. A worker streams its batches through engine
    loops (`specray.distributed.stream`) and calls `result` for every sequence that finishes, so the union
    of those spans is the time the engine had work in flight."""

    def __init__(self, engine, log: Path):
        self.engine, self.log = engine, log

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def result(self, seq):
        with open(self.log, "a") as f:
            f.write(f"{seq.admitted} {seq.admitted + seq.wall_ms / 1e3}\n")
        return self.engine.result(seq)


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """The length of the union of `spans` (start, end)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def timed_engine(log: Path, batch_size: int, models, device) -> TimedEngine:
    """A job worker's engine, its precision chosen for the job's batch size as the default worker's is, timed."""
    return TimedEngine(load_engine(models, device, batch_size), log)


def bench_overhead(args: argparse.Namespace) -> dict:
    """Per repeat: the job, the engine time inside it, and the same batches through the engine here.

    job / engine-inside-the-job is immune to other load on the machine (both come from one run);
    job / direct compares two runs, so it is only as good as the machine is quiet.
    """
    cpus = int(ray.cluster_resources()["CPU"])
    torch.set_num_threads(cpus)  # what a lone CPU worker gets
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            overrides = [f"models.target={args.target}", f"models.draft={args.draft}", f"output.dir={tmp}/out", "data.builtin=demo",
                         f"generation.max_new_tokens={args.max_new_tokens}", f"policy.default={args.policy}",
                         "cluster.num_workers=1"]
            cfg, log = load_config(None, overrides), Path(tmp, "in_flight_spans.txt")
            job_s = run_job(cfg, make_engine=partial(timed_engine, log, cfg.generation.batch_size))["seconds"]
            engine_s = busy_seconds([tuple(map(float, line.split())) for line in log.read_text().splitlines()])
            runs.append({"job_s": job_s, "engine_in_job_s": round(engine_s, 3), "direct_s": round(direct_seconds(cfg), 3)})
    return {"target": args.target, "draft": args.draft, "policy": args.policy, "max_new_tokens": args.max_new_tokens,
            "threads": cpus, "runs": runs,
            "overhead_vs_engine_in_job": [round(r["job_s"] / r["engine_in_job_s"] - 1, 4) for r in runs],
            "overhead_vs_direct": [round(r["job_s"] / r["direct_s"] - 1, 4) for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("scheduler")
    s.add_argument("--prompts", type=int, default=40_000)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--detect", action="store_true", help="leave the domain column out, so every prompt is detected")
    s.add_argument("--output", help="a dir or URI under which each benchmark writes a new run (default: a temp dir)")
    s.add_argument("--endpoint", help="an S3-compatible store's address for --output (storage.endpoint)")
    o = sub.add_parser("overhead")
    o.add_argument("--target", default="embedded")
    o.add_argument("--draft", default="embedded-draft")
    o.add_argument("--max-new-tokens", type=int, default=32)
    o.add_argument("--policy", default="static:4", help="not cost-aware by default: no calibration runs inside the timing")
    o.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    ray.init()
    print(json.dumps(bench_scheduler(args) if args.mode == "scheduler" else bench_overhead(args), indent=2))


if __name__ == "__main__":
    main()
