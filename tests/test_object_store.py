"""Runs on an object store: the sink's commit protocol, prompts read from a bucket, a SIGKILLed driver
resumed exactly once, `specray report` / `specray retrain` on a run in a bucket, and refusals that name
the URI. Everything goes over HTTP to a real S3-compatible server on 127.0.0.1 (tests/s3kit.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from s3kit import CREDENTIALS, S3Server, moto_auth
from test_sink import META, TRACES_PER_ID, batch, errors, ids_of
from specray.data.readers import DatasetError, ReaderConfig, read_prompts
from specray.distributed.object_run import LEASE, MANIFEST_DIR
from specray.distributed.sink import RunMeta, RunSink, SinkError, read_errors, read_results, read_traces, run_records
from specray.storage import StorageError, resolve

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture(scope="module")
def s3():
    """The server, with credentials in the environment as a cloud user has them (the endpoint is not: each
    test says how it reaches the store, by storage.endpoint / endpoint= or by AWS_ENDPOINT_URL)."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in CREDENTIALS.items():
            env.setenv(name, value)
        env.delenv("AWS_ENDPOINT_URL", raising=False)
        server = S3Server().start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def run_uri(s3, monkeypatch):
    """A run prefix in a fresh bucket, readable through AWS_ENDPOINT_URL (how report/retrain users reach it)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    return f"s3://{s3.new_bucket()}/runs/r1"


def keys(s3, uri: str) -> list[str]:
    bucket_and_prefix = uri.removeprefix("s3://")
    infos = s3.filesystem().get_file_info(pafs.FileSelector(bucket_and_prefix, recursive=True, allow_not_found=True))
    return sorted(i.path[len(bucket_and_prefix) + 1:] for i in infos if i.type == pafs.FileType.File)


def data_keys(s3, uri: str) -> list[str]:
    return [k for k in keys(s3, uri) if k.endswith(".parquet")]


# ---- the sink on S3 -------------------------------------------------------------------------------


def test_round_trip_on_s3_commits_by_objects_and_any_reader_sees_the_rows(s3, run_uri):
    code, code_traces = batch(["a", "b"], "code")
    math, math_traces = batch(["c"], "math")
    with RunSink(run_uri, META, endpoint=s3.endpoint) as sink:
        assert sink.commit(code, code_traces, errors(["e"])) == 3
        sink.flush()
        sink.commit(math, math_traces)
        assert keys(s3, run_uri).count(LEASE) == 1  # held while the sink is open
    got = read_results(run_uri).sort_by("id")
    assert got.to_pylist() == pa.concat_tables([code, math]).sort_by("id").to_pylist()
    assert read_traces(run_uri).num_rows == 3 * TRACES_PER_ID and ids_of(read_errors(run_uri)) == ["e"]
    listing = keys(s3, run_uri)
    assert [k for k in listing if k.startswith(f"{MANIFEST_DIR}/")] == [f"{MANIFEST_DIR}/{i:08d}.json" for i in range(3)]
    assert LEASE not in listing and not any(k.startswith("_tmp") for k in listing)
    assert s3.filesystem().open_input_stream(f"{run_uri[5:]}/config.yaml").read().decode() == META.config_yaml
    # readers that know nothing of specray see exactly the committed rows
    fs = s3.filesystem()
    base = run_uri.removeprefix("s3://")
    plain = ds.dataset(f"{base}/results", filesystem=fs, format="parquet", partitioning="hive").to_table()
    assert sorted(plain["id"].to_pylist()) == ["a", "b", "c"]
    frame = pd.read_parquet(f"{base}/traces", filesystem=fs)
    assert len(frame) == 3 * TRACES_PER_ID


def test_an_uncommitted_file_is_invisible_and_only_the_owning_run_removes_it(s3, run_uri):
    with RunSink(run_uri, META, endpoint=s3.endpoint) as sink:
        sink.commit(*batch(["a"]))
    orphan = "results/domain=code/part-000009-000-0123abcd.parquet"  # as a writer killed before its commit leaves one
    user_file = "results/domain=code/notes.parquet"
    fs = s3.filesystem()
    for name in (orphan, user_file):
        with fs.open_output_stream(f"{run_uri[5:]}/{name}") as f:
            pq.write_table(batch(["zz"])[0].drop_columns(["domain"]), f)
    assert ids_of(read_results(run_uri)) == ["a"]  # readers list commits, never data files
    with pytest.raises(SinkError, match="another run's outputs"):
        RunSink(run_uri, RunMeta("other", target="another-target", draft="drf"), endpoint=s3.endpoint)
    assert orphan in data_keys(s3, run_uri)  # a refused session deleted nothing
    with RunSink(run_uri, META, endpoint=s3.endpoint) as sink:
        assert sink.committed_ids() == {"a"}
    assert orphan not in data_keys(s3, run_uri) and user_file in data_keys(s3, run_uri)


def test_a_second_writer_is_refused_while_the_first_holds_the_lease(s3, run_uri):
    first = RunSink(run_uri, META, endpoint=s3.endpoint)
    with pytest.raises(SinkError, match=f"{run_uri}: another process is writing"):
        RunSink(run_uri, META, endpoint=s3.endpoint)
    first.close()
    RunSink(run_uri, META, endpoint=s3.endpoint).close()


# A writer that commits batch A, then is SIGKILLed after its data files of batch B are PUT and before
# the commit object of B (or right after it, with CRASH=after).
CRASHING_WRITER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_sink import META, batch, errors
from specray.distributed.object_run import ObjectRun
from specray.distributed.sink import RunSink

uri, endpoint, crash = sys.argv[1:4]
die = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
sink = RunSink(uri, META, endpoint=endpoint)
sink.commit(*batch(["a0", "a1"]), errors(["ea"]))
sink.flush()
real_append = ObjectRun.append
ObjectRun.append = die if crash == "before" else (lambda self, record: (real_append(self, record), die()))
sink.commit(*batch(["b0", "b1"], "math"), errors(["eb"]))
sink.flush()
"""


