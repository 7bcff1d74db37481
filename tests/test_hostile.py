"""Hostile input, as a user who means harm or makes every mistake would give it: the job, the run
directory, the config, the policy registry, `specray report` and `specray retrain`.

The rule every case checks: a clear error naming the row, key or file, and nothing lost, mixed or
deleted that the run did not create. Either the job fails at start, or it runs and every input
record ends up exactly once in results/ or errors/. Cases are grouped by kind (sections below); the
count per kind is in docs/reliability.md.

Runs on the tiny seeded pair of tests/conftest.py and a local Ray instance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobkit import config, write_jsonl
from specray.data.readers import ReaderConfig, read_prompts
from specray.data.rows import ErrorRow, errors_table
from specray.distributed.job import run_job
from specray.distributed.sink import RunMeta, RunSink, SinkError, read_errors, read_results
from specray.schema import RESULT_SCHEMA, TRACE_SCHEMA

pytestmark = pytest.mark.usefixtures("local_ray")


def read_all(path: Path, **kwargs):
    rows, errors = [], []
    for batch in read_prompts(path, ReaderConfig(**kwargs)):
        rows += batch.rows
        errors += batch.errors
    return rows, errors


def result_rows(ids: list[str], prompts: list[str]) -> pa.Table:
    n = len(ids)
    return pa.table({
        "id": ids, "domain": ["chat"] * n, "prompt": prompts, "output_text": ["o"] * n, "output_tokens": [[1]] * n,
        "prompt_tokens": [1] * n, "new_tokens": [1] * n, "iterations": [1] * n, "drafted": [0] * n, "accepted": [0] * n,
        "wall_ms": [1.0] * n, "stop_reason": ["eos"] * n, "policy": ["target"] * n, "policy_version": [""] * n,
        "target": ["t"] * n, "draft": ["d"] * n,
    }, schema=RESULT_SCHEMA)


# ---- ids: error rows never shadow a result ---------------------------------------------------------


@pytest.fixture(scope="module")
def id_run(pair, tmp_path_factory):
    """The issue's reproductions in one JSONL (a BOM first), run twice: the second run must add nothing."""
    tmp = tmp_path_factory.mktemp("ids")
    lines = [
        b'\xef\xbb\xbf{"id": "bom", "prompt": "w3 w4"}',  # line 1: a UTF-8 BOM before a valid row
        b'{"id": "line:3", "prompt": "w5 w6"}',  # line 2: a real id that looks like a position
        b'{"id": "x", "prompt": "w7 w8"}',  # line 3
        b'{"id": "x", "prompt": "w9"}',  # line 4: a duplicate, keyed by its position line:4 ...
        b'{"id": "line:4", "prompt": "w10"}',  # line 5: ... while a real row has the id "line:4"
        b'{"id": "m"}',  # line 6: no prompt, owns the id "m"
        b'{"id": "m", "prompt": "w11"}',  # line 7: a valid row reusing it: a duplicate, not a shadowed result
        b'{"id": "bad\\ud800", "prompt": "w12"}',  # line 8: an id with a lone surrogate
        b'{"id": "s", "prompt": "w13 \\udc00"}',  # line 9: a prompt with a lone surrogate
        b'{"id": "line:3", "prompt": "w14"}',  # line 10: a duplicate of the position-like id
    ]
    data = tmp / "c.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    cfg = config(pair, data, tmp / "out", "cluster.num_workers=1", "generation.max_new_tokens=4")
    first = run_job(cfg)
    second = run_job(cfg)
    return cfg, first, second


def test_no_error_row_takes_a_valid_rows_place(id_run):
    cfg, first, _ = id_run
    results = {r["id"]: r["prompt"] for r in read_results(cfg.output.dir).to_pylist()}
    assert results == {"bom": "w3 w4", "line:3": "w5 w6", "x": "w7 w8", "line:4": "w10"}
    errors = read_errors(cfg.output.dir).to_pylist()
    by_key = {(e["id"], e["position"]): e["reason"] for e in errors}
    assert set(by_key) == {(None, "line:4"), ("m", "line:6"), (None, "line:7"), (None, "line:8"), ("s", "line:9"),
                           (None, "line:10")}
    assert "duplicate id 'x'" in by_key[(None, "line:4")] and "duplicate id 'm'" in by_key[(None, "line:7")]
    assert "missing prompt column 'prompt'" in by_key[("m", "line:6")]
    assert (first["results"], first["errors"]) == (4, 6)


