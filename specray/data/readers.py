"""Streaming prompt readers: Parquet file or directory, JSONL, or a `datasets` directory saved with save_to_disk.

Every reader yields PromptBatch objects of at most `batch_size` records, so memory stays bounded
whatever the dataset size (except the set of seen ids, needed to reject duplicates). Bad records
become ErrorRow entries; problems with the file itself raise DatasetError naming the file.

A path may be a URI of an object store (s3://bucket/prompts/, gs://...; see specray.storage): Parquet
is then read a row group at a time through ranged reads and JSONL as a buffered stream, so a large
remote dataset is never downloaded whole, and every row goes through the same validation as a local
one. A `datasets` directory must be local (save_to_disk writes Arrow files meant for a local disk).
"""

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from specray.data.rows import ErrorRow, MissingPrompt, PromptBatch, PromptRow, RowValidator
from specray.storage import Location, StorageError, check_bucket, resolve, storage_error

JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
JSONL_SNIFF_LINES = 1000  # a JSONL whose first this-many records all fail to parse is not JSONL at all
STREAM_BUFFER = 1 << 20  # bytes fetched at a time from a remote JSONL


class DatasetError(ValueError):
    """A dataset that cannot be read at all (missing, corrupt, wrong kind, no prompt column, empty)."""


@dataclass(frozen=True)
class ReaderConfig:
    """Column names and limits; `limit` caps the number of records read (valid or not)."""

    prompt_column: str = "prompt"
    id_column: str = "id"
    domain_column: str | None = "domain"
    limit: int | None = None
    batch_size: int = 1024


def read_prompts(path: str | Path, config: ReaderConfig | None = None, endpoint: str | None = None) -> Iterator[PromptBatch]:
    """Stream a dataset as validated batches; the format is picked from what `path` (a path or a URI) is.
    `endpoint`: the address of an S3-compatible store (storage.endpoint)."""
    config = config or ReaderConfig()
    location = _locate(path, endpoint)
    kind_of = _file_type(location)
    if kind_of == pafs.FileType.NotFound:
        raise DatasetError(f"{location.uri}: no such file or directory")
    if kind_of == pafs.FileType.Directory:
        kind = "datasets" if _is_hf_dir(location) else "parquet"
    else:
        kind = "parquet" if _looks_like_parquet(location) else "jsonl"
    records = {"datasets": _hf_records, "parquet": _parquet_records, "jsonl": _jsonl_records}[kind](location, config)
    return _batched(_validated(records, config), config.batch_size, location.uri)


def _locate(path: str | Path, endpoint: str | None) -> Location:
    try:
        location = resolve(path, endpoint)
        check_bucket(location)
    except StorageError as exc:
        raise DatasetError(str(exc)) from None
    return location


def _file_type(location: Location) -> pafs.FileType:
    try:
        return location.fs.get_file_info(location.path).type
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(str(storage_error(location.uri, exc))) from None


def _is_hf_dir(location: Location) -> bool:
    names = ("dataset_dict.json", "state.json", "dataset_info.json")
    return any(_file_type(location.join(name)) != pafs.FileType.NotFound for name in names)


def _looks_like_parquet(location: Location) -> bool:
    suffix = Path(location.path).suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return True
    if suffix in JSONL_SUFFIXES:
        return False
    with location.fs.open_input_stream(location.path) as f:
        return f.read(4) == b"PAR1"


# A record is (raw_id, prompt, domain, fallback_id, source), or an ErrorRow when it could not be decoded;
# fallback_id None means `row:<index>`, the record's position in the whole dataset.


def _validated(records: Iterable, config: ReaderConfig) -> Iterator[PromptRow | ErrorRow]:
    validator = RowValidator()
    for index, rec in enumerate(islice(records, config.limit)):
        if isinstance(rec, ErrorRow):
            yield rec
        else:
            raw_id, prompt, domain, fallback_id, source = rec
            yield validator.check(raw_id, prompt, domain, index, fallback_id or f"row:{index}", source)


def _batched(rows: Iterator[PromptRow | ErrorRow], size: int, path: str) -> Iterator[PromptBatch]:
    batch, n_seen = PromptBatch([], []), 0
    for row in rows:
        n_seen += 1
        (batch.errors if isinstance(row, ErrorRow) else batch.rows).append(row)
        if len(batch.rows) + len(batch.errors) >= size:
            yield batch
            batch = PromptBatch([], [])
    if n_seen == 0:
        raise DatasetError(f"{path}: dataset is empty (no records)")
    if batch.rows or batch.errors:
        yield batch


# ---- JSONL -------------------------------------------------------------------------------------


def _jsonl_records(location: Location, config: ReaderConfig) -> Iterator:
    """One record per non-blank line; errors are held back until some line parses, so a file
    that is not JSON at all fails fast instead of turning into thousands of error rows."""
    path, source, held, parsed_any = location.uri, location.uri, [], False
    with _open_lines(location) as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            rec, parsed = _jsonl_record(raw, lineno, source, config)
            parsed_any = parsed_any or parsed
            if parsed_any:
                yield from held
                held = []
                yield rec
            else:
                held.append(rec)
                if len(held) >= JSONL_SNIFF_LINES:
                    break
    if held and not parsed_any:
        raise DatasetError(f"{path}: not a JSONL file (none of the first {len(held)} lines parse as JSON: {held[0].reason})")


