"""Retraining on synthetic traces whose acceptance depends on the draft's top-1 probability and depth."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from specray.policies.disco import DiscoPolicy
from specray.policies.factory import make_policy
from specray.policies.registry import artifact_stem, latest_version
from specray.policies.specdecpp import SpecDecPPPolicy
from specray.distributed.sink import RunMeta, RunSink
from specray.schema import RESULT_SCHEMA, TRACE_SCHEMA
from specray.training import retrain as retrain_module
from specray.training.replay import Costs, best_static, build_rounds, estimate_costs, rate, static_lengths
from specray.training.retrain import retrain
from specray.training.trace_reader import COLUMNS, find_trace_files, iter_batches, read_traces_streaming

HIDDEN = 16
FILE_SCHEMA = pa.schema([f for f in TRACE_SCHEMA if f.name != "domain"])  # the hive path carries the domain


def synthetic_traces(rounds: int, seed: int, run_id: str, with_hidden: bool = False, sharpness: float = 1.0, prefix: str = "p") -> pa.Table:
    """Rounds of 6-8 drafted tokens; P(accept) = top1 ** sharpness * 0.97 ** depth, sampled in order.

    top1 is mostly high with a confident/unsure mixture, so knowing it pays: a learned rule stops
    before unsure tokens, a static K cannot."""
    rng = np.random.default_rng(seed)
    projection = np.random.default_rng(99).normal(size=(3, HIDDEN))
    cols: dict[str, list] = {name: [] for name in FILE_SCHEMA.names}
    hidden = []
    for r in range(rounds):
        k = int(rng.integers(6, 9))
        top1 = np.where(rng.random(k) < 0.75, rng.uniform(0.8, 1.0, k), rng.uniform(0.05, 0.5, k))
        p_accept = top1**sharpness * 0.97 ** np.arange(1, k + 1)
        accepted = rng.random(k) < p_accept
        n_acc = int(np.argmin(np.append(accepted, False)))
        for j in range(k):
            rest = (1 - top1[j]) * np.array([0.5**i for i in range(1, 10)]) / sum(0.5**i for i in range(1, 10))
            topk = np.concatenate([[top1[j]], rest]).astype(np.float32)
            row = {
                "run_id": run_id, "source": "label", "prompt_id": f"{prefix}{r // 4}", "iteration": r % 4, "depth": j + 1,
                "gen_position": j, "draft_token": 5, "draft_prob": float(top1[j]), "target_prob": float(top1[j] * p_accept[j]),
                "accept_prob": float(p_accept[j]), "accepted": j < n_acc, "evaluated": j <= n_acc,
                "entropy": float(-(topk * np.log(topk + 1e-9)).sum()), "topk_probs": topk.tolist(), "policy": "static:8",
                "policy_version": "builtin", "lookahead": k, "stop_reason": "k_max",
                "draft_ms": 0.1 * k, "verify_ms": 1.0 + 0.05 * (k + 1),
            }
            for name, value in row.items():
                cols[name].append(value)
            hidden.append(projection.T @ [top1[j], j / 8, rng.normal() * 0.05])
    table = pa.Table.from_pydict(cols, schema=FILE_SCHEMA)
    if with_hidden:
        table = table.append_column("hidden", pa.array(np.array(hidden, np.float32).tolist(), pa.list_(pa.float32())))
    return table


def write(table: pa.Table, root: Path, domain: str, name: str) -> Path:
    path = root / "traces" / f"domain={domain}" / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=500)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As `specray retrain` does: these tiny models train several times faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    write(synthetic_traces(1000, 0, "run-a", with_hidden=True, prefix="code"), root, "code", "part-0")
    write(synthetic_traces(1000, 1, "run-a", with_hidden=True, sharpness=2.0, prefix="math"), root, "math", "part-0")
    write(synthetic_traces(20, 2, "run-a", with_hidden=True, prefix="chat"), root, "chat", "part-0")
    return root


@pytest.fixture(scope="module")
def trained(traces, tmp_path_factory) -> tuple[Path, dict]:
    registry = tmp_path_factory.mktemp("registry")
    return registry, retrain([traces], registry, min_rows=1000, steps=150)


def test_learned_disco_beats_static_in_replay(trained):
    _, report = trained
    replay = report["metrics"]["disco"]["replay"]
    assert replay["global"]["speedup_vs_best_static"] > 1.04, replay["global"]
    for name in ("code", "math"):
        assert replay[name]["speedup_vs_best_static"] > 1.02, replay[name]
    assert report["metrics"]["disco"]["domains"]["code"]["auc"] > 0.75
    assert report["metrics"]["specdecpp"]["replay"]["global"]["speedup_vs_best_static"] > 1.0


def test_metrics_cover_domains_and_transfer(trained):
    _, report = trained
    disco = report["metrics"]["disco"]
    assert set(disco["domains"]) == {"code", "math", "chat"}
    assert set(disco["transfer_auc"]) == {"global", "code", "math"}
    assert set(disco["transfer_auc"]["code"]) == {"code", "math", "chat"}
    for key in ("f1", "auc", "ece"):
        assert disco["domains"]["math"][key] is not None
    assert disco["domains"]["code"]["ece"] < 0.1  # prior-corrected despite class weighting


def test_registry_round_trip(trained, traces):
    registry, report = trained
    policy = make_policy("disco", domain="code", registry=str(registry))
    stem, version = artifact_stem(registry, "disco", "code")
    meta = json.loads(Path(f"{stem}.json").read_text())
    assert isinstance(policy, DiscoPolicy) and policy.version == version == report["versions"]["disco"]
    assert policy.tau == meta["tau"] and policy.k_max == meta["k_max"]
    head = make_policy("specdecpp", domain="math", registry=str(registry))
    assert isinstance(head, SpecDecPPPolicy) and head.head.out.weight.shape == (1, HIDDEN)
    global_meta = json.loads(Path(f"{artifact_stem(registry, 'disco', 'global')[0]}.json").read_text())
    assert global_meta["data"]["runs"] == ["run-a"] and global_meta["data"]["rows"] > 0
    assert global_meta["cost_model"]["draft_to_verify_ratio"] > 0


def test_tiny_domain_uses_global_model(trained):
    registry, report = trained
    assert report["metrics"]["disco"]["fallback_to_global"] == ["chat"]
    assert report["metrics"]["disco"]["domains"]["chat"]["model"] == "global"
    stem, _ = artifact_stem(registry, "disco", "chat")
    assert stem.name == "global"
    assert isinstance(make_policy("disco", domain="chat", registry=str(registry)), DiscoPolicy)


def test_if_new_traces_trigger(traces, tmp_path):
    root, registry = tmp_path / "run", tmp_path / "registry"
    shutil.copytree(traces, root)
    first = retrain([root], registry, min_rows=1000, steps=20)
    assert first["retrained"]
    skipped = retrain([root], registry, if_new_traces=1)
    assert skipped == {"retrained": False, "new_rows": 0, "reason": "0 new trace rows < 1"}
    extra = synthetic_traces(30, 5, "run-b")
    write(extra, root, "code", "part-1")
    assert not retrain([root], registry, if_new_traces=extra.num_rows + 1)["retrained"]
    again = retrain([root], registry, if_new_traces=extra.num_rows, min_rows=1000, steps=20)
    assert again["versions"]["disco"] == "v0002" == latest_version(registry, "disco")
    assert make_policy("disco", domain="code", registry=str(registry)).version == "v0002"
    old, _ = artifact_stem(registry, "disco", "code", version="v0001")
    assert Path(f"{old}.safetensors").is_file()  # older versions stay loadable


def test_cli_entrypoint_skips_quickly(traces, tmp_path, capsys):
    assert retrain_module.main(["--traces", str(traces), "--out", str(tmp_path), "--if-new-traces", str(10**9)]) == 0
    assert json.loads(capsys.readouterr().out)["retrained"] is False


def test_corrupt_and_drifted_files_are_skipped(traces, tmp_path, caplog):
    root = tmp_path / "run"
    shutil.copytree(traces, root)
    (root / "traces" / "domain=code" / "garbage.parquet").write_bytes(b"PAR1 not really parquet")
    table = synthetic_traces(10, 7, "run-c")
    depth = FILE_SCHEMA.get_field_index("depth")
    write(table.set_column(depth, "depth", table["depth"].cast(pa.float64())), root, "math", "drifted")
    report = retrain([root], tmp_path / "registry", min_rows=1000, steps=20)
    assert report["retrained"] and len(report["skipped_files"]) == 2
    assert "2 trace file(s) skipped as corrupt or schema-drifted" in caplog.text
    assert "run-c" not in report["data"]["runs"]
    assert not retrain([root], tmp_path / "registry", if_new_traces=1)["retrained"]  # a bad file never retriggers


def test_streaming_reads_batches_of_needed_columns(traces):
    files, bad = find_trace_files([traces])
    assert not bad and len(files) == 3
    batches = list(iter_batches(max(files, key=lambda f: f.rows), batch_size=100))
    assert len(batches) > 5 and all(b.num_rows <= 100 for b in batches)
    assert set(batches[0].schema.names) == set(COLUMNS) | {"hidden", "domain", "draft_source"}  # draft_token, policy, ... never read
    small, large = read_traces_streaming(files, batch_size=100), read_traces_streaming(files)
    np.testing.assert_array_equal(small.features, large.features)
    np.testing.assert_array_equal(small.prompt_key, large.prompt_key)
    assert small.hidden.shape == (len(small.domain), HIDDEN)
    sampled = read_traces_streaming(files, max_hidden_rows=len(small.domain) // 4)
    assert 0 < len(sampled.hidden_index) < len(small.domain) // 2  # whole prompts subsampled


def test_cost_estimate_and_static_replay():
    rounds = np.array([[k, 0.3 * k, 1.0 + 0.1 * (k + 1)] for k in (2, 4, 8)], np.float32)
    costs = estimate_costs(rounds)
    assert costs.draft_ms == pytest.approx(0.3) and costs.verify_per_token_ms == pytest.approx(0.1, abs=1e-5)
    # two rounds of 4 tokens: the first all accepted, the second rejected at depth 2
    key, it = np.array([1] * 4 + [1] * 4), np.array([0] * 4 + [1] * 4)
    depth, accepted = np.array([1, 2, 3, 4] * 2), np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
    replay = build_rounds(key, it, depth, accepted, np.full(8, 0.5))
    flat = Costs(draft_ms=0.1, verify_base_ms=1.0, verify_per_token_ms=0.0)
    assert rate(replay, static_lengths(replay, 4), flat) == pytest.approx((5 + 2) / (2 * 1.4))
    assert rate(replay, static_lengths(replay, 1), flat) == pytest.approx((2 + 2) / (2 * 1.1))
    assert best_static(replay, flat)[0] == 4


def test_run_dirs_contribute_only_committed_trace_files(tmp_path):
    table = synthetic_traces(8, 3, "run-s", prefix="s")
    traces = table.append_column("domain", pa.array(["code"] * table.num_rows))
    results = pa.Table.from_pylist([{"id": i, "domain": "code"} for i in sorted(set(table["prompt_id"].to_pylist()))], schema=RESULT_SCHEMA)
    with RunSink(tmp_path / "run-s", RunMeta("run-s", "target", "draft")) as sink:
        sink.commit(results, traces)
    pq.write_table(synthetic_traces(4, 4, "run-x"), tmp_path / "run-s" / "traces" / "domain=code" / "part-stray.parquet")
    loose = write(synthetic_traces(4, 5, "run-y"), tmp_path / "loose", "math", "part-0")
    files, bad = find_trace_files([tmp_path])
    assert not bad and [f.domain for f in files] == ["math", "code"]
    assert files[0].path == str(loose.resolve()) and files[1].rows == table.num_rows  # no results/, no stray file
