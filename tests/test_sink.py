"""RunSink: round trips, buffering, resume, and exactly-once across a driver killed at any point."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from specray.distributed.manifest import ManifestError, read_records
from specray.distributed.sink import (
    MANIFEST,
    RunMeta,
    RunSink,
    SinkError,
    read_errors,
    read_results,
    read_traces,
)
from specray.schema import ERROR_SCHEMA, HIDDEN_FIELD, STORED_RESULT_SCHEMA, stored_trace_schema

META = RunMeta(run_id="run-1", target="tgt", draft="drf", config_yaml="models:\n  target: tgt\n")
TRACES_PER_ID = 3


def batch(ids: list[str], domain: str = "code") -> tuple[pa.Table, pa.Table]:
    """Results for `ids` and TRACES_PER_ID trace rows each, every column filled."""
    n = len(ids)
    results = pa.table(
        {
            "id": ids, "domain": [domain] * n, "prompt": [f"p {i}" for i in ids], "output_text": ["o"] * n,
            "output_tokens": [[1, 2, 3]] * n, "prompt_tokens": [4] * n, "new_tokens": [3] * n, "iterations": [2] * n,
            "drafted": [5] * n, "accepted": [3] * n, "wall_ms": [1.5] * n, "stop_reason": ["eos"] * n,
            "policy": ["static:4"] * n, "policy_version": ["v0"] * n, "target": ["tgt"] * n, "draft": ["drf"] * n,
            "draft_source": ["model"] * n,
        }
    ).cast(STORED_RESULT_SCHEMA)
    rows = [(i, d) for i in ids for d in range(1, TRACES_PER_ID + 1)]
    m = len(rows)
    traces = pa.table(
        {
            "run_id": ["run-1"] * m, "source": ["generate"] * m, "prompt_id": [i for i, _ in rows], "domain": [domain] * m,
            "iteration": [0] * m,
            "depth": [d for _, d in rows], "gen_position": [d - 1 for _, d in rows], "draft_token": [7] * m,
            "draft_prob": [0.5] * m, "target_prob": [0.25] * m, "accept_prob": [0.5] * m, "accepted": [True] * m,
            "evaluated": [True] * m, "entropy": [1.0] * m, "topk_probs": [[0.5, 0.25]] * m, "policy": ["static:4"] * m,
            "policy_version": ["v0"] * m, "lookahead": [3] * m, "stop_reason": ["k_max"] * m, "draft_ms": [1.0] * m,
            "verify_ms": [2.0] * m, "draft_source": ["model"] * m,
        }
    ).cast(stored_trace_schema(False))
    return results, traces


def errors(ids: list[str]) -> pa.Table:
    return pa.table({"id": ids, "source": ["worker"] * len(ids), "reason": ["oom"] * len(ids),
                     "position": [None] * len(ids)}, schema=ERROR_SCHEMA)


def ids_of(table: pa.Table, column: str = "id") -> list[str]:
    return sorted(table[column].to_pylist())


def assert_consistent(out: Path, clean: bool = True) -> None:
    """What readers see after any crash: each id once, traces only of committed results.

    `clean`: also no file outside the manifest, as holds once a sink has opened the dir.
    """
    results, traces = read_results(out), read_traces(out)
    assert len(set(results["id"].to_pylist())) == results.num_rows
    assert set(traces["prompt_id"].to_pylist()) <= set(results["id"].to_pylist())
    assert traces.num_rows == TRACES_PER_ID * results.num_rows
    records = read_records(out / MANIFEST)
    listed = {f for r in records[1:] for f in r["files"]}
    kinds = ("results", "traces", "errors")
    on_disk = {p.relative_to(out).as_posix() for kind in kinds for p in out.glob(f"{kind}/**/*.parquet")}
    assert on_disk == listed if clean else on_disk >= listed


def test_round_trip_partitions_by_domain(tmp_path):
    code, code_traces = batch(["a", "b"], "code")
    math, math_traces = batch(["c"], "math")
    with RunSink(tmp_path, META) as sink:
        assert sink.commit(code, code_traces, errors(["e"])) == 3
        assert sink.commit(math, math_traces) == 1
    assert ids_of(read_results(tmp_path)) == ["a", "b", "c"]
    got = read_results(tmp_path).sort_by("id")
    assert got.to_pylist() == pa.concat_tables([code, math]).sort_by("id").to_pylist()
    assert read_traces(tmp_path).sort_by([("prompt_id", "ascending"), ("depth", "ascending")]).to_pylist() == (
        pa.concat_tables([code_traces, math_traces]).to_pylist()
    )
    assert read_errors(tmp_path).to_pylist() == errors(["e"]).to_pylist()
    assert {p.parent.name for p in (tmp_path / "results").rglob("*.parquet")} == {"domain=code", "domain=math"}
    assert "domain" not in pq.read_schema(next((tmp_path / "traces").rglob("*.parquet"))).names
    assert (tmp_path / "config.yaml").read_text() == META.config_yaml
    assert_consistent(tmp_path)


def test_empty_run_reads_empty_tables(tmp_path):
    RunSink(tmp_path, META).close()
    assert read_results(tmp_path).schema == STORED_RESULT_SCHEMA and read_results(tmp_path).num_rows == 0
    assert read_traces(tmp_path).num_rows == 0 and read_errors(tmp_path).num_rows == 0


def test_buffers_until_rows_per_file_then_flush_makes_durable(tmp_path):
    sink = RunSink(tmp_path, META, rows_per_file=6)
    sink.commit(*batch(["a"]))  # 1 result, 3 trace rows: below 6
    assert sink.committed_ids() == set() and not list(tmp_path.rglob("*.parquet"))
    sink.commit(*batch(["b"]))  # 6 trace rows: the code domain is written
    assert sink.committed_ids() == {"a", "b"}
    sink.commit(*batch(["c"], "math"), errors(["x"]))
    assert sink.committed_ids() == {"a", "b"}
    sink.flush()
    assert sink.committed_ids() == {"a", "b", "c", "x"}
    sink.commit(*batch([f"m{i}" for i in range(5)]))  # 15 trace rows in one commit: split into files of <= 6
    assert max(pq.read_metadata(p).num_rows for p in tmp_path.rglob("*.parquet")) <= 6
    sink.close()
    assert_consistent(tmp_path)


def test_duplicate_ids_are_dropped_not_written_twice(tmp_path):
    with RunSink(tmp_path, META) as sink:
        assert sink.commit(*batch(["a", "b"])) == 2
        assert sink.commit(*batch(["a", "b"])) == 0  # pending duplicate
        sink.flush()
        assert sink.commit(*batch(["b", "c"]), errors(["a"])) == 1  # committed duplicates
    assert ids_of(read_results(tmp_path)) == ["a", "b", "c"]
    assert read_errors(tmp_path).num_rows == 0
    assert_consistent(tmp_path)


def test_resume_keeps_committed_ids_and_first_run_id(tmp_path):
    with RunSink(tmp_path, META) as sink:
        sink.commit(*batch(["a"]), errors(["e"]))
    resumed = RunSink(tmp_path, RunMeta(run_id="run-2", target="tgt", draft="drf"))
    assert resumed.committed_ids() == {"a", "e"} and resumed.run_id == "run-1"
    resumed.commit(*batch(["a", "b"]))
    resumed.close()
    assert ids_of(read_results(tmp_path)) == ["a", "b"]


def test_second_writer_on_same_dir_is_refused(tmp_path):
    with RunSink(tmp_path, META):
        with pytest.raises(SinkError, match="another process"):
            RunSink(tmp_path, META)


@pytest.mark.parametrize("field", ["target", "draft"])
def test_incompatible_manifest_fails_fast(tmp_path, field):
    RunSink(tmp_path, META).close()
    other = RunMeta(**{**META.__dict__, field: "other-model"})
    with pytest.raises(SinkError, match=f"another run's outputs.*{field} .*other-model"):
        RunSink(tmp_path, other)


def test_schema_version_change_is_incompatible(tmp_path):
    RunSink(tmp_path, META).close()
    manifest = tmp_path / MANIFEST
    header = json.loads(manifest.read_text().splitlines()[0])
    manifest.write_text(json.dumps({**header, "schema_version": "0000"}) + "\n")
    with pytest.raises(SinkError, match="schema_version"):
        RunSink(tmp_path, META)


def test_label_runs_commit_hidden_states_with_their_trace_rows(tmp_path):
    results, traces = batch(["a", "b"])
    hidden = pa.array([[float(i)] * 4 for i in range(traces.num_rows)], HIDDEN_FIELD.type)
    with RunSink(tmp_path / "generate", META) as sink:
        with pytest.raises(ValueError, match=r"unexpected columns \['hidden'\]"):
            sink.commit(results, traces.append_column(HIDDEN_FIELD, hidden))
    with RunSink(tmp_path / "label", RunMeta(**{**META.__dict__, "hidden_states": True})) as sink:
        with pytest.raises(ValueError, match=r"missing columns \['hidden'\]"):
            sink.commit(results, traces)
        sink.commit(results, traces.append_column(HIDDEN_FIELD, hidden))
    stored = read_traces(tmp_path / "label")
    assert stored.schema == stored_trace_schema(True) and stored["hidden"].to_pylist() == hidden.to_pylist()
    assert read_traces(tmp_path / "label", columns=["prompt_id", "depth"]).column_names == ["prompt_id", "depth"]
    group = pq.ParquetFile(next((tmp_path / "label" / "traces").rglob("*.parquet"))).metadata.row_group(0)
    encodings = {group.column(i).path_in_schema: group.column(i).encodings for i in range(group.num_columns)}
    assert "BYTE_STREAM_SPLIT" in encodings["hidden.list.element"]  # raw floats: split streams, no dictionary
    assert "hidden" not in read_traces(tmp_path / "generate").column_names
    with pytest.raises(SinkError, match="hidden_states True != False"):
        RunSink(tmp_path / "label", META)  # a generate run cannot resume a label run's dir, nor the reverse


def test_data_without_manifest_is_refused(tmp_path):
    (tmp_path / "results").mkdir()
    pq.write_table(batch(["a"])[0], tmp_path / "results" / "foreign.parquet")
    with pytest.raises(SinkError, match="no manifest"):
        RunSink(tmp_path, META)


def test_orphans_and_temp_files_are_ignored_then_cleaned(tmp_path):
    with RunSink(tmp_path, META) as sink:
        sink.commit(*batch(["a"]))
    orphan = tmp_path / "results" / "domain=code" / "part-000009-000-deadbeef.parquet"
    pq.write_table(batch(["z"])[0].drop_columns(["domain"]), orphan)
    (tmp_path / "_tmp").mkdir(exist_ok=True)
    (tmp_path / "_tmp" / f"{'ab' * 16}.parquet").write_bytes(b"PAR1")  # named as the sink names a temp file
    assert ids_of(read_results(tmp_path)) == ["a"]  # readers follow the manifest only
    RunSink(tmp_path, META).close()
    assert not orphan.exists() and not list(tmp_path.glob("_tmp/*"))
    assert_consistent(tmp_path)


def test_torn_manifest_tail_is_not_a_commit(tmp_path):
    with RunSink(tmp_path, META) as sink:
        sink.commit(*batch(["a"]))
    with open(tmp_path / MANIFEST, "ab") as f:
        f.write(b'{"kind":"commit","seq":2,"files":[],"ids":["b"],"err')
    assert ids_of(read_results(tmp_path)) == ["a"]
    sink = RunSink(tmp_path, META)
    assert sink.committed_ids() == {"a"}
    sink.commit(*batch(["b"]))
    sink.close()
    assert ids_of(read_results(tmp_path)) == ["a", "b"]


def test_corrupt_manifest_middle_line_is_an_error(tmp_path):
    with RunSink(tmp_path, META) as sink:
        sink.commit(*batch(["a"]))
    lines = (tmp_path / MANIFEST).read_text().splitlines()
    (tmp_path / MANIFEST).write_text("\n".join([lines[0], "{garbage", lines[1]]) + "\n")
    with pytest.raises(ManifestError, match="line 2 is corrupt"):
        read_results(tmp_path)


def test_manifest_paths_are_confined_to_out_dir(tmp_path):
    with RunSink(tmp_path, META) as sink:
        sink.commit(*batch(["a"]))
    manifest = tmp_path / MANIFEST
    record = json.loads(manifest.read_text().splitlines()[1])
    record["files"] = ["results/../../escape.parquet"]
    manifest.write_text(manifest.read_text().splitlines()[0] + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ManifestError, match="outside"):
        read_results(tmp_path)


def test_ids_never_become_file_names(tmp_path):
    hostile = ["../../escape", "/etc/passwd", "a/b", "domain=math", "..", "nul\0byte", "x" * 5000]
    with RunSink(tmp_path / "out", META) as sink:
        sink.commit(*batch(hostile[:4]), errors(hostile[4:]))
    assert ids_of(read_results(tmp_path / "out")) + ids_of(read_errors(tmp_path / "out")) == sorted(hostile[:4]) + sorted(hostile[4:])
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    names = [p.name for p in (tmp_path / "out").rglob("*.parquet")]
    assert len(names) == 3 and all(re.fullmatch(r"part-\d{6}-\d{3}-[0-9a-f]{8}\.parquet", n) for n in names)


def test_failed_manifest_append_stops_the_sink_until_reopened(tmp_path, monkeypatch):
    import specray.distributed.sink as sink_mod

    def disk_full(path, record):
        raise OSError("disk full")

    sink = RunSink(tmp_path, META)
    sink.commit(*batch(["a"]))
    with monkeypatch.context() as patch:
        patch.setattr(sink_mod, "append_record", disk_full)
        with pytest.raises(OSError, match="disk full"):
            sink.flush()
    with pytest.raises(SinkError, match="manifest append failed"):
        sink.close()  # refuses to write, but still releases the dir
    with RunSink(tmp_path, META) as resumed:
        assert resumed.committed_ids() == set()
        resumed.commit(*batch(["a"]))
    assert ids_of(read_results(tmp_path)) == ["a"]
    assert_consistent(tmp_path)


def test_reading_a_dir_that_is_not_a_run(tmp_path):
    with pytest.raises(ManifestError, match="no manifest"):
        read_results(tmp_path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: (*batch(["a"], "../etc"), None), "domain '../etc' is not one of"),
        (lambda: (batch(["a"])[0], batch(["b"])[1], None), "prompt_id has no result"),
        (lambda: (batch(["a"])[0], batch(["a"], "math")[1], None), "prompt_id has no result"),
        (lambda: (*batch(["a", "a"]), None), "appears twice"),
        (lambda: (*batch(["a"]), errors(["a"])), "appears twice"),
        (lambda: (*batch([None]), None), "null id"),
        (lambda: (batch(["a"])[0].drop_columns(["prompt"]), batch(["a"])[1], None), r"missing columns \['prompt'\]"),
    ],
)
def test_bad_batches_are_rejected(tmp_path, make, message):
    results, traces, errs = make()
    with RunSink(tmp_path, META) as sink:
        with pytest.raises(ValueError, match=message):
            sink.commit(results, traces, errs)
        assert sink.committed_ids() == set()
    assert not list(tmp_path.rglob("*.parquet"))


# A driver that commits batch A durably, then dies by SIGKILL at CRASH while committing batch B.
CRASHING_DRIVER = """
import os, signal, sys
import pyarrow as pa
sys.path.insert(0, {tests!r})
from test_sink import META, batch, errors
import specray.distributed.sink as sink_mod