@pytest.mark.parametrize("crash, committed", [("before", {"a0", "a1", "ea"}), ("after", {"a0", "a1", "ea", "b0", "b1", "eb"})])
def test_sigkill_between_data_and_commit_objects_resumes_exactly_once(s3, run_uri, crash, committed):
    script = CRASHING_WRITER.format(tests=str(TESTS))
    proc = subprocess.run([sys.executable, "-c", script, run_uri, s3.endpoint, crash], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert set(read_results(run_uri)["id"].to_pylist()) | set(read_errors(run_uri)["id"].to_pylist()) == committed
    assert len(data_keys(s3, run_uri)) == 6  # results, traces, errors of a and of b, whose commit may be missing
    with RunSink(run_uri, META, endpoint=s3.endpoint) as sink:  # the lease of a dead local process lapses at once
        assert sink.committed_ids() == committed
        sink.commit(*batch(["b0", "b1"], "math"), errors(["eb"]))
    assert ids_of(read_results(run_uri)) == ["a0", "a1", "b0", "b1"] and ids_of(read_errors(run_uri)) == ["ea", "eb"]
    listed = {f for record in run_records(run_uri)[1:] for f in record["files"]}
    assert set(data_keys(s3, run_uri)) == listed  # nothing but committed files under results/, traces/, errors/


# ---- reading prompts from a bucket ----------------------------------------------------------------


def test_prompts_stream_from_s3_parquet_row_groups_and_jsonl_with_error_rows(s3, monkeypatch):
    bucket, fs = s3.new_bucket(), s3.filesystem()
    n = 2500
    table = pa.table({"id": [f"p{i}" for i in range(n)], "prompt": [f"say {i}" if i % 500 else "  " for i in range(n)]})
    with fs.open_output_stream(f"{bucket}/in/part-0.parquet") as f:
        pq.write_table(table, f, row_group_size=500)
    with fs.open_output_stream(f"{bucket}/p.jsonl") as f:
        f.write(b'{"id": "j1", "prompt": "hi"}\n{"id": "j2"}\nnot json\n{"id": "j1", "prompt": "again"}\n')
    read = lambda uri: [b for b in read_prompts(uri, ReaderConfig(batch_size=256), endpoint=s3.endpoint)]
    batches = read(f"s3://{bucket}/in/")
    rows = [r for b in batches for r in b.rows]
    bad = [e for b in batches for e in b.errors]
    assert len(rows) == n - 5 and len(bad) == 5 and all("empty" in e.reason for e in bad)
    assert bad[0].source == f"s3://{bucket}/in/part-0.parquet"
    jsonl = read(f"s3://{bucket}/p.jsonl")
    assert [r.id for b in jsonl for r in b.rows] == ["j1"]
    assert sorted(e.reason.split(" (")[0] for b in jsonl for e in b.errors) == sorted(
        [e.reason.split(" (")[0] for e in _local_errors(Path(os.environ.get("TMPDIR", "/tmp")))])


def _local_errors(tmp: Path) -> list:
    """The same bad JSONL lines read from a local file: the errors must be the same."""
    path = tmp / f"specray-s3-{os.getpid()}.jsonl"
    path.write_bytes(b'{"id": "j1", "prompt": "hi"}\n{"id": "j2"}\nnot json\n{"id": "j1", "prompt": "again"}\n')
    try:
        return [e for b in read_prompts(path) for e in b.errors]
    finally:
        path.unlink()


# ---- refusals -------------------------------------------------------------------------------------


def test_a_bucket_that_does_not_exist_is_named(s3):
    with pytest.raises(SinkError, match=r"s3://no-such-bucket-x/run: .*bucket 'no-such-bucket-x' does not exist"):
        RunSink("s3://no-such-bucket-x/run", META, endpoint=s3.endpoint)
    with pytest.raises(DatasetError, match=r"s3://no-such-bucket-x/p.jsonl: .*does not exist"):
        read_prompts("s3://no-such-bucket-x/p.jsonl", endpoint=s3.endpoint)


def test_missing_credentials_are_named_before_any_request(s3, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws either
    with pytest.raises(SinkError, match=r"s3://b/run: no AWS credentials"):
        RunSink("s3://b/run", META, endpoint=s3.endpoint)


def test_wrong_credentials_are_named(s3, monkeypatch):
    bucket = s3.new_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAKEY")
    with moto_auth():
        with pytest.raises(SinkError, match=rf"s3://{bucket}/run: access denied: missing or wrong credentials"):
            RunSink(f"s3://{bucket}/run", META, endpoint=s3.endpoint)


def test_an_unknown_scheme_is_named():
    with pytest.raises(StorageError, match=r"unknown scheme 'nosuch' in 'nosuch://b/run'"):
        resolve("nosuch://b/run")


def test_a_bucket_root_or_a_foreign_prefix_is_refused(s3):
    bucket, fs = s3.new_bucket(), s3.filesystem()
    with pytest.raises(SinkError, match="bucket root"):
        RunSink(f"s3://{bucket}", META, endpoint=s3.endpoint)
    with fs.open_output_stream(f"{bucket}/mine/report.csv") as f:
        f.write(b"a,b\n")
    with pytest.raises(SinkError, match=r"is not empty and is not a specray run \(it holds 'report.csv'\)"):
        RunSink(f"s3://{bucket}/mine", META, endpoint=s3.endpoint)
    assert fs.get_file_info(f"{bucket}/mine/report.csv").type == pafs.FileType.File


# ---- the job on S3: a SIGKILLed driver, a rerun, then report and retrain on the bucket ----------------


def test_a_sigkilled_driver_on_s3_resumes_exactly_once_and_report_and_retrain_read_the_run(pair, s3, run_uri, local_ray,
                                                                                          tmp_path, capsys):
    import ray

    from jobkit import assert_exactly_once, good_rows
    from specray.cli import main
    from specray.config import load_config
    from specray.distributed.job import run_job
    from specray.training.trace_reader import find_trace_files

    bucket, fs, rows = run_uri.split("/")[2], s3.filesystem(), good_rows(36)
    with fs.open_output_stream(f"{bucket}/prompts/part-0.parquet") as f:
        pq.write_table(pa.Table.from_pylist(rows + [{"id": "blank", "prompt": "   ", "domain": None}]), f)
    overrides = [f"models.target={pair[0]}", f"models.draft={pair[1]}", f"data.path=s3://{bucket}/prompts/",
                 f"output.dir={run_uri}", f"storage.endpoint={s3.endpoint}", "generation.max_new_tokens=32",
                 "generation.batch_size=2", "output.rows_per_file=1", "cluster.num_workers=2"]
    commits = lambda: max(0, len([k for k in keys(s3, run_uri) if k.startswith(f"{MANIFEST_DIR}/")]) - 1)
    driver_env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}  # the driver has only storage.endpoint
    with open(tmp_path / "driver.log", "wb") as log:
        driver = subprocess.Popen([sys.executable, "jobs/generate.py", *overrides,
                                   f"cluster.address={ray.get_runtime_context().gcs_address}"],
                                  cwd=REPO, stdout=log, stderr=log, env=driver_env)
        deadline = time.monotonic() + 120
        while commits() < 3 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    first = commits()
    assert 3 <= first and driver.returncode == -signal.SIGKILL, (tmp_path / "driver.log").read_text()[-2000:]
    summary = run_job(load_config(None, overrides))
    assert summary["skipped"] >= 1 and summary["skipped"] + summary["results"] + summary["errors"] == len(rows) + 1
    assert_exactly_once(run_uri, {r["id"] for r in rows})
    assert read_errors(run_uri)["id"].to_pylist() == ["blank"]
    listed = {f for record in run_records(run_uri)[1:] for f in record["files"]}
    assert set(data_keys(s3, run_uri)) == listed  # only committed files under results/, traces/, errors/
    plain = ds.dataset(f"{run_uri[5:]}/results", filesystem=fs, format="parquet", partitioning="hive").to_table()
    assert sorted(plain["id"].to_pylist()) == sorted(r["id"] for r in rows)

    traces = read_traces(run_uri)
    files, bad = find_trace_files([f"s3://{bucket}/runs"])
    assert not bad and sum(f.rows for f in files) == traces.num_rows and all(f.path.startswith("s3://") for f in files)
    assert main(["report", run_uri, "--out", str(tmp_path / "report")]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["all"]["drafted_tokens"] == sum(read_results(run_uri)["drafted"].to_pylist())
    assert main(["retrain", "--traces", run_uri, "--out", str(tmp_path / "registry"), "--min-rows", "50", "--steps", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["retrained"] and report["data"]["rows"] == traces.num_rows


# ---- a policy registry on S3 ------------------------------------------------------------------------


def test_a_registry_on_s3_publishes_versions_that_a_job_pins_and_loads(s3, run_uri, pair, tmp_path, monkeypatch):
    import torch

    from jobkit import config, write_jsonl
    from specray.config import ConfigError, load_config
    from specray.distributed.resolve import domain_policy
    from specray.policies.disco import FEATURES, DiscoClassifier
    from specray.policies.registry import artifact_stem, publish

    registry = run_uri.rsplit("/", 2)[0] + "/registry"  # s3://<bucket>/registry
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in DiscoClassifier(hidden=4).state_dict().items()}
    meta = {"kind": "disco", "features": FEATURES, "tau": 0.5, "k_max": 8}
    assert [publish(registry, "disco", {"global": (state, meta)}) for _ in range(2)] == ["v0001", "v0002"]
    stem, version = artifact_stem(registry, "disco", "code")
    assert (stem, version) == (f"{registry}/disco/v0002/global", "v0002")
    model, loaded = DiscoClassifier.load(stem)
    assert loaded["version"] == "v0002" and torch.equal(model.state_dict()["fc1.weight"], state["fc1.weight"])

    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "w3"}])
    cfg = config(pair, data, tmp_path / "out", "policy.default=disco", f"policy.registry={registry}")
    pinned = domain_policy(cfg.policy, "code")
    assert pinned.version == "v0002" and f"path={registry}/disco/v0002/global" in pinned.spec
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(ConfigError, match="policy.registry: .* AWS_ENDPOINT_URL"):
        load_config(None, [f"policy.registry={registry}", f"storage.endpoint={s3.endpoint}"])


