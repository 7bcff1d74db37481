"""Chaos on a local Ray instance with tiny models: during one run three workers are killed (`ray.kill`
and SIGKILL of the worker process) and then the driver is SIGKILLed; a rerun must leave every id
exactly once in results/, with traces that add up and no file a reader could trip over. And a worker
that hangs on one prompt: the batch timeout retries it elsewhere, then makes it an error row."""

import os
import random
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import ray

from jobkit import assert_exactly_once, config, good_rows, manifest_commits, uncommitted_files, wrapped_engine, write_jsonl
from specray.config import load_config
from specray.distributed.job import run_job
from specray.distributed.sink import read_errors, read_results, read_traces

pytestmark = pytest.mark.usefixtures("local_ray")
REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "specray-chaos"  # the driver's, so this test can find its workers by name
FAST = ("generation.max_new_tokens=4", "policy.default=static:3")  # static: no cost calibration in new workers
DEADLINE_S = 240


class Chaos:
    """Faults paced by the run's manifest commits, so each lands mid-run and after the last has healed."""

    def __init__(self, out: Path, run_id: str, driver: subprocess.Popen, seed: int = 7):
        self.out, self.run_id, self.driver = out, run_id, driver
        self.rng, self.generations = random.Random(seed), [0, 0]
        self.start = time.monotonic()
        self.deadline = self.start + DEADLINE_S
        self.log: list[str] = []

    def wait(self, condition) -> None:
        while not condition():
            assert self.driver.poll() is None, f"the driver ended before every fault was injected: {self.log}"
            assert time.monotonic() < self.deadline, f"no progress: {self.log}"
            time.sleep(0.05)

    def after_commits(self, n: int) -> None:
        target = manifest_commits(self.out) + n
        self.wait(lambda: manifest_commits(self.out) >= target)

    def worker(self, slot: int):
        """The slot's current worker, once the pool has started it."""
        name, found = f"specray-{self.run_id}-worker-{slot}-{self.generations[slot]}", []

        def started() -> bool:
            found[:] = _named(name)
            return bool(found)

        self.wait(started)
        return found[0]

    def kill_worker(self, how: str) -> None:
        slot = self.rng.randrange(len(self.generations))
        handle = self.worker(slot)
        if how == "ray.kill":
            ray.kill(handle)
        else:
            os.kill(ray.get(handle.__ray_call__.remote(lambda _: os.getpid())), signal.SIGKILL)
        self.note(f"{how} worker {slot}.{self.generations[slot]}")
        self.generations[slot] += 1

    def kill_driver(self) -> None:
        os.kill(self.driver.pid, signal.SIGKILL)
        self.driver.wait()
        self.note("SIGKILL driver")

    def note(self, event: str) -> None:
        self.log.append(f"{time.monotonic() - self.start:.1f}s, commit {manifest_commits(self.out)}: {event}")


def _named(name: str) -> list:
    try:
        return [ray.get_actor(name, namespace=NAMESPACE)]
    except ValueError:
        return []


def test_killed_workers_and_driver_lose_nothing(pair, tmp_path):
    rows, out = good_rows(300), tmp_path / "out"
    overrides = [f"models.target={pair[0]}", f"models.draft={pair[1]}", f"data.path={write_jsonl(tmp_path / 'p.jsonl', rows)}",
                 f"output.dir={out}", *FAST, "generation.batch_size=4", "output.rows_per_file=1", "run_id=chaos",
                 "cluster.num_workers=2", "cluster.max_retries=3"]  # 3 kills cannot use up a batch's retries
    command = [sys.executable, "tests/jobkit.py", NAMESPACE, "1.5", *overrides,
               f"cluster.address={ray.get_runtime_context().gcs_address}"]
    with open(tmp_path / "driver.log", "wb") as log:
        chaos = Chaos(out, "chaos", subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log))
        try:
            chaos.after_commits(2)
            for how in ("ray.kill", "SIGKILL", chaos.rng.choice(["ray.kill", "SIGKILL"])):
                chaos.kill_worker(how)
                chaos.after_commits(2)  # the survivor or the replacement keeps committing
            chaos.kill_driver()
        finally:
            chaos.driver.kill()
    crashed = set(read_results(out)["id"].to_pylist())
    assert chaos.driver.returncode == -signal.SIGKILL and 0 < len(crashed) < len(rows), chaos.log
    assert_exactly_once(out, crashed)  # what readers see right after the crash: no half-written file counts
    summary = run_job(load_config(None, overrides))
    assert (summary["skipped"], summary["results"], summary["errors"]) == (len(crashed), len(rows) - len(crashed), 0), chaos.log
    assert_exactly_once(out, {r["id"] for r in rows})
    assert len(read_errors(out)) == 0 and not uncommitted_files(out)
    assert set(read_traces(out)["run_id"].to_pylist()) == {"chaos"}


def test_a_hung_worker_is_killed_its_batch_retried_elsewhere_then_an_error_row(pair, tmp_path):
    rows = [{"id": "hang", "prompt": "w5 w6 w7", "domain": "code"}, *good_rows(10)]
    cfg = config(pair, write_jsonl(tmp_path / "p.jsonl", rows), tmp_path / "out", *FAST, "generation.batch_size=1",
                 "cluster.num_workers=2", "cluster.max_in_flight=1", "cluster.max_retries=1", "cluster.batch_timeout_s=2")
    summary = run_job(cfg, make_engine=partial(wrapped_engine, hang="hang"))
    assert_exactly_once(tmp_path / "out", {r["id"] for r in rows[1:]})
    errors = read_errors(tmp_path / "out").to_pylist()
    assert errors == [{"id": "hang", "source": str(tmp_path / "p.jsonl"),
                       "reason": "generation failed 2 time(s): worker hung: nothing finished within cluster.batch_timeout_s=2",
                       "position": "line:1"}]
    assert (summary["hung_workers"], summary["replaced_workers"], summary["failed_batches"]) == (2, 2, 2)
