"""Draft sources in the job, on a local Ray instance with tiny models: a label run drafting every prompt with
each source, retraining per (domain, source), and a generate run whose domains choose their source."""

import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

from jobkit import MAX_NEW, config, good_rows, write_jsonl
from specray.distributed.job import run_job
from specray.distributed.sink import read_results, read_traces
from specray.distributed.resolve import domain_policy
from specray.policies.draft_prior import MAX_PRIOR_BATCHES, load_prior
from specray.policies.registry import latest_version
from specray.policies.sources import SOURCES
from specray.training.retrain import retrain
from test_label import target_outputs

pytestmark = pytest.mark.usefixtures("local_ray")
LABEL_SOURCES = ("model", "ngram")


@pytest.fixture(scope="module")
def labelled(pair, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("label-sources")
    rows = good_rows(12, prefix="s")
    cfg = config(pair, write_jsonl(tmp / "prompts.jsonl", rows), tmp / "out", "label.depth=3", "generation.batch_size=4",
                 f"label.draft_sources=[{','.join(LABEL_SOURCES)}]")
    return cfg, run_job(cfg, label=True), rows


def test_a_label_run_drafts_every_prompt_with_every_source(labelled):
    cfg, _, rows = labelled
    traces, results = read_traces(cfg.output.dir), read_results(cfg.output.dir)
    assert sorted(results["id"].to_pylist()) == sorted(r["id"] for r in rows)  # one result per prompt
    assert set(results["draft_source"].to_pylist()) == {"model"}  # results come from the first source
    assert set(traces["draft_source"].to_pylist()) == set(LABEL_SOURCES)
    model = traces.filter(pc.equal(traces["draft_source"], "model"))
    per_prompt = dict(zip(*model.group_by("prompt_id").aggregate([("accepted", "count")]).to_pydict().values()))
    assert per_prompt == {r["id"]: r["drafted"] for r in results.to_pylist() if r["drafted"]}  # the model pass is the result's
    ngram = traces.filter(pc.equal(traces["draft_source"], "ngram"))
    assert ngram.num_rows and pc.all(pc.equal(ngram["draft_prob"], 1.0)).as_py()  # lookup tokens are point masses
    outputs = {r["id"]: r["output_tokens"] for r in results.to_pylist()}
    assert outputs == target_outputs(rows, MAX_NEW)


@pytest.fixture(scope="module")
def registry(labelled, tmp_path_factory):
    cfg, _, _ = labelled
    root = tmp_path_factory.mktemp("registry-sources")
    return root, retrain([cfg.output.dir], root, steps=20)


def test_retrain_fits_policies_per_source_and_publishes_the_speed_prior(registry):
    root, report = registry
    assert set(report["by_source"]) == set(LABEL_SOURCES)
    version = latest_version(root, "disco")
    names = {p.stem for p in (root / "disco" / version).glob("*.json")}
    assert {"global", "global__ngram"} <= names  # per (domain, source); tiny data: the global fallbacks
    prior = load_prior(root, "code")
    assert set(prior.speeds) == {*LABEL_SOURCES, "none"} and all(v > 0 for v in prior.speeds.values())
    assert set(prior.batches) == set(prior.speeds) and all(1 <= b <= MAX_PRIOR_BATCHES for b in prior.batches.values())
    meta = json.loads((root / "draft_sources" / latest_version(root, "draft_sources") / "global.json").read_text())
    assert meta["sources"]["ngram"]["evaluated_tokens"] > 0 and 0 <= meta["sources"]["model"]["acceptance"] <= 1
    assert 0 < meta["sources"]["ngram"]["prompts"] <= meta["sources"]["model"]["prompts"] == meta["sources"]["none"]["prompts"] <= 12


def test_a_learned_policy_is_pinned_to_its_sources_artifact(registry, labelled):
    root, _ = registry
    cfg, _, _ = labelled
    from specray.config import load_config

    policy = load_config(None, [f"policy.registry={root}", "policy.default=disco", "policy.per_domain.code.draft=auto"]).policy
    code = domain_policy(policy, "code")
    assert Path(code.specs["ngram"].split("path=")[1].split(",")[0]).name == "global__ngram"
    assert Path(code.specs["model"].split("path=")[1].split(",")[0]).name == "global"
    assert code.prior is not None


def test_generate_with_auto_records_each_batchs_source_and_stays_lossless(pair, registry, tmp_path):
    root, _ = registry
    rows = good_rows(12, prefix="a")
    cfg = config(pair, write_jsonl(tmp_path / "prompts.jsonl", rows), tmp_path / "out", "generation.batch_size=2",
                 "policy.default=static:2", *(f"policy.per_domain.{d}.draft=auto" for d in ("code", "math", "logic", "chat")),
                 f"policy.registry={root}")
    summary = run_job(cfg)
    results, traces = read_results(cfg.output.dir), read_traces(cfg.output.dir)
    assert set(results["draft_source"].to_pylist()) <= set(SOURCES)
    by_id = dict(zip(results["id"].to_pylist(), results["draft_source"].to_pylist()))
    for prompt_id, source in zip(traces["prompt_id"].to_pylist(), traces["draft_source"].to_pylist()):
        assert by_id[prompt_id] == source  # a trace row names the source its result does
    for domain, stats in summary["domains"].items():
        evidence = stats["policy"]["draft_choice"]
        assert sum(s["batches"] for s in evidence["sources"].values()) == stats["policy"]["batches"]
    assert {r["id"]: r["output_tokens"] for r in results.to_pylist()} == target_outputs(rows, MAX_NEW)
