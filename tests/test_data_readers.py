"""Prompt readers: every format, every row-level error kind, every file-level failure, and streaming."""

import json
import math
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from specray.data.readers import DatasetError, ReaderConfig, read_prompts
from specray.data.rows import ErrorRow, PromptRow, errors_table
from specray.schema import ERROR_SCHEMA


def read_all(path, **kw):
    rows, errors = [], []
    for batch in read_prompts(path, ReaderConfig(**kw)):
        rows += batch.rows
        errors += batch.errors
    return rows, errors


def write_jsonl(path, lines):
    """Lines are dicts/values (JSON-encoded) or raw bytes (written as is)."""
    with open(path, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else json.dumps(line).encode())
            f.write(b"\n")
    return path


def reasons(errors):
    return {e.key: e.reason for e in errors}


# ---- JSONL ---------------------------------------------------------------------------------------


def test_jsonl_good_rows(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "a", "prompt": "hello", "domain": "chat"},
        {"id": 7, "prompt": "def f(): pass", "domain": " Code "},
        {"prompt": "no id here"},
        {"id": None, "prompt": "null id", "domain": None},
    ])
    rows, errors = read_all(path)
    assert errors == []
    assert rows == [PromptRow("a", "hello", "chat", 0), PromptRow("7", "def f(): pass", "code", 1),
                    PromptRow("line:3", "no id here", None, 2), PromptRow("line:4", "null id", None, 3)]


def test_jsonl_every_bad_row_kind(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "ok", "prompt": "fine"},
        {"id": "empty", "prompt": ""},
        {"id": "blank", "prompt": "  \n\t "},
        {"id": "null", "prompt": None},
        b'{"id": "nan", "prompt": NaN}',
        {"id": "number", "prompt": 42},
        {"id": "list", "prompt": ["a", "b"]},
        {"id": "nocol", "text": "prompt is under another key"},
        {"id": "ok", "prompt": "second occurrence"},
        b'{"id": "bad-utf8", "prompt": "\xff\xfe"}',
        b"this is not json",
        b"[1, 2, 3]",
        b'"just a string"',
        {"id": 1.5, "prompt": "float id"},
        {"id": True, "prompt": "bool id"},
        {"id": ["x"], "prompt": "list id"},
        {"id": "dom", "prompt": "x", "domain": "poetry"},
        {"id": "dom2", "prompt": "x", "domain": 3},
        {"id": "empty", "prompt": "valid, but its id belongs to an error row already"},
    ])
    rows, errors = read_all(path)
    assert [r.id for r in rows] == ["ok"]
    got = reasons(errors)
    assert "empty" in got["empty"] and "empty" in got["blank"]
    assert "null or NaN" in got["null"] and "null or NaN" in got["nan"]
    assert "must be a string" in got["number"] and "must be a string" in got["list"]
    assert "missing prompt column" in got["nocol"]
    assert "duplicate id 'ok'" in got["line:9"] and "duplicate id 'empty'" in got["line:19"]  # ids stay unique
    assert "UTF-8" in got["line:10"]
    assert "not valid JSON" in got["line:11"]
    assert "not an object" in got["line:12"] and "not an object" in got["line:13"]
    assert all("string or an integer" in got[f"line:{n}"] for n in (14, 15, 16))
    assert "unknown domain" in got["dom"] and "unknown domain" in got["dom2"]
    assert len(errors) == 18
    assert {e.source for e in errors} == {str(path)}


def test_jsonl_blank_lines_are_skipped_and_limit_counts_records(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [b"", {"prompt": "a"}, b"   ", {"prompt": ""}, {"prompt": "c"}, {"prompt": "d"}])
    rows, errors = read_all(path, limit=3)
    assert [r.prompt for r in rows] == ["a", "c"]
    assert [e.key for e in errors] == ["line:4"]


def test_jsonl_custom_columns(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"qid": 1, "question": "why?", "topic": "logic"}])
    rows, _ = read_all(path, prompt_column="question", id_column="qid", domain_column="topic")
    assert rows == [PromptRow("1", "why?", "logic", 0)]


