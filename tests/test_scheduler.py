"""The job's pure parts, without a Ray cluster: sharding, resume skipping, retry/split, policy specs,
prompt fitting, the worker pool's bookkeeping, and one batch through a real (tiny) engine."""

import pickle
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest
import torch
from ray.exceptions import RayTaskError

from conftest import tiny_llama, tiny_tokenizer
from specray.config import ConfigError, load_config, worker_device
from specray.data.rows import ErrorRow, PromptBatch, PromptRow
from specray.distributed import pool as pool_module
from specray.distributed.batch import Batch, BatchOutput, Failure, Totals
from specray.distributed.cli import config_and_overrides
from specray.distributed.pool import WorkerPool
from specray.distributed.runner import BatchRunner, batch_seed, fit_prompt
from specray.distributed.scheduler import after_failure, shard, skip_committed
from specray.distributed.resolve import domain_policy
from specray.policies.sources import format_spec
from specray.engine.speculative import SpeculativeEngine
from specray.policies.disco import FEATURES, DiscoClassifier
from specray.policies.registry import publish
from specray.policies.spec import parse_spec
from specray.schema import ERROR_SCHEMA, RESULT_SCHEMA


def row(i, domain="code"):
    return PromptRow(f"p{i}", f"w{3 + i % 60} w5 w6", domain, i)


def test_shard_fills_batches_per_domain_and_flushes_the_rest():
    chunks = [
        PromptBatch([row(0), row(1, "math"), row(2), row(3)], [ErrorRow("bad", "f", "empty")]),
        PromptBatch([row(4, "math"), row(5)], []),
    ]
    out = list(shard(iter(chunks), batch_size=2))
    assert out[0] == [ErrorRow("bad", "f", "empty")]
    batches = [(b.domain, [r.id for r in b.rows]) for b in out[1:]]
    assert batches == [("code", ["p0", "p2"]), ("math", ["p1", "p4"]), ("code", ["p3", "p5"])]


def test_shard_leftovers_come_out_at_the_end():
    out = list(shard(iter([PromptBatch([row(0), row(1, "chat"), row(2)], [])]), batch_size=4))
    assert [(b.domain, len(b.rows)) for b in out] == [("code", 2), ("chat", 1)]


def test_skip_committed_drops_rows_and_errors_and_counts_them():
    skipped = []
    chunk = PromptBatch([row(0), row(1)], [ErrorRow(None, "f", "bad json", "line:3"), ErrorRow(None, "f", "bad", "line:4"),
                                           ErrorRow("e", "f", "empty", "line:5")])
    # "line:4" committed as an id is another key space: it must not skip the error row at position line:4
    (out,) = skip_committed(iter([chunk]), {"p0", "e", "line:4"}, skipped.append, positions={"line:3"})
    assert [r.id for r in out.rows] == ["p1"] and [e.key for e in out.errors] == ["line:4"] and skipped == [3]


def test_a_failed_batch_is_retried_elsewhere_then_split_then_errors():
    batch = Batch("code", (row(0), row(1)))
    failure = Failure("RuntimeError: boom", worker_lost=False)
    (retry,), errors = after_failure(batch, failure, max_retries=1, slot=3, dataset="f")
    assert (retry.attempt, retry.avoid, errors) == (1, 3, [])
    singles, errors = after_failure(retry, failure, max_retries=1, slot=0, dataset="f")
    assert [s.rows for s in singles] == [(row(0),), (row(1),)] and all(s.attempt == 0 for s in singles) and not errors
    last = Batch("code", (row(1),), attempt=1)
    assert after_failure(last, failure, max_retries=1, slot=0, dataset="f") == (
        [], [ErrorRow("p1", "f", "generation failed 2 time(s): RuntimeError: boom")]
    )


def test_failure_keeps_a_short_root_cause():
    failure = Failure.from_error(ValueError("bad\n  thing " + "x" * 1000), worker_lost=True)
    assert failure.reason.startswith("ValueError: bad thing x") and len(failure.reason) == 500 and failure.worker_lost
    nested = RayTaskError("run", "traceback", RayTaskError("generate", "traceback", RuntimeError("poison")))
    assert Failure.from_error(nested.as_instanceof_cause(), worker_lost=False).reason == "RuntimeError: poison"


def test_batch_output_crosses_processes_as_arrow_ipc():
    table = pa.table({"id": ["a", "b"], "n": [1, 2]})
    out = BatchOutput(RESULT_SCHEMA.empty_table(), table, ERROR_SCHEMA.empty_table())
    back = pickle.loads(pickle.dumps(out))
    assert back.results.equals(out.results) and back.traces.equals(table) and back.errors.schema == ERROR_SCHEMA


def test_totals_sum_results():
    t = Totals.of(pa.table({"new_tokens": [3, 4], "iterations": [2, 2], "drafted": [4, 0], "accepted": [3, 0]}))
    assert (t + t) == Totals(4, 14, 8, 8, 6) and t.acceptance == 0.75 and t.accepted_per_iteration == 0.75
    assert Totals().acceptance is None