def test_a_lone_surrogate_id_is_an_error_row_with_its_escaped_form(id_run):
    cfg, _, _ = id_run
    errors = {e["position"]: e for e in read_errors(cfg.output.dir).to_pylist()}
    assert errors["line:8"]["id"] is None and "bad\\ud800" in errors["line:8"]["reason"]
    assert "lone surrogate" in errors["line:9"]["reason"]


def test_a_rerun_adds_nothing_and_skips_every_record(id_run):
    cfg, _, second = id_run
    assert (second["results"], second["errors"], second["skipped"]) == (0, 0, 10)
    assert read_results(cfg.output.dir).num_rows == 4 and read_errors(cfg.output.dir).num_rows == 6


def test_parquet_explicit_id_that_looks_like_a_position_keeps_its_result(tmp_path):
    """Row 0's id is "row:2"; row 2 has no id, so its position "row:2" would be its id: a duplicate,
    committed first, must not drop row 0's result."""
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": ["row:2", "b", None], "prompt": ["first", "second", "third"]}), path)
    rows, errors = read_all(path)
    assert [r.id for r in rows] == ["row:2", "b"]
    assert [(e.id, e.position) for e in errors] == [(None, "row:2")] and "has no id" in errors[0].reason
    with RunSink(tmp_path / "out", RunMeta("r", "t", "d")) as sink:
        sink.commit(RESULT_SCHEMA.empty_table(), TRACE_SCHEMA.empty_table(), errors_table(errors))
        sink.flush()  # the error row is committed first, as a fast reader would
        sink.commit(result_rows([r.id for r in rows], [r.prompt for r in rows]), TRACE_SCHEMA.empty_table())
    assert sorted(read_results(tmp_path / "out")["id"].to_pylist()) == ["b", "row:2"]
    with RunSink(tmp_path / "out", RunMeta("r", "t", "d")) as sink:
        assert sink.committed_ids() == {"b", "row:2"} and sink.committed_positions() == {"row:2"}


def test_a_manifest_keeps_ids_and_positions_apart(tmp_path):
    with RunSink(tmp_path, RunMeta("r", "t", "d")) as sink:
        sink.commit(RESULT_SCHEMA.empty_table(), TRACE_SCHEMA.empty_table(),
                    errors_table([ErrorRow(None, "f", "bad", "line:1")]))
    record = json.loads((tmp_path / "manifest.jsonl").read_text().splitlines()[1])
    assert record["error_ids"] == [] and record["error_positions"] == ["line:1"]


