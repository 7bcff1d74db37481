"""A stop-policy kind is one record in its own file: the toy kind of `toy_policy` (test tree only) parses,
validates, builds and runs in `specray bench` and in a job without any other module naming it."""

import json
import os
from pathlib import Path

import pytest
import ray

import toy_policy
from conftest import perturbed, tiny_llama, tiny_tokenizer
from jobkit import MAX_NEW, config, good_rows, write_jsonl
from specray.cli import main
from specray.distributed.job import run_job
from specray.distributed.resolve import domain_policy
from specray.distributed.sink import read_results, read_traces
from specray.policies.factory import make_policy
from specray.policies.kinds import PolicyKind, get_kind, kinds, learned_kinds, register
from specray.policies.sources import spec_source, with_source
from specray.policies.spec import parse_spec
from test_label import target_outputs


def test_the_builtin_kinds_are_registered_with_their_records():
    names = set(kinds())
    assert {"target", "static", "heuristic", "confidence", "disco", "specdecpp", "oracle", "every"} <= names
    assert set(learned_kinds()) == {"disco", "specdecpp"}
    assert get_kind("disco").threshold_knob == "tau" and get_kind("specdecpp").threshold_knob == "h"
    assert not get_kind("target").drafts and get_kind("oracle").offline


def test_a_registered_kind_parses_and_validates_by_its_record():
    assert parse_spec("every:5,floor=0.25") == ("every", {"n": 5, "floor": 0.25})
    assert parse_spec("every,draft=ngram") == ("every", {"draft": "ngram"})
    with pytest.raises(ValueError, match="floor must be in \\[0, 1\\], got 1.5"):
        parse_spec("every:2,floor=1.5")
    with pytest.raises(ValueError, match="unknown option 'tau'; every takes n, floor, cost, draft, ngram"):
        parse_spec("every:2,tau=0.3")
    assert with_source("every:2", "ngram") == "every:n=2,draft=ngram" and spec_source("every:2,draft=ngram") == "ngram"


def test_a_registered_kind_builds_with_its_defaults():
    policy = make_policy("every,cost=off")
    assert isinstance(policy, toy_policy.EveryPolicy)
    assert (policy.k_max, policy.floor, policy.cost_aware) == (3, 0.0, False)


def test_registering_a_second_kind_under_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="policy kind 'every' is registered twice"):
        register(PolicyKind("every"))
    assert register(toy_policy.KIND) is toy_policy.KIND  # the same record again (a module imported twice) is fine


def test_a_registered_kind_runs_in_bench(tmp_path):
    for name, model in (("target", tiny_llama(seed=0)), ("draft", perturbed(tiny_llama(seed=0), noise=0.05))):
        model.save_pretrained(tmp_path / name)
        tiny_tokenizer().save_pretrained(tmp_path / name)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"id": f"p{i}", "prompt": f"w{3 + i} w{9 + i} w{20 + i}", "domain": "code"})
                                 for i in range(4)))
    out = tmp_path / "bench.json"
    code = main(["bench", "--target", str(tmp_path / "target"), "--draft", str(tmp_path / "draft"), "--prompts", str(prompts),
                 "--policies", "every:4,floor=0.2,cost=off,static:2", "--max-new-tokens", "12", "--batch-size", "2",
                 "--dtype", "float64", "--out", str(out)])
    assert code == 0
    rows = {r["policy"]: r for r in json.loads(out.read_text())["rows"] if r["domain"] == "all"}
    assert set(rows) == {"target", "every:4,floor=0.2,cost=off", "static:2"}
    assert rows["every:4,floor=0.2,cost=off"]["identical_to_target"] is True
    assert rows["every:4,floor=0.2,cost=off"]["acceptance_rate"] > 0


@pytest.fixture(scope="module")
def ray_importing_tests():
    """A local Ray instance whose workers can import the test tree, where the toy kind is declared."""
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def test_a_registered_kind_runs_in_a_job(pair, tmp_path, ray_importing_tests):
    """Resolved once on the driver; the workers import the kind's file by the module the resolved policy names."""
    rows = good_rows(6)
    cfg = config(pair, write_jsonl(tmp_path / "p.jsonl", rows), tmp_path / "out", "policy.default=every:3,cost=off",
                 "generation.batch_size=3")
    resolved = domain_policy(cfg.policy, "code").resolved["every:3,cost=off"]
    assert (resolved.kind, resolved.module, resolved.version) == ("every", "toy_policy", "builtin")
    run_job(cfg)
    results, traces = read_results(cfg.output.dir), read_traces(cfg.output.dir)
    assert set(results["policy"].to_pylist()) == {"every"} and traces.num_rows > 0
    assert {r["id"]: r["output_tokens"] for r in results.to_pylist()} == target_outputs(rows, MAX_NEW)
