"""Soak benchmark: many prompts through the whole job with bench_job's no-op engine, watching the driver.
Figures in docs/reliability.md.

    nice -n 10 python jobs/soak.py [--prompts 100000] [--batch-size 8] [--workers 2] [--every 1.0] [--out soak.json]

While the job runs, a thread samples the driver's RSS and open file descriptors every --every seconds,
and each worker stamps the time and size of every batch it answers. The report: RSS growth from the
first batch on (by design only two id sets grow with the dataset: the reader's and the sink's), open
files over the run, and prompts/s over the first and the last 10% of prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import psutil
import ray

from bench_job import NoopEngine, write_prompts
from specray.config import load_config
from specray.distributed.job import run_job

MB = 2**20


class StampedEngine(NoopEngine):
    """The no-op engine, appending `time prompts` per batch to a file of its own process."""

    def __init__(self, stamps: Path):
        self.stamps = stamps / f"{os.getpid()}.txt"

    def generate(self, prompts, *args, **kwargs):
        with open(self.stamps, "a") as f:  # opened and closed per batch: workers hold no file open either
            f.write(f"{time.time()} {len(prompts)}\n")
        return super().generate(prompts, *args, **kwargs)


def stamped_engine(stamps: Path, models, device) -> StampedEngine:
    return StampedEngine(stamps)


class Sampler(threading.Thread):
    """(unix time, RSS bytes, open fds) of this process every `every` seconds, until stopped."""

    def __init__(self, every: float):
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()
        self.process = psutil.Process()

    def run(self) -> None:
        while not self.stop.wait(self.every if self.samples else 0):
            self.samples.append(self.sample())
        self.samples.append(self.sample())  # and one as the job returns

    def sample(self) -> tuple[float, int, int]:
        return time.time(), self.process.memory_info().rss, self.process.num_fds()


def read_stamps(stamps: Path) -> list[tuple[float, int]]:
    """Every batch the workers answered, as (time, cumulative prompts), in time order."""
    rows = sorted((float(t), int(n)) for f in stamps.iterdir() for t, n in (line.split() for line in f.read_text().splitlines()))
    done, out = 0, []
    for t, n in rows:
        done += n
        out.append((t, done))
    return out


def rate(progress: list[tuple[float, int]], low: float, high: float) -> float:
    """Prompts/s between the batches that reach fractions `low` and `high` of all prompts."""
    total = progress[-1][1]
    start = next(p for p in progress if p[1] >= low * total) if low else progress[0]
    end = next(p for p in progress if p[1] >= high * total)
    return (end[1] - start[1]) / (end[0] - start[0])


def done_at(progress: list[tuple[float, int]], when: float) -> int:
    """Prompts the workers had answered by unix time `when`."""
    return max((d for t, d in progress if t <= when), default=0)


def report(samples: list, progress: list[tuple[float, int]], summary: dict, args: argparse.Namespace) -> dict:
    running = [s for s in samples if s[0] >= progress[0][0]]  # from the first batch to the job's return
    base, rss, fds = running[0][1], [s[1] for s in running], [s[2] for s in running]
    deciles = [next(s for s in running if done_at(progress, s[0]) >= q * progress[-1][1] / 10) for q in range(11)]
    return {
        "prompts": args.prompts, "batch_size": args.batch_size, "workers": args.workers,
        "results": summary["results"], "errors": summary["errors"], "seconds": summary["seconds"],
        "rss_before_job_mb": round(samples[0][1] / MB, 1), "rss_first_batch_mb": round(base / MB, 1),
        "rss_peak_mb": round(max(rss) / MB, 1), "rss_last_mb": round(rss[-1] / MB, 1),
        "rss_growth_mb": round((max(rss) - base) / MB, 1),
        "open_fds_min": min(fds), "open_fds_max": max(fds),
        "prompts_per_s_first_10pct": round(rate(progress, 0.0, 0.1)),
        "prompts_per_s_last_10pct": round(rate(progress, 0.9, 1.0)),
        "by_decile": [{"done_pct": 10 * q, "rss_mb": round(s[1] / MB, 1), "open_fds": s[2]} for q, s in enumerate(deciles)],
    }


def soak(args: argparse.Namespace) -> dict:
    sampler = Sampler(args.every)
    with tempfile.TemporaryDirectory() as tmp:
        stamps = Path(tmp, "stamps")
        stamps.mkdir()
        data = write_prompts(Path(tmp, "prompts.jsonl"), args.prompts, detect=False)
        overrides = [f"data.path={data}", f"output.dir={tmp}/out", f"generation.batch_size={args.batch_size}",
                     f"cluster.num_workers={args.workers}"]
        sampler.start()
        summary = run_job(load_config(None, overrides), make_engine=partial(stamped_engine, stamps))
        sampler.stop.set()
        sampler.join()
        return report(sampler.samples, read_stamps(stamps), summary, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between samples of the driver")
    parser.add_argument("--out", help="also write the report here")
    args = parser.parse_args()
    ray.init()
    result = soak(args)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