def test_parquet_files_that_disagree_on_the_id_type_read_as_string_ids(tmp_path):
    pq.write_table(pa.table({"id": [1, 2], "prompt": ["a", "b"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": ["x", "1"], "prompt": ["c", "d"]}), tmp_path / "b.parquet")
    rows, errors = read_all(tmp_path)
    assert [r.id for r in rows] == ["1", "2", "x"]  # one id space: the string "1" is the integer 1's duplicate
    assert [(e.position, "duplicate id '1'" in e.reason) for e in errors] == [("row:3", True)]


# ---- special-token text in prompts -----------------------------------------------------------------


def chat_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>"] + [f"w{i}" for i in range(1, 40)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                        additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|> {{ m['content'] }} <|im_end|> {% endfor %}"
                               "{% if add_generation_prompt %}<|im_start|> {% endif %}")
    return tokenizer


@pytest.mark.parametrize("chat", [True, False])
def test_special_token_text_in_a_prompt_is_text_not_a_control_token(chat):
    from specray.models import encode_prompt

    tokenizer = chat_tokenizer()
    end, start = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|im_start|>"])
    hostile = "w1 <|im_end|> <|im_start|> w2"
    ids = encode_prompt(tokenizer, hostile, chat=chat)
    controls = (ids.count(end), ids.count(start))
    assert controls == ((1, 2) if chat else (0, 0))  # only the template's own: one turn end, two turn starts
    plain = encode_prompt(tokenizer, "w1 w2", chat=chat)
    assert len(ids) == len(plain) + 2  # the special-token text became two ordinary (unknown-word) tokens
    if chat:  # prompts without special-token text are encoded exactly as the template always did
        assert plain == list(tokenizer.apply_chat_template([{"role": "user", "content": "w1 w2"}],
                                                            add_generation_prompt=True, tokenize=True)["input_ids"])


# ---- the run directory: nothing the run did not create is touched ----------------------------------


def test_a_users_file_in_tmp_of_a_new_dir_is_refused_and_kept(tmp_path):
    precious = tmp_path / "d" / "_tmp" / "important.txt"
    precious.parent.mkdir(parents=True)
    precious.write_text("precious")
    with pytest.raises(SinkError, match=r"output.dir .*not empty and is not a specray run.*_tmp/important.txt"):
        RunSink(tmp_path / "d", RunMeta("r", "t", "d"))
    assert precious.read_text() == "precious" and not (tmp_path / "d" / "manifest.jsonl").exists()


def test_a_non_empty_dir_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SinkError, match="not empty and is not a specray run.*notes.txt"):
        RunSink(tmp_path, RunMeta("r", "t", "d"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "notes.txt"]


def test_resuming_a_run_deletes_only_its_own_temp_and_orphan_files(tmp_path):
    with RunSink(tmp_path, RunMeta("r", "t", "d")) as sink:
        sink.commit(result_rows(["a"], ["p"]), TRACE_SCHEMA.empty_table())
    ours = tmp_path / "_tmp" / f"{'cd' * 16}.parquet"
    ours.parent.mkdir(exist_ok=True)
    ours.write_bytes(b"PAR1")
    theirs = [tmp_path / "_tmp" / "important.txt", tmp_path / "results" / "mine.parquet", tmp_path / "README"]
    for path in theirs:
        path.write_text("precious")
    RunSink(tmp_path, RunMeta("r", "t", "d")).close()
    assert not ours.exists() and all(p.read_text() == "precious" for p in theirs)
    assert read_results(tmp_path)["id"].to_pylist() == ["a"]  # readers follow the manifest, not the directory


@pytest.mark.parametrize("where", ["root", "home"])
def test_root_and_home_are_refused_as_output_dir(pair, tmp_path, where):
    from specray.config import ConfigError

    out = "/" if where == "root" else str(Path.home())
    with pytest.raises(ConfigError, match=r"output.dir: expected a directory of the run's own"):
        config(pair, write_jsonl(tmp_path / "p.jsonl", [{"prompt": "w3"}]), Path(out))
    with pytest.raises(SinkError, match=f"output.dir {out}: is the"):
        RunSink(out, RunMeta("r", "t", "d"))


def test_bench_report_never_deletes_a_dir_it_did_not_make(tmp_path):
    from specray.analysis.bench_report import main

    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(SystemExit):
        main(["--dir", str(tmp_path), "--rows", "10"])
    assert (tmp_path / "keep.txt").read_text() == "precious"


# ---- values that pass a type check but would make every row an error: refused at start -------------


@pytest.mark.parametrize("override, key", [
    ("generation.temperature=inf", "generation.temperature"),
    ("generation.max_new_tokens=100000000", "generation.max_new_tokens"),
    ("generation.seed=" + "9" * 70, "generation.seed"),
    ("policy.per_domain.code.k_max=" + "1" + "0" * 30, "policy.per_domain.code.k_max"),
    ("policy.default=static:100000000", "policy.default"),
    ("policy.default=heuristic:k_max=100000000", "policy.default"),
])
def test_out_of_range_values_fail_at_start_naming_the_key(pair, tmp_path, override, key):
    from specray.config import ConfigError

    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "w3"}])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config(pair, data, tmp_path / "out", "generation.temperature=0.7", override)


def publish_policy(registry: Path, kind: str, tensors=None, **meta):
    """A valid artifact of `kind` in `registry`, with its tensors or JSON tampered as given; returns its stem."""
    import torch

    from specray.policies.artifacts import save_artifact
    from specray.policies.disco import FEATURES, DiscoClassifier
    from specray.policies.registry import publish
    from specray.policies.specdecpp import AcceptanceHead

    torch.manual_seed(0)
    if kind == "disco":
        state, base = DiscoClassifier(hidden=4).state_dict(), {"kind": "disco", "features": FEATURES, "tau": 0.5, "k_max": 8}
    else:
        state, base = AcceptanceHead(8, depth=1).state_dict(), {"kind": "specdecpp", "depth": 1, "h": 0.7, "k_max": 8}
    state = {k: v.clone() for k, v in state.items()}
    version = publish(registry, kind, {"global": (state, base)})
    stem = registry / kind / version / "global"
    if tensors is not None or meta:
        from safetensors.torch import save_file

        weights = {k: v.clone() for k, v in state.items()}
        if tensors is not None:
            tensors(weights)
        save_file({k: v.contiguous() for k, v in weights.items()}, f"{stem}.safetensors")
        stored = json.loads(Path(f"{stem}.json").read_text())
        Path(f"{stem}.json").write_text(json.dumps({**stored, **meta}))
    return stem