def test_jsonl_that_is_not_json_fails_fast(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text("just some notes\nnothing structured\n")
    with pytest.raises(DatasetError, match=r"notes\.jsonl.*not a JSONL"):
        read_all(path)


def test_binary_file_is_not_jsonl(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DatasetError, match="blob.bin"):
        read_all(path)


def test_empty_jsonl_fails(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DatasetError, match=r"empty\.jsonl.*empty"):
        read_all(path)


def test_missing_file_fails(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.jsonl.*no such file"):
        read_prompts(tmp_path / "nope.jsonl")


# ---- Parquet -------------------------------------------------------------------------------------


def test_parquet_rows_and_errors(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({
        "id": ["a", "b", "c", "a", None, "e"],
        "prompt": ["one", "", None, "dup", "no id", "six"],
        "domain": ["math", None, "code", "math", "logic", "bogus"],
    }), path)
    rows, errors = read_all(path)
    assert rows == [PromptRow("a", "one", "math", 0), PromptRow("row:4", "no id", "logic", 4)]
    got = reasons(errors)
    assert "empty" in got["b"] and "null" in got["c"] and "duplicate" in got["row:3"] and "unknown domain" in got["e"]


def test_parquet_without_id_column_and_non_string_prompts(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": [1.5, math.nan, 3.0]}), path)
    rows, errors = read_all(path)
    assert rows == []
    assert [e.key for e in errors] == ["row:0", "row:1", "row:2"]
    assert "must be a string" in errors[0].reason and "NaN" in errors[1].reason


def test_parquet_bad_id_type(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": [1.5], "prompt": ["x"]}), path)
    _, errors = read_all(path)
    assert errors[0].key == "row:0" and "string or an integer" in errors[0].reason


@pytest.mark.parametrize(
    "column, values, reason",
    [
        ("prompt", pa.array([b"\xff\xfe not UTF-8"], pa.binary()), "must be a string, got bytes"),
        ("prompt", pa.array([["a", "list"]]), "must be a string, got list"),
        ("prompt", pa.array([{"text": "a struct"}]), "must be a string, got dict"),
        ("prompt", pa.array([None], pa.null()), "missing (null or NaN)"),
        ("id", pa.array([True]), "string or an integer, got bool"),
        ("id", pa.array([math.nan]), "string or an integer, got float nan"),
        ("id", pa.array([b"\xff"], pa.binary()), "string or an integer, got bytes"),
        ("id", pa.array([{"k": 1}]), "string or an integer, got dict"),
        ("id", pa.array([0], pa.timestamp("s")), "string or an integer, got datetime"),
        ("domain", pa.array([3]), "unknown domain int 3"),
    ],
)
def test_parquet_odd_types_are_error_rows(tmp_path, column, values, reason):
    columns = {"id": pa.array(["x"]), "prompt": pa.array(["fine"]), "domain": pa.array(["chat"]), column: values}
    pq.write_table(pa.table(columns), tmp_path / "p.parquet")
    rows, (error,) = read_all(tmp_path / "p.parquet")
    assert rows == [] and reason in error.reason


def test_parquet_int_ids_become_strings(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": pa.array([10, 11], pa.int64()), "prompt": ["x", "y"]}), path)
    rows, _ = read_all(path)
    assert [r.id for r in rows] == ["10", "11"]


def test_parquet_directory_with_hive_partitions(tmp_path):
    for domain, prompts in {"code": ["c1", "c2"], "math": ["m1"]}.items():
        (tmp_path / f"domain={domain}").mkdir()
        pq.write_table(pa.table({"prompt": prompts}), tmp_path / f"domain={domain}" / "part-0.parquet")
    rows, errors = read_all(tmp_path)
    assert errors == []
    assert sorted((r.prompt, r.domain) for r in rows) == [("c1", "code"), ("c2", "code"), ("m1", "math")]
    assert sorted(r.id for r in rows) == ["row:0", "row:1", "row:2"]


def test_parquet_without_prompt_column_fails(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["x"]}), path)
    with pytest.raises(DatasetError, match=r"p\.parquet.*no prompt column 'prompt'"):
        read_all(path)


@pytest.mark.parametrize("cut", [0.5, 0.95])
def test_truncated_parquet_fails(tmp_path, cut):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"prompt": [f"prompt {i}" for i in range(1000)]}), good)
    data = good.read_bytes()
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(DatasetError, match=r"bad\.parquet"):
        read_all(bad)