def _jsonl_record(raw: bytes, lineno: int, source: str, config: ReaderConfig) -> tuple[object, bool]:
    """(record or ErrorRow, whether the line was valid JSON)."""
    fallback = f"line:{lineno}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return ErrorRow(None, source, f"line is not valid UTF-8 ({e.reason} at byte {e.start})", fallback), False
    if lineno == 1:
        text = text.removeprefix("\ufeff")  # a UTF-8 byte order mark, as some editors write, is not part of the JSON
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return ErrorRow(None, source, f"line is not valid JSON ({e.msg})", fallback), False
    if not isinstance(obj, dict):
        return ErrorRow(None, source, f"line is JSON {type(obj).__name__}, not an object", fallback), True
    # a record without a prompt still goes through the validator, so its id is claimed like any other
    prompt = obj[config.prompt_column] if config.prompt_column in obj else MissingPrompt(config.prompt_column)
    domain = obj.get(config.domain_column) if config.domain_column else None
    return (obj.get(config.id_column), prompt, domain, fallback, source), True


def _open_lines(location: Location):
    """A local file as itself; a remote one as a buffered stream, fetched a megabyte at a time."""
    if location.is_local:
        return open(location.path, "rb")
    return io.BufferedReader(location.fs.open_input_stream(location.path), STREAM_BUFFER)


# ---- Parquet -----------------------------------------------------------------------------------


def _parquet_records(location: Location, config: ReaderConfig) -> Iterator:
    """Records of every Parquet file under `location`, file by file, record batch by record batch."""
    path = location.uri
    try:
        dataset = pads.dataset(location.path, format="parquet", partitioning="hive", filesystem=location.fs)
        fragments = list(dataset.get_fragments())
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path}: not a readable Parquet dataset ({e})") from e
    if not fragments:
        raise DatasetError(f"{path}: no Parquet files found")
    for fragment in fragments:
        source = fragment.path if location.is_local else f"{location.scheme}://{fragment.path}"
        yield from _fragment_records(fragment, dataset.schema, config, source)


def _fragment_records(fragment, schema: pa.Schema, config: ReaderConfig, source: str) -> Iterator:
    try:
        names = set(fragment.physical_schema.names) | set(pads.get_partition_keys(fragment.partition_expression))
        if config.prompt_column not in names:
            raise DatasetError(f"{source}: Parquet file has no prompt column {config.prompt_column!r} (columns: {sorted(names)})")
        columns = [c for c in (config.id_column, config.prompt_column, config.domain_column) if c and c in schema.names]
        # each file is read with its own column types: files of one directory may disagree (integer ids in
        # one, string ids in another), and every id becomes a string anyway
        physical = fragment.physical_schema
        schema = pa.schema([physical.field(n) if n in physical.names else schema.field(n) for n in schema.names])
        # no read-ahead and no pre-buffering: memory stays at about one row group, whatever the file size
        scanner = pads.Scanner.from_fragment(fragment, schema=schema, columns=columns, batch_size=config.batch_size,
                                             batch_readahead=0, use_threads=False,
                                             fragment_scan_options=pads.ParquetFragmentScanOptions(pre_buffer=False))
        for batch in scanner.to_batches():
            yield from _arrow_records(batch, config, source)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{source}: corrupt or truncated Parquet file ({e})") from e


# ---- Hugging Face `datasets` -------------------------------------------------------------------


def _hf_records(location: Location, config: ReaderConfig) -> Iterator:
    if not location.is_local:
        raise DatasetError(f"{location.uri}: a `datasets` directory must be on a local disk; write it as Parquet "
                           "(dataset.to_parquet) to read it from an object store")
    import datasets  # heavy import, only when such a directory is read

    path = Path(location.path)
    if (path / "dataset_dict.json").exists():
        raise DatasetError(f"{path}: is a DatasetDict; pass the directory of one split instead")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises a variety of types for unreadable directories
        raise DatasetError(f"{path}: not a readable `datasets` directory ({e})") from e
    if not isinstance(ds, datasets.Dataset):
        raise DatasetError(f"{path}: expected a Dataset saved with save_to_disk, got {type(ds).__name__}")
    if config.prompt_column not in ds.column_names:
        raise DatasetError(f"{path}: dataset has no prompt column {config.prompt_column!r} (columns: {ds.column_names})")
    columns = [c for c in (config.id_column, config.prompt_column, config.domain_column) if c and c in ds.column_names]
    table = ds.with_format("arrow").select_columns(columns)
    for batch in table.iter(batch_size=config.batch_size):
        yield from _arrow_records(batch, config, str(path))


# ---- shared Arrow decoding ---------------------------------------------------------------------


def _arrow_records(batch: pa.RecordBatch | pa.Table, config: ReaderConfig, source: str) -> Iterator[tuple]:
    """Records of an Arrow batch; absent columns read as nulls."""
    names = batch.schema.names
    n = batch.num_rows
    ids = batch.column(config.id_column).to_pylist() if config.id_column in names else [None] * n
    prompts = batch.column(config.prompt_column).to_pylist()
    domains = batch.column(config.domain_column).to_pylist() if config.domain_column in names else [None] * n
    for raw_id, prompt, domain in zip(ids, prompts, domains):
        yield raw_id, prompt, domain, None, source