def nan_first(key):
    def tamper(w):
        w[key][..., 0] = float("nan")
    return tamper


ARTIFACT_CASES = {
    "disco tau 1e308": ("disco", None, {"tau": 1e308}, "tau must be a number in"),
    "disco tau as a string": ("disco", None, {"tau": "0.5"}, "tau must be a number in"),
    "disco k_max 1e30": ("disco", None, {"k_max": 1e30}, "k_max must be an integer"),
    "disco k_max 10**30": ("disco", None, {"k_max": 10**30}, "k_max must be an integer"),
    "disco k_max true": ("disco", None, {"k_max": True}, "k_max must be an integer"),
    "disco NaN weight": ("disco", nan_first("fc1.weight"), {}, "'fc1.weight' holds NaN"),
    "disco feature_std 0": ("disco", lambda w: w["feature_std"].zero_(), {}, "'feature_std' must be > 0"),
    "disco bool weights": ("disco", lambda w: w.__setitem__("fc2.bias", w["fc2.bias"] > 0), {}, "dtype torch.bool"),
    "disco extra tensor": ("disco", lambda w: w.__setitem__("evil", w["fc2.bias"].clone()), {}, "unexpected tensor"),
    "disco version claimed": ("disco", None, {"version": "v9999"}, "claims version 'v9999'"),
    "specdecpp h as a string": ("specdecpp", None, {"h": "high"}, "h must be a number in"),
    "specdecpp depth not a number": ("specdecpp", None, {"depth": "abc"}, "depth must be an integer"),
    "specdecpp depth huge": ("specdecpp", None, {"depth": 10**9}, "depth must be an integer"),
    "specdecpp extra tensor": ("specdecpp", lambda w: w.__setitem__("x", w["out.bias"].clone()), {}, "unexpected tensor"),
    "specdecpp infinite weight": ("specdecpp", lambda w: w["out.weight"].fill_(float("inf")), {}, "NaN or infinite"),
    "specdecpp bool weights": ("specdecpp", lambda w: w.__setitem__("out.bias", w["out.bias"] > 0), {}, "dtype torch.bool"),
}


@pytest.mark.parametrize("case", sorted(ARTIFACT_CASES))
def test_a_bad_registry_artifact_fails_at_start_naming_the_file(pair, tmp_path, case):
    from specray.config import ConfigError
    from specray.distributed.resolve import domain_policy

    kind, tensors, meta, problem = ARTIFACT_CASES[case]
    stem = publish_policy(tmp_path / "reg", kind, tensors, **meta)
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "w3"}])
    cfg = config(pair, data, tmp_path / "out", f"policy.default={kind}", f"policy.registry={tmp_path / 'reg'}")
    with pytest.raises(ConfigError) as err:
        domain_policy(cfg.policy, "code")
    message = str(err.value)
    assert message.startswith("policy.per_domain.code") and str(stem) in message and problem in message, message


def test_a_valid_registry_artifact_still_loads(pair, tmp_path):
    from specray.distributed.resolve import domain_policy

    for kind in ("disco", "specdecpp"):
        publish_policy(tmp_path / "reg", kind)
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "w3"}])
    for kind in ("disco", "specdecpp"):
        cfg = config(pair, data, tmp_path / "out", f"policy.default={kind}", f"policy.registry={tmp_path / 'reg'}")
        assert domain_policy(cfg.policy, "code").version == "v0001"


def test_a_junk_version_dir_is_ignored_when_publishing(tmp_path):
    (tmp_path / "reg" / "disco" / "v1x").mkdir(parents=True)
    (tmp_path / "reg" / "disco" / "v0007-old").mkdir()
    stem = publish_policy(tmp_path / "reg", "disco")
    assert stem.parent.name == "v0001"


def test_a_version_dir_symlinked_outside_the_registry_is_refused(pair, tmp_path):
    from specray.config import ConfigError
    from specray.distributed.resolve import domain_policy

    outside = publish_policy(tmp_path / "elsewhere", "disco").parent
    json_path = outside / "global.json"
    json_path.write_text(json.dumps({**json.loads(json_path.read_text()), "version": "v0002"}))
    registry = tmp_path / "reg" / "disco"
    registry.mkdir(parents=True)
    (registry / "v0002").symlink_to(outside, target_is_directory=True)
    (registry / "LATEST").write_text("v0002")
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "w3"}])
    cfg = config(pair, data, tmp_path / "out", "policy.default=disco", f"policy.registry={tmp_path / 'reg'}")
    with pytest.raises(ConfigError, match="outside the registry"):
        domain_policy(cfg.policy, "code")