def test_corrupt_parquet_pages_fail(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": [f"prompt number {i}" for i in range(2000)]}), path, compression="snappy")
    data = bytearray(path.read_bytes())
    data[4:800] = b"\x00" * 796  # keep magic and footer, destroy the first data page
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"p\.parquet.*corrupt"):
        read_all(path)


def test_empty_parquet_fails(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), path)
    with pytest.raises(DatasetError, match="empty"):
        read_all(path)


def test_directory_without_parquet_fails(tmp_path):
    with pytest.raises(DatasetError, match="no Parquet files"):
        read_all(tmp_path)


# ---- Hugging Face datasets -----------------------------------------------------------------------


def test_hf_dataset_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"id": ["a", "b", "c"], "prompt": ["x", "  ", "z"], "domain": ["chat", None, "nope"]}).save_to_disk(
        str(tmp_path / "ds"))
    batches = list(read_prompts(tmp_path / "ds", ReaderConfig(batch_size=2)))
    assert [len(b.rows) + len(b.errors) for b in batches] == [2, 1]
    rows = [r for b in batches for r in b.rows]
    errors = [e for b in batches for e in b.errors]
    assert rows == [PromptRow("a", "x", "chat", 0)]
    assert reasons(errors).keys() == {"b", "c"}


def test_hf_dataset_dict_is_rejected(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"prompt": ["x"]})
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DatasetError, match=r"dd.*DatasetDict"):
        read_all(tmp_path / "dd")


@pytest.mark.parametrize("marker", ["state.json", "dataset_info.json"])
def test_dir_that_only_looks_like_a_hf_dataset_fails(tmp_path, marker):
    pytest.importorskip("datasets")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / marker).write_text("{not json")
    with pytest.raises(DatasetError, match=r"ds: not a readable `datasets` directory"):
        read_all(tmp_path / "ds")


def test_hf_dataset_without_prompt_column_fails(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["x"]}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DatasetError, match="no prompt column"):
        read_all(tmp_path / "ds")


def test_hf_empty_dataset_fails(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"prompt": []}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DatasetError, match="empty"):
        read_all(tmp_path / "ds")


# ---- streaming -----------------------------------------------------------------------------------

N_BIG = 60_000
PAD = "x" * 300


def test_large_jsonl_streams_in_bounded_batches(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for i in range(N_BIG):
            f.write(json.dumps({"id": f"p{i}", "prompt": f"prompt {i} {PAD}"}) + "\n")
    size = path.stat().st_size
    tracemalloc.start()
    total, biggest = 0, 0
    for batch in read_prompts(path, ReaderConfig(batch_size=500)):
        biggest = max(biggest, len(batch.rows))
        total += len(batch.rows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert total == N_BIG and biggest == 500
    assert peak < size / 3, f"peak {peak} bytes for a {size}-byte file: not streaming"


def test_large_parquet_streams_in_bounded_batches(tmp_path):
    path = tmp_path / "big.parquet"
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("prompt", pa.string())])) as w:
        for start in range(0, 2 * N_BIG, 2_000):  # 30 row groups: Arrow decodes one row group at a time
            ids = [f"p{i}" for i in range(start, start + 2_000)]
            w.write_table(pa.table({"id": ids, "prompt": [f"prompt {i} {PAD}" for i in ids]}))
    full = 2 * N_BIG * (len(PAD) + 20)
    base = pa.total_allocated_bytes()
    arrow_peak, total, biggest = 0, 0, 0
    for batch in read_prompts(path, ReaderConfig(batch_size=1000)):
        arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - base)
        biggest = max(biggest, len(batch.rows))
        total += len(batch.rows)
    assert total == 2 * N_BIG and biggest == 1000
    assert arrow_peak < full / 3, f"{arrow_peak} Arrow bytes held for a {full}-byte dataset: not streaming"


def test_errors_table_uses_error_schema():
    table = errors_table([ErrorRow("a", "f.jsonl", "prompt is empty or whitespace-only", "line:3"),
                          ErrorRow(None, "f.jsonl", "line is not valid JSON", "line:4")])
    assert table.schema.equals(ERROR_SCHEMA)
    assert table.to_pylist() == [
        {"id": "a", "source": "f.jsonl", "reason": "prompt is empty or whitespace-only", "position": "line:3"},
        {"id": None, "source": "f.jsonl", "reason": "line is not valid JSON", "position": "line:4"},
    ]
