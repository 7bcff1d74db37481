"""What the tests that run the generation job on Ray share (test_job, test_chaos): prompt files, the
config, a wrapped engine that is slow, fails or hangs on demand, and the exactly-once checks.

Also the chaos test's driver, a process the test can SIGKILL:

    python tests/jobkit.py NAMESPACE DELAY_S key=value ...

runs the job in a named Ray namespace (so the test finds its workers by name) on an engine slowed by
DELAY_S a batch (so faults land mid-run).
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from pathlib import Path

import ray
import ray.cloudpickle

from specray.config import load_config
from specray.distributed.job import run_job
from specray.distributed.manifest import read_records
from specray.distributed.sink import MANIFEST, read_results, read_traces

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests directory
MAX_NEW = 16
HANG_S = 3600.0


def prompt(i: int) -> str:
    return " ".join(f"w{3 + (i * 7 + j * 11) % 60}" for j in range(3 + i % 9))


def good_rows(n: int, prefix: str = "g") -> list[dict]:
    """Rows with an explicit domain, and every fourth without one (so the detector decides)."""
    domains = ("code", "math", "chat")
    return [{"id": f"{prefix}{i}", "prompt": prompt(i), **({} if i % 4 == 3 else {"domain": domains[i % 3]})} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict], raw: tuple[bytes, ...] = ()) -> Path:
    with open(path, "wb") as f:
        for r in rows:
            f.write(json.dumps(r).encode() + b"\n")
        for line in raw:
            f.write(line + b"\n")
    return path


def config(pair, data: Path, out: Path, *overrides: str):
    target, draft = pair
    return load_config(None, [f"models.target={target}", f"models.draft={draft}", f"data.path={data}",
                              f"output.dir={out}", f"generation.max_new_tokens={MAX_NEW}", "models.dtype=float32", *overrides])


def assert_exactly_once(out: Path, ids: set[str]) -> None:
    """Every id once in results, and the traces of exactly those results, summing to their counts."""
    results, traces = read_results(out), read_traces(out)
    assert sorted(results["id"].to_pylist()) == sorted(ids)
    per_prompt = traces.group_by("prompt_id").aggregate([("accepted", "count"), ("accepted", "sum")])
    got = {p: (n, s) for p, n, s in zip(*(per_prompt[c].to_pylist() for c in ("prompt_id", "accepted_count", "accepted_sum")))}
    want = {i: (d, a) for i, d, a in zip(*(results[c].to_pylist() for c in ("id", "drafted", "accepted"))) if d}
    assert got == want


def manifest_commits(out: Path) -> int:
    """Records that committed rows; the session and workers records commit none. A line still being
    written is not a record yet."""
    path = out / MANIFEST
    lines = path.read_bytes().splitlines()[1:] if path.exists() else []
    return sum(1 for line in lines if line.endswith(b"}") and json.loads(line)["files"])


def uncommitted_files(out: Path) -> set[str]:
    """Files a reader could trip over: anything in `_tmp/`, and Parquet files no manifest record names."""
    listed = {f for record in read_records(out / MANIFEST)[1:] for f in record["files"]}
    on_disk = {p.relative_to(out).as_posix() for kind in ("results", "traces", "errors") for p in out.glob(f"{kind}/**/*.parquet")}
    return {p.relative_to(out).as_posix() for p in out.glob("_tmp/*")} | (on_disk - listed)


class WrappedEngine:
    """The real engine, slowed down at each admission, failing whenever one prompt id is in a round or hanging
    on another, for tests that need it."""

    def __init__(self, engine, delay_s: float = 0.0, poison: str | None = None, hang: str | None = None):
        self.engine, self.delay_s, self.poison, self.hang = engine, delay_s, poison, hang

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def admit(self, state, drafts):
        before = len(state.active)
        self.engine.admit(state, drafts)
        if len(state.active) > before:
            time.sleep(self.delay_s)

    def verify(self, state, *args):
        ids = {s.prompt_id for s in state.active}
        if self.poison in ids:
            raise RuntimeError(f"poison row {self.poison}")
        if self.hang in ids:
            time.sleep(HANG_S)
        return self.engine.verify(state, *args)


def wrapped_engine(models, device, **behaviour) -> WrappedEngine:
    """A `make_engine` for run_job (bind `behaviour` with functools.partial): the configured pair, wrapped."""
    from specray.distributed.runner import load_engine  # torch: in the workers only, not in the chaos driver

    return WrappedEngine(load_engine(models, device), **behaviour)


def drive(namespace: str, delay_s: str, *overrides: str) -> None:
    """The chaos test's driver process (see the module docstring)."""
    cfg = load_config(None, list(overrides))
    ray.init(address=cfg.cluster.address, namespace=namespace, log_to_driver=False)
    run_job(cfg, make_engine=partial(wrapped_engine, delay_s=float(delay_s)))


if __name__ == "__main__":
    drive(*sys.argv[1:])