def test_max_new_tokens_past_the_context_window_fails_before_any_row(pair, tmp_path):
    from specray.distributed.job import JobError

    data = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "w3 w4"}])
    cfg = config(pair, data, tmp_path / "out", "generation.max_new_tokens=1024", "cluster.num_workers=1")
    with pytest.raises(JobError, match="generation.max_new_tokens=1024 leaves no room .* context window of 1024"):
        run_job(cfg)
    assert read_results(tmp_path / "out").num_rows == 0 and read_errors(tmp_path / "out").num_rows == 0
    fixed = run_job(config(pair, data, tmp_path / "out", "generation.max_new_tokens=4", "cluster.num_workers=1"))
    assert fixed["results"] == 1  # nothing was produced, so the fixed value may take over the run
    assert "max_new_tokens: 4" in (tmp_path / "out" / "config.yaml").read_text()


# ---- resume: a run's outputs never mix two settings ------------------------------------------------


@pytest.fixture(scope="module")
def resumed(pair, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    data = write_jsonl(tmp / "p.jsonl", [{"id": f"r{i}", "prompt": f"w{3 + i} w9"} for i in range(4)])
    base = ("generation.max_new_tokens=4", "cluster.num_workers=1", "data.limit=2")
    first = run_job(config(pair, data, tmp / "out", *base))
    return pair, data, tmp / "out", base, first


@pytest.mark.parametrize("override, key", [
    ("generation.max_new_tokens=8", "generation.max_new_tokens: 4 -> 8"),
    ("policy.default=static:2", "policy.default: 'heuristic' -> 'static:2'"),
    ("generation.temperature=0.5", "generation.temperature: 0.0 -> 0.5"),
    ("data.truncate=left", "data.truncate: 'none' -> 'left'"),
])
def test_resuming_with_output_changing_settings_is_refused_with_a_diff(resumed, override, key):
    pair, data, out, base, _ = resumed
    with pytest.raises(SinkError, match="other settings that change outputs") as err:
        run_job(config(pair, data, out, *base, override))
    assert key in str(err.value)
    assert read_results(out).num_rows == 2  # nothing of the other setting was written


def test_resuming_with_other_workers_and_batch_size_is_recorded_in_the_manifest(resumed):
    pair, data, out, base, first = resumed
    assert first["results"] == 2
    second = run_job(config(pair, data, out, *base[:2], "data.limit=4", "generation.batch_size=1"))
    assert (second["results"], second["skipped"]) == (2, 2)
    sessions = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if '"session"' in line]
    assert sessions and sessions[-1]["changed"]["generation.batch_size"] == [8, 1]
    assert sessions[-1]["changed"]["data.limit"] == [2, 4]


# ---- hangs: workers Ray can never place ------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    (("cluster.gpus_per_worker=1",), "cluster.gpus_per_worker=1 asked for 1 GPU per worker; the cluster has 0"),
    (("cluster.num_workers=3",), "cluster.num_workers=3 workers need at least 3 CPUs; the cluster has 2"),
])
def test_workers_the_cluster_cannot_place_fail_at_once(pair, tmp_path, overrides, message):
    from specray.distributed.job import JobError

    data = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "w3 w4"}])
    with pytest.raises(JobError) as err:
        run_job(config(pair, data, tmp_path / "out", *overrides))
    assert message in str(err.value)


def test_waiting_for_workers_has_a_timeout():
    import ray

    from specray.distributed.pool import WorkerPool

    @ray.remote(resources={"no_such_resource": 1})
    class Unplaceable:
        def ready(self):
            return "never"

    pool = WorkerPool(lambda slot, generation: Unplaceable.remote(), 1, 1)
    try:
        with pytest.raises(TimeoutError, match="1 of 1 worker"):
            pool.wait_ready(timeout_s=1.0)
    finally:
        pool.shutdown()


# ---- `specray report` and `specray retrain` on bad input: one line naming the file, no traceback -------