out, crash = sys.argv[1], sys.argv[2]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
sink = sink_mod.RunSink(out, META)
sink.commit(*batch(["a0", "a1"]), errors(["ea"]))
sink.commit(*batch(["a2"], "math"))
sink.flush()

if crash.startswith("rename:"):
    after, real_replace, count = int(crash.split(":")[1]), os.replace, [0]
    def replace(src, dst):
        real_replace(src, dst)
        count[0] += 1
        if count[0] == after:
            die()
    os.replace = replace
elif crash == "parquet":
    real_write = sink_mod._write_parquet
    sink_mod._write_parquet = lambda table, path: (real_write(table, path), die())
elif crash == "before_record":
    sink_mod.append_record = lambda path, record: die()
elif crash == "torn_record":
    def torn(path, record):
        with open(path, "ab") as f:
            f.write(b'{{"kind":"commit","seq":2,"files":["results/domain=code/x.parquet"],"ids":["b0"')
        die()
    sink_mod.append_record = torn
elif crash == "after_record":
    real_append = sink_mod.append_record
    sink_mod.append_record = lambda path, record: (real_append(path, record), die())
elif crash.startswith("loop:"):
    n = 0
    while True:
        ids = [f"{{crash}}-{{n}}", f"{{crash}}-{{n + 1}}"]
        sink.commit(*batch(ids, ["code", "math", "chat"][n % 3]))
        sink.flush()
        print(n, flush=True)
        n += 2

