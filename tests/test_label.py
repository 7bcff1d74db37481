"""Labelling runs on a local Ray instance with tiny models, and the loop they feed: label → retrain →
generate with the newest registry version."""

import json
from dataclasses import replace
from pathlib import Path

import pyarrow.compute as pc
import pytest
import torch

from conftest import tiny_llama, tiny_tokenizer
from jobkit import MAX_NEW, assert_exactly_once, config, good_rows, write_jsonl
from specray.cli import main
from specray.config import load_config
from specray.data.rows import PromptRow
from specray.distributed.job import run_job
from specray.distributed.runner import BatchRunner
from specray.distributed.sink import read_results, read_traces
from specray.distributed.resolve import domain_policy
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.models import encode_prompt
from specray.policies.registry import artifact_stem, latest_version
from specray.training.retrain import retrain

pytestmark = pytest.mark.usefixtures("local_ray")
DEPTH = 3
DRAFT_HIDDEN = 32  # tiny_llama's hidden size


def target_outputs(rows: list[dict], max_new: int) -> dict[str, list[int]]:
    """Target-only greedy tokens per prompt id, from the pair's target (the job's pair fixture)."""
    target, tokenizer = tiny_llama(seed=0, dtype=torch.float32, eos_boost=1.5), tiny_tokenizer()
    engine = SpeculativeEngine(target, target, tokenizer)
    prompts = [encode_prompt(tokenizer, r["prompt"]) for r in rows]
    return {r["id"]: s.tokens for r, s in zip(rows, engine.generate(prompts, None, GenerationConfig(max_new)).sequences)}


@pytest.fixture(scope="module")
def labelled(pair, tmp_path_factory):
    """A label run whose `policy.*` asks for weights that do not exist: a label run must not read them."""
    tmp = tmp_path_factory.mktemp("label")
    rows = good_rows(16, prefix="l")
    cfg = config(pair, write_jsonl(tmp / "prompts.jsonl", rows), tmp / "out", f"label.depth={DEPTH}",
                 "generation.batch_size=4", "policy.default=specdecpp")
    return cfg, run_job(cfg, label=True), rows


def test_label_rows_carry_labels_hidden_states_and_source(labelled):
    cfg, summary, rows = labelled
    out = Path(cfg.output.dir)
    assert_exactly_once(out, {r["id"] for r in rows})  # per prompt: rows number `drafted`, `accepted` sums to it
    traces, results = read_traces(out), read_results(out)
    assert traces.num_rows > 0 and set(traces["source"].to_pylist()) == {"label"}
    assert {len(h) for h in traces["hidden"].to_pylist()} == {DRAFT_HIDDEN}
    assert set(results["policy"].to_pylist()) == {f"static:{DEPTH}"} == {d["policy"]["spec"] for d in summary["domains"].values()}
    assert pc.max(traces["lookahead"]).as_py() == DEPTH  # shorter only where max_new_tokens or EOS cut a draft


def test_label_run_output_is_the_targets_own(labelled):
    cfg, _, rows = labelled
    outputs = {r["id"]: r["output_tokens"] for r in read_results(cfg.output.dir).to_pylist()}
    assert outputs == target_outputs(rows, MAX_NEW)


@pytest.fixture(scope="module")
def registry(labelled, tmp_path_factory):
    cfg, _, _ = labelled
    root = tmp_path_factory.mktemp("registry")
    return root, retrain([cfg.output.dir], root, steps=30)


def test_retrain_on_a_label_run_trains_specdecpp(registry, labelled):
    root, report = registry
    assert report["versions"] == {"disco": "v0001", "specdecpp": "v0001", "draft_sources": "v0001"}
    assert all(latest_version(root, kind) == version for kind, version in report["versions"].items())
    stem, _ = artifact_stem(root, "specdecpp", "code")
    meta = json.loads(Path(f"{stem}.json").read_text())
    assert meta["hidden_size"] == DRAFT_HIDDEN and meta["data"]["runs"] == [labelled[1]["run_id"]]


def test_generate_uses_the_retrained_registry(registry, labelled):
    """What a generate job's driver pins and its worker runs, in-process: the newest version, recorded."""
    root, _ = registry
    # cost=off: on tiny CPU models the cost gate would stop drafting, leaving no trace rows to check
    policy_cfg = load_config(None, ["policy.default=specdecpp:cost=off", f"policy.registry={root}"]).policy
    cfg = replace(labelled[0], policy=policy_cfg)
    rows = good_rows(6, prefix="n")
    prompts = tuple(PromptRow(r["id"], r["prompt"], "math", i) for i, r in enumerate(rows))
    policy = domain_policy(cfg.policy, "math")
    out = BatchRunner(cfg, "new.jsonl")("math", prompts, policy.spec)
    assert policy.version == "v0001" == latest_version(root, "specdecpp")
    assert set(out.results["policy_version"].to_pylist()) == {"v0001"} == set(out.traces["policy_version"].to_pylist())
    assert set(out.traces["source"].to_pylist()) == {"generate"} and "hidden" not in out.traces.column_names
    assert dict(zip(out.results["id"].to_pylist(), out.results["output_tokens"].to_pylist())) == target_outputs(rows, MAX_NEW)


def test_label_command_fails_fast_on_a_bad_depth(capsys):
    assert main(["label", "label.depth=0"]) == 2
    assert "label.depth: expected an integer >= 1, got 0" in capsys.readouterr().err