def cli(capsys, *argv: str) -> tuple[int, str]:
    from specray.cli import main

    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def small_run(root: Path) -> Path:
    from test_sink import batch

    with RunSink(root, RunMeta("run-1", "tgt", "drf")) as sink:
        sink.commit(*batch(["a", "b"], "code"))
        sink.commit(*batch(["c"], "math"))
    return root


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_report_on_a_damaged_committed_file_names_it(tmp_path, capsys, damage):
    from specray.distributed.sink import committed_files

    run = small_run(tmp_path / "run")
    victim = committed_files(run, "traces")[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    code, err = cli(capsys, "report", str(run))
    assert code == 2 and err.count("\n") == 1 and str(victim) in err and "Traceback" not in err
    assert not (run / "report").exists()


@pytest.mark.parametrize("what", ["missing", "not a run"])
def test_report_on_a_dir_that_is_not_a_run(tmp_path, capsys, what):
    target = tmp_path / "nope"
    if what == "not a run":
        target.mkdir()
    code, err = cli(capsys, "report", str(target))
    assert code == 2 and err.count("\n") == 1 and str(target) in err and "Traceback" not in err
    assert (not target.exists()) if what == "missing" else list(target.iterdir()) == []


def test_report_never_writes_bare_nan_into_metrics_json(tmp_path, capsys):
    from specray.distributed.sink import committed_files

    run = small_run(tmp_path / "run")
    for path in committed_files(run, "traces"):  # trace files that lack `entropy`: it reads as null
        pq.write_table(pq.read_table(path).drop_columns(["entropy"]), path)
    code, _ = cli(capsys, "report", str(run))
    text = (run / "report" / "metrics.json").read_text()

    def refuse(constant):
        raise ValueError(f"bare {constant} in metrics.json")

    assert code == 0 and json.loads(text, parse_constant=refuse)["all"]["drafted_tokens"] > 0


def test_retrain_skips_a_trace_file_with_nan_entropy(tmp_path):
    from test_retrain import synthetic_traces, write

    from specray.training.retrain import retrain

    write(synthetic_traces(300, 0, "run-a"), tmp_path / "t", "code", "good")
    bad = synthetic_traces(30, 1, "run-b")
    entropy = bad.schema.get_field_index("entropy")
    bad_path = write(bad.set_column(entropy, "entropy", pa.array([float("nan")] * bad.num_rows, pa.float32())),
                     tmp_path / "t", "math", "nan")
    report = retrain([tmp_path / "t"], tmp_path / "reg", min_rows=100_000, steps=5)
    assert report["retrained"] and "run-b" not in report["data"]["runs"]
    assert [s.split(": ")[0] for s in report["skipped_files"]] == [str(bad_path)] and "NaN" in report["skipped_files"][0]


@pytest.mark.parametrize("what", ["missing", "errors only", "empty dir"])
def test_retrain_with_nothing_to_train_on_is_one_line(tmp_path, capsys, what):
    target = tmp_path / "runs"
    if what == "errors only":
        with RunSink(target, RunMeta("r", "t", "d")) as sink:
            sink.commit(RESULT_SCHEMA.empty_table(), TRACE_SCHEMA.empty_table(), errors_table([ErrorRow("a", "f", "bad")]))
    elif what == "empty dir":
        target.mkdir()
    code, err = cli(capsys, "retrain", "--traces", str(target), "--out", str(tmp_path / "reg"))
    assert code == 2 and err.count("\n") == 1 and str(target) in err and "Traceback" not in err
    assert not (tmp_path / "reg").exists()


# ---- the same, through `specray generate`: one line on stderr, exit 2, no traceback -----------------


@pytest.mark.parametrize("case", ["root output dir", "foreign output dir", "no GPU", "temperature inf", "bad artifact"])
def test_generate_cli_refuses_in_one_line(pair, tmp_path, capsys, case):
    data = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "w3 w4"}])
    target, draft = pair
    args = [f"models.target={target}", f"models.draft={draft}", f"data.path={data}", f"output.dir={tmp_path / 'out'}",
            "generation.max_new_tokens=4"]
    if case == "root output dir":
        args.append("output.dir=/")
    elif case == "foreign output dir":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "thesis.tex").write_text("precious")
    elif case == "no GPU":
        args.append("cluster.gpus_per_worker=1")
    elif case == "temperature inf":
        args.append("generation.temperature=inf")
    else:
        publish_policy(tmp_path / "reg", "disco", tau=1e308)
        args += ["policy.default=disco", f"policy.registry={tmp_path / 'reg'}"]
    code, err = cli(capsys, "generate", *args)
    assert code == 2 and err.startswith("specray generate: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 2  # the key or file, and at most a line of detail
    assert not (tmp_path / "out" / "results").exists()
    if case == "foreign output dir":
        assert (tmp_path / "out" / "thesis.tex").read_text() == "precious"