def policy_config(*overrides):
    return load_config(None, list(overrides)).policy


def test_domain_budget_folds_into_the_spec():
    cfg = policy_config("policy.default=confidence", "policy.per_domain.math.threshold=0.3",
                        "policy.per_domain.code.name=static:2", "policy.per_domain.code.k_max=6")
    assert domain_policy(cfg, "math").spec == "confidence:threshold=0.3"
    code = domain_policy(cfg, "code")
    assert (code.spec, code.version, code.k_max) == ("static:k=6", "builtin", 6)
    assert domain_policy(policy_config("policy.default=static:3"), "code").spec == "static:3"
    assert domain_policy(cfg, "chat").spec == "confidence"
    assert domain_policy(policy_config("policy.default=target"), "chat").version == ""


def test_knobs_a_policy_lacks_are_config_errors():
    with pytest.raises(ConfigError, match="policy.per_domain.logic.threshold: policy 'heuristic' has no such knob"):
        domain_policy(policy_config("policy.per_domain.logic.threshold=0.5"), "logic")
    with pytest.raises(ConfigError, match="only runs offline"):
        domain_policy(policy_config("policy.default=oracle"), "chat")
    with pytest.raises(ConfigError, match="needs weights"):
        domain_policy(policy_config("policy.default=disco"), "chat")


def publish_disco(registry, domains=("global",)) -> str:
    weights = DiscoClassifier(hidden=4).state_dict()
    return publish(registry, "disco", {d: (weights, {"kind": "disco", "features": FEATURES}) for d in domains})


def test_learned_policies_are_pinned_to_the_registry_version(tmp_path):
    publish_disco(tmp_path)
    publish_disco(tmp_path, domains=("global", "math"))
    version_dir = tmp_path / "disco" / "v0002"
    policy = domain_policy(policy_config("policy.default=disco", f"policy.registry={tmp_path}",
                                         "policy.per_domain.code.threshold=0.25"), "code")
    assert policy.version == "v0002"  # the newest version; code has no model of its own, so the global one
    assert parse_spec(policy.spec) == ("disco", {"tau": 0.25, "path": str(version_dir / "global")})
    math = domain_policy(policy_config("policy.default=disco", f"policy.registry={tmp_path}"), "math")
    assert parse_spec(math.spec)[1]["path"] == str(version_dir / "math")
    assert format_spec("static", {}) == "static"


@pytest.mark.parametrize("damage, named", [
    ("no_latest", "LATEST"), ("corrupt_weights", "global.safetensors"), ("bad_json", "global.json"),
    ("no_file", "absent.safetensors"),
])
def test_a_missing_or_corrupt_artifact_fails_before_the_job_starts_naming_the_file(tmp_path, damage, named):
    publish_disco(tmp_path)
    stem = tmp_path / "disco" / "v0001" / "global"
    if damage == "no_latest":
        (tmp_path / "disco" / "LATEST").unlink()
    if damage == "corrupt_weights":
        Path(f"{stem}.safetensors").write_bytes(b"\0" * 40)
    if damage == "bad_json":
        Path(f"{stem}.json").write_text("{not json")
    spec = f"disco:path={tmp_path / 'absent'}" if damage == "no_file" else "disco"
    with pytest.raises(ConfigError, match=f"policy.per_domain.chat: .*{named}"):
        domain_policy(policy_config(f"policy.default={spec}", f"policy.registry={tmp_path}"), "chat")


def test_fit_prompt_checks_the_window_and_truncates_left_when_asked():
    assert fit_prompt([1, 2, 3], 10, 7, "none") == ([1, 2, 3], None)
    tokens, reason = fit_prompt([1, 2, 3, 4], 10, 7, "none")
    assert tokens is None and "4 tokens" in reason and "room for 3" in reason and "data.truncate=left" in reason
    assert fit_prompt([1, 2, 3, 4], 10, 7, "left") == ([2, 3, 4], None)
    assert fit_prompt([1, 2], 10, 10, "left")[0] is None
    assert fit_prompt([], None, 7, "none") == (None, "prompt encodes to no tokens")
    assert batch_seed(0, ["a", "b"]) == batch_seed(0, ["a", "b"]) != batch_seed(0, ["b", "a"])


def test_worker_device():
    assert worker_device("auto", 0) == "cpu" and worker_device("auto", 0.5) == "cuda"
    with pytest.raises(ConfigError, match="gpus_per_worker"):
        worker_device("cuda", 0)


def test_config_file_or_first_override():
    assert config_and_overrides("a.b=1", ["c=2"]) == (None, ["a.b=1", "c=2"])
    assert config_and_overrides("configs/default.yaml", ["c=2"]) == ("configs/default.yaml", ["c=2"])
    assert config_and_overrides(None, []) == (None, [])


