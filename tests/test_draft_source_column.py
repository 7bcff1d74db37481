"""The `draft_source` column: stored on every result and trace row, null in runs stored before it existed."""

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq

from specray.analysis.load import load_runs
from specray.analysis.sources import row_sources
from specray.distributed.sink import RunMeta, RunSink, read_results, read_traces, schema_version
from specray.schema import ERROR_SCHEMA, RESULT_SCHEMA, trace_schema
from test_sink import batch

META = RunMeta("run-1", "tgt", "drf")


def old_fingerprint(hidden: bool) -> str:
    """schema_version as computed before the column existed."""
    schemas = {"results": RESULT_SCHEMA, "traces": trace_schema(hidden), "errors": ERROR_SCHEMA}
    spec = {name: [(f.name, str(f.type)) for f in schema] for name, schema in schemas.items()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def test_a_run_begun_before_the_column_resumes_and_reads_null(tmp_path):
    assert schema_version(False) == old_fingerprint(False) and schema_version(True) == old_fingerprint(True)
    results, traces = batch(["a", "b"])
    with RunSink(tmp_path, META) as sink:  # a writer that knows nothing of the column stores null
        sink.commit(results.drop_columns(["draft_source"]), traces.drop_columns(["draft_source"]))
    for path in [*(tmp_path / "results").rglob("*.parquet"), *(tmp_path / "traces").rglob("*.parquet")]:
        pq.write_table(pq.read_table(path).drop_columns(["draft_source"]), path)  # files as an older specray wrote them
    with RunSink(tmp_path, META) as sink:  # resumed by one that sets it
        sink.commit(*batch(["c"]))
    got = dict(zip(read_results(tmp_path)["id"].to_pylist(), read_results(tmp_path)["draft_source"].to_pylist()))
    assert got == {"a": None, "b": None, "c": "model"}
    assert set(read_traces(tmp_path)["draft_source"].to_pylist()) == {None, "model"}


def test_null_sources_read_as_model_in_label_runs_and_unrecorded_elsewhere(tmp_path):
    table = pa.table({"source": ["label", "generate", "generate", "label"],
                      "draft_source": pa.array([None, None, "ngram", "ngram+model"], pa.string())})
    assert row_sources(table).to_pylist() == ["model", "unrecorded", "ngram", "ngram+model"]
    results, traces = batch(["a"])
    with RunSink(tmp_path, META) as sink:
        sink.commit(results, traces)
    loaded, _ = load_runs([str(tmp_path)])
    assert set(loaded["draft_source"].to_pylist()) == {"model"}
