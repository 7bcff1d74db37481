"""The generation job on a local Ray instance with tiny models: end to end with two CPU workers, bad
rows, a poison row, a worker killed mid-run, and a driver SIGKILLed mid-run then resumed."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pyarrow.compute as pc
import pytest
import ray
import torch

from conftest import tiny_llama, tiny_tokenizer
from jobkit import MAX_NEW, assert_exactly_once, config, good_rows, manifest_commits, wrapped_engine, write_jsonl
from specray.config import load_config
from specray.distributed.job import run_job
from specray.distributed.sink import read_errors, read_results, read_traces
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.models import encode_prompt

pytestmark = pytest.mark.usefixtures("local_ray")
REPO = Path(__file__).resolve().parents[1]


# ---- end to end with bad rows --------------------------------------------------------------------

BAD = {
    "empty": "empty or whitespace-only",
    "num": "must be a string",
    "nocol": "missing prompt column",
    "line:35": "not valid UTF-8",
    "long": "context window of 1024",
}


@pytest.fixture(scope="module")
def e2e(pair, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    rows = good_rows(30) + [
        {"id": "empty", "prompt": "   "}, {"id": "num", "prompt": 42}, {"id": "nocol", "text": "w3"},
        {"id": "long", "prompt": " ".join(["w7"] * 1020), "domain": "code"},
    ]
    data = write_jsonl(tmp / "prompts.jsonl", rows, raw=(b'{"id": "\xff"}',))
    cfg = config(pair, data, tmp / "out", "cluster.num_workers=2", "generation.batch_size=4", "policy.per_domain.math.name=static:3",
                 "generation.batching=continuous")  # batches of several domains share each worker's engine
    return cfg, run_job(cfg), rows[:30]


def test_end_to_end_every_prompt_once_with_its_traces(e2e):
    cfg, summary, rows = e2e
    out = Path(cfg.output.dir)
    assert_exactly_once(out, {r["id"] for r in rows})
    assert (summary["results"], summary["errors"], summary["failed_batches"]) == (30, len(BAD), 0)
    assert sorted(p.name for p in (out / "results").iterdir()) == [f"domain={d}" for d in sorted(summary["domains"])]
    assert (out / "config.yaml").read_text().count(str(cfg.models.target)) == 1
    traces = read_traces(out)
    assert set(traces["run_id"].to_pylist()) == {summary["run_id"]}


def test_the_manifest_records_each_workers_device_and_precision(e2e):
    cfg, _, _ = e2e
    records = [json.loads(line) for line in (Path(cfg.output.dir) / "manifest.jsonl").read_text().splitlines()]
    workers = [r for r in records if r.get("kind") == "workers"]
    assert len(workers) == 1 and len(workers[0]["workers"]) == 2
    assert workers[0]["workers"][0] == {"device": "cpu", "precision": {"target": "float32", "draft": "float32"},
                                        "context_window": 1024}


def test_domains_and_their_policies(e2e):
    cfg, summary, rows = e2e
    results = {r["id"]: r for r in read_results(cfg.output.dir).to_pylist()}
    for r in rows:
        if "domain" in r:
            assert results[r["id"]]["domain"] == r["domain"]
    math = [r for r in results.values() if r["domain"] == "math"]
    assert {r["policy"] for r in math} == {"static:3"} and all(r["drafted"] for r in math)
    assert summary["domains"]["math"]["policy"]["spec"] == "static:3"
    for domain, stats in summary["domains"].items():
        assert stats["prompts"] == sum(r["domain"] == domain for r in results.values())
        assert stats["policy"]["prompts"] == stats["prompts"]
        assert (stats["policy"]["ema_acceptance"] is None) == (stats["drafted"] == 0)  # the cost gate may forbid drafting


def test_greedy_job_output_is_the_targets_own(e2e):
    cfg, _, rows = e2e
    target, tokenizer = tiny_llama(seed=0, dtype=torch.float32, eos_boost=1.5), tiny_tokenizer()
    engine = SpeculativeEngine(target, target, tokenizer)
    prompts = [encode_prompt(tokenizer, r["prompt"]) for r in rows]
    reference = engine.generate(prompts, None, GenerationConfig(MAX_NEW)).sequences
    results = {r["id"]: r["output_tokens"] for r in read_results(cfg.output.dir).to_pylist()}
    assert [results[r["id"]] for r in rows] == [s.tokens for s in reference]


def test_bad_rows_become_error_rows(e2e):
    cfg, _, _ = e2e
    errors = {e["id"] or e["position"]: e["reason"] for e in read_errors(cfg.output.dir).to_pylist()}
    assert set(errors) == set(BAD)
    for row_id, reason in BAD.items():
        assert reason in errors[row_id], (row_id, errors[row_id])


# ---- failures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def poisoned(pair, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("poison")
    rows = [{"id": "poison", "prompt": "w9 w9 w9", "domain": "code"}, *good_rows(7), {"id": "g0", "prompt": "w3 w4"}]
    data = write_jsonl(tmp / "prompts.jsonl", rows)
    cfg = config(pair, data, tmp / "out", "cluster.num_workers=1", "generation.batch_size=4", "cluster.max_retries=1",
                 "generation.batching=continuous")  # the poison row's round fails its neighbours' batches too
    return cfg, run_job(cfg, make_engine=partial(wrapped_engine, poison="poison"))


def test_a_poison_row_fails_alone_and_its_batch_still_completes(poisoned):
    cfg, summary = poisoned
    results = set(read_results(cfg.output.dir)["id"].to_pylist())
    assert {f"g{i}" for i in range(1, 7)} <= results and "poison" not in results
    errors = {e["id"]: e["reason"] for e in read_errors(cfg.output.dir).to_pylist()}
    assert errors["poison"] == "generation failed 2 time(s): RuntimeError: poison row poison"
    assert summary["failed_batches"] == 4  # the batch twice, then the poison row alone twice; neighbours rerun, never fail


def test_a_duplicate_id_keeps_its_first_occurrence(poisoned):
    cfg, _ = poisoned
    assert "g0" in read_results(cfg.output.dir)["id"].to_pylist()
    assert any("duplicate id 'g0'" in reason for reason in read_errors(cfg.output.dir)["reason"].to_pylist())


def test_a_killed_worker_is_replaced_and_its_batches_retried(pair, tmp_path):
    rows = good_rows(24)
    cfg = config(pair, write_jsonl(tmp_path / "p.jsonl", rows), tmp_path / "out", "run_id=killworker",
                 "cluster.num_workers=2", "generation.batch_size=2", "output.rows_per_file=1")

    def kill_first_worker_after_a_commit():
        while manifest_commits(tmp_path / "out") < 1:
            time.sleep(0.05)
        ray.kill(ray.get_actor("specray-killworker-worker-0-0"))

    killer = threading.Thread(target=kill_first_worker_after_a_commit, daemon=True)
    killer.start()
    summary = run_job(cfg, make_engine=partial(wrapped_engine, delay_s=0.3))
    killer.join(timeout=1)
    assert summary["replaced_workers"] == 1 and summary["failed_batches"] >= 1
    assert_exactly_once(tmp_path / "out", {r["id"] for r in rows})
    assert len(read_errors(tmp_path / "out")) == 0


def test_a_sigkilled_driver_resumes_exactly_once(pair, tmp_path):
    rows = good_rows(36)
    out = tmp_path / "out"
    overrides = [f"models.target={pair[0]}", f"models.draft={pair[1]}", f"data.path={write_jsonl(tmp_path / 'p.jsonl', rows)}",
                 f"output.dir={out}", "generation.max_new_tokens=32", "generation.batch_size=2", "output.rows_per_file=1",
                 "cluster.num_workers=2", f"cluster.address={ray.get_runtime_context().gcs_address}"]
    with open(tmp_path / "driver.log", "wb") as log:
        driver = subprocess.Popen([sys.executable, "jobs/generate.py", *overrides], cwd=REPO, stdout=log, stderr=log)
        deadline = time.monotonic() + 120
        while manifest_commits(out) < 3 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    first = manifest_commits(out)
    assert 3 <= first and driver.returncode == -signal.SIGKILL, (tmp_path / "driver.log").read_text()[-2000:]
    resume = load_config(None, [o for o in overrides if not o.startswith("cluster.address")])
    summary = run_job(resume)
    assert summary["skipped"] >= first and summary["skipped"] + summary["results"] == len(rows)
    assert_exactly_once(out, {r["id"] for r in rows})
    assert pc.unique(read_traces(out)["run_id"]).to_pylist() == [summary["run_id"]]
    again = run_job(resume)  # nothing left: no worker is even started
    assert (again["skipped"], again["results"], again["run_id"]) == (len(rows), 0, summary["run_id"])