class FakeWorker(str):
    """A worker handle named `w<slot>.<generation>`; `ready.remote()` gives the ref `ready <name>`."""

    @property
    def ready(self):
        return SimpleNamespace(remote=lambda: f"ready {self}")


def fake_pool(monkeypatch, loaded: set[str]) -> tuple[WorkerPool, list, list]:
    """A pool of FakeWorkers; `loaded` holds the `ready` refs that ray.wait finds done. (pool, spawned, killed)"""
    killed, spawned = [], []
    monkeypatch.setattr(pool_module.ray, "kill", killed.append)
    monkeypatch.setattr(pool_module.ray, "wait", lambda refs, timeout: ([r for r in refs if r in loaded], []))
    pool = WorkerPool(lambda slot, gen: spawned.append((slot, gen)) or FakeWorker(f"w{slot}.{gen}"), size=2, max_in_flight=2)
    return pool, spawned, killed


def test_pool_prefers_the_least_loaded_worker_and_avoids_the_failed_one(monkeypatch):
    pool, spawned, killed = fake_pool(monkeypatch, loaded=set())
    a = pool.acquire(now=0.0)
    b = pool.acquire(now=0.0)
    assert {a.slot, b.slot} == {0, 1}
    assert pool.acquire(now=1.0, avoid=0).slot == 1  # slot 1 is as loaded as 0, and 0 is avoided
    assert pool.acquire(now=1.0, avoid=0) is None  # only slot 0 has room: a retry waits rather than go back
    c = pool.acquire(now=1.0)
    assert c.slot == 0 and not pool.has_room()
    pool.release(a, now=2.0)
    assert pool.replace_hung(now=40.0, timeout_s=39) == 1  # slot 0 finished a batch at 2.0, slot 1 nothing since 0
    assert killed == ["w1.0"] and spawned == [(0, 0), (1, 0), (1, 1)]
    pool.replace(b)  # the hung worker's batches then report it lost: nothing more is started
    pool.release(b, now=41.0)  # nor does an answer about the old worker touch the new one
    assert pool.slots[1].in_flight == 0 and pool.replaced == 1
    pool.replace(a)
    assert spawned[-1] == (0, 1) and killed[-1] == "w0.0" and pool.replaced == 2
    assert pool.was_hung(b) and not pool.was_hung(a)


def test_a_replacement_loading_its_models_is_not_hung(monkeypatch):
    loaded = set()
    pool, _, killed = fake_pool(monkeypatch, loaded)
    pool.replace(pool.acquire(now=0.0))  # slot 0's worker died: w0.1 starts loading
    pool.acquire(now=0.0)  # work queues on the loading worker
    assert pool.replace_hung(now=100.0, timeout_s=10) == 0
    loaded.add("ready w0.1")
    assert pool.replace_hung(now=105.0, timeout_s=10) == 0  # loaded at 105: the clock starts there
    assert pool.replace_hung(now=116.0, timeout_s=10) == 1 and killed == ["w0.0", "w0.1"]


def test_runner_turns_a_batch_into_rows_and_errors_too_long_prompts():
    target = tiny_llama(seed=0, dtype=torch.float32)
    engine = SpeculativeEngine(target, target, tiny_tokenizer())
    cfg = load_config(None, ["generation.max_new_tokens=8", "models.target=t", "models.draft=d"])
    runner = BatchRunner(cfg, "data.jsonl", make_engine=lambda models, device: engine)
    long = PromptRow("long", " ".join(["w7"] * 1020), "math", 2)
    rows = (PromptRow("a", "w5 w9 w12", "math", 0), long, PromptRow("b", "w3 w4", "math", 1))
    out = runner("math", rows, "static:3")
    assert out.results["id"].to_pylist() == ["a", "b"]
    assert out.errors.to_pylist() == [{"id": "long", "source": "data.jsonl", "reason": fit_prompt([0] * 1020, 1024, 8, "none")[1],
                                       "position": None}]
    r = out.results.to_pydict()
    assert r["policy"] == ["static:3"] * 2 and r["policy_version"] == ["builtin"] * 2 and r["target"] == ["t", "t"]
    assert r["prompt_tokens"] == [3, 2] and all(n == len(t) for n, t in zip(r["new_tokens"], r["output_tokens"]))
    traces = out.traces.to_pydict()
    for i, prompt_id in enumerate(r["id"]):
        mine = [a for p, a in zip(traces["prompt_id"], traces["accepted"]) if p == prompt_id]
        assert (len(mine), sum(mine)) == (r["drafted"][i], r["accepted"][i])
    assert r["accepted"] == r["drafted"]  # the target is its own draft
    truncating = BatchRunner(load_config(None, ["generation.max_new_tokens=8", "data.truncate=left"]), "f",
                             make_engine=lambda models, device: engine)
    assert truncating("math", (long,), "target").results["prompt_tokens"].to_pylist() == [1016]