@pytest.mark.parametrize("key", ["data.path", "output.dir", "policy.registry"])
def test_an_unknown_scheme_fails_config_validation_naming_the_key(key):
    from specray.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=rf"{key}: unknown scheme 'nosuch' in 'nosuch://b/x'"):
        load_config(None, [f"{key}=nosuch://b/x"])


def test_generate_refuses_a_missing_bucket_in_one_line_before_any_model_loads(s3, pair, tmp_path, capsys, local_ray):
    from specray.cli import main

    # the target does not exist: had it been loaded, the error would be about it (the draft must exist,
    # since a missing draft is itself refused before any model loads)
    code = main(["generate", "models.target=/no/such/model", f"models.draft={pair[1]}", "data.builtin=quick",
                 "output.dir=s3://no-such-bucket-y/run", f"storage.endpoint={s3.endpoint}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "output.dir s3://no-such-bucket-y/run: bucket 'no-such-bucket-y' does not exist" in err


def test_a_tampered_commit_object_is_named_not_followed(s3, run_uri):
    from specray.distributed.manifest import ManifestError

    RunSink(run_uri, META, endpoint=s3.endpoint).close()
    fs, base = s3.filesystem(), run_uri.removeprefix("s3://")
    with fs.open_output_stream(f"{base}/{MANIFEST_DIR}/00000001.json") as f:
        f.write(json.dumps({"kind": "commit", "files": ["results/../../elsewhere/x.parquet"], "ids": ["x"]}).encode())
    with pytest.raises(ManifestError, match="lies outside results/, traces/, errors/"):
        read_results(run_uri)
    with fs.open_output_stream(f"{base}/{MANIFEST_DIR}/00000001.json") as f:
        f.write(b'{"kind": "comm')
    with pytest.raises(ManifestError, match=rf"{MANIFEST_DIR}/00000001.json is corrupt"):
        read_results(run_uri)