sink.commit(*batch(["b0", "b1"]), errors(["eb"]))
sink.commit(*batch(["b2"], "logic"))
sink.flush()
"""

A_IDS, B_IDS = {"a0", "a1", "a2", "ea"}, {"b0", "b1", "b2", "eb"}


def driver(out: Path, crash: str) -> subprocess.Popen:
    script = CRASHING_DRIVER.format(tests=str(Path(__file__).parent))
    return subprocess.Popen([sys.executable, "-c", script, str(out), crash], stdout=subprocess.PIPE, text=True)


def resume_and_finish(out: Path, expected_committed: set[str]) -> None:
    assert_consistent(out, clean=False)
    sink = RunSink(out, META)
    assert sink.committed_ids() == expected_committed
    assert not list(out.glob("_tmp/*"))
    assert_consistent(out)
    sink.commit(*batch(["a0", "a1"]), errors(["ea"]))  # the scheduler would skip these; the sink drops them anyway
    sink.commit(*batch(["a2"], "math"))
    sink.commit(*batch(["b0", "b1"]), errors(["eb"]))
    sink.commit(*batch(["b2"], "logic"))
    sink.close()
    done_before = {i for i in expected_committed if not i.startswith("e")}
    assert ids_of(read_results(out)) == sorted(done_before | {"a0", "a1", "a2", "b0", "b1", "b2"})
    assert ids_of(read_errors(out)) == ["ea", "eb"]
    assert_consistent(out)


# B's flush renames 5 files: results and traces for code, then for logic, then errors.
@pytest.mark.parametrize(
    "crash, committed",
    [
        ("parquet", A_IDS),
        ("rename:1", A_IDS),
        ("rename:3", A_IDS),
        ("rename:5", A_IDS),
        ("before_record", A_IDS),
        ("torn_record", A_IDS),
        ("after_record", A_IDS | B_IDS),
    ],
)
def test_exactly_once_after_sigkill_at_each_step(tmp_path, crash, committed):
    proc = driver(tmp_path, crash)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    resume_and_finish(tmp_path, committed)


def test_exactly_once_after_sigkill_at_random_moments(tmp_path):
    for round_ in range(3):
        proc = driver(tmp_path, f"loop:{round_}")
        for _ in range(2 + 3 * round_):
            proc.stdout.readline()
        time.sleep(0.002 * round_)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        assert_consistent(tmp_path, clean=False)
    with RunSink(tmp_path, META) as sink:
        committed = sink.committed_ids()
    assert A_IDS <= committed and len(committed) > len(A_IDS)
    resume_and_finish(tmp_path, committed)
