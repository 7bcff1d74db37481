"""The driver's Parquet sink: results/ and traces/ partitioned by domain, errors/, and a manifest.

The sink's rules are the same wherever the run lives; how a file and a commit become durable depends
on the store (see `RunSink.__init__`):

- a local directory: each file is written under `_tmp/`, fsync'd and renamed into place; then one line
  appended to `manifest.jsonl` lists the files and the ids they commit. Rename and fsync make this the
  cheapest exactly-once protocol on a disk, and a kernel lock (flock) keeps a second writer out.
- an object store (s3://, gs://, ...; specray.distributed.object_run): no rename there, so each data
  file is PUT once under its final, unique name and the commit is a small immutable object of its own
  under `_manifest/`; a PUT is atomic per object, so a commit exists whole or not at all.

Either way only a commit makes files count: readers list commits, never data files, and on open the run
deletes its own data files that no commit names (a crash between writing and committing), so a resumed
run writes every id exactly once and traces/ never holds rows of a result that was not committed.

Two key spaces are committed: ids (results, and error rows of records that own their id) and input
positions (`line:N` / `row:N`, error rows of records with no usable id of their own). A record is
committed under exactly one key, and a position never stands in for an id, so no error row can take
a result's place (see specray.data.rows).

Layout under out_dir:
    results/domain=<d>/part-*.parquet   traces/domain=<d>/part-*.parquet   errors/part-*.parquet
    manifest.jsonl   config.yaml   _tmp/ (ignored by pyarrow readers)   .lock        (local)
    _manifest/<seq>.json   config.yaml   _lease.json                                (object store)

Nothing the run did not create is ever deleted: a directory without a manifest must be new or
empty (leftovers of a specray start that died before its manifest aside), `/` and the home
directory are refused outright, and the clean-up on open removes only files named as this sink
names them (`_tmp/<32 hex>.parquet`, `_tmp/<file>.<pid>.tmp`, `part-<seq>-<n>-<8 hex>.parquet`)
that no manifest record lists. A file a user puts anywhere in the run is left where it is.

A run that records hidden states (a label run) stores them as a `hidden` column of its trace files,
so they are committed, skipped on resume and cleaned up exactly like the rest of their rows.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from specray.config import forbidden_run_dir
from specray.distributed.manifest import (
    ManifestError,
    append_record,
    create_manifest,
    fsync_dir,
    read_records,
    repair_tail,
    write_atomic,
)
from specray.schema import ADDED_COLUMNS, DOMAINS, ERROR_SCHEMA, HIDDEN_FIELD, STORED_RESULT_SCHEMA, stored_trace_schema
from specray.storage import Location, StorageError, resolve

MANIFEST = "manifest.jsonl"
CONFIG = "config.yaml"
TMP = "_tmp"
LOCK = ".lock"
KINDS = ("results", "traces", "errors")
TMP_NAME = re.compile(r"[0-9a-f]{32}\.parquet|[A-Za-z0-9._-]+\.\d+\.tmp")  # what this sink and write_atomic put in _tmp/
PART_NAME = re.compile(r"part-\d{6}-\d{3}-[0-9a-f]{8}\.parquet")  # the data files _write_table names
DOMAIN_PARTITIONING = ds.partitioning(pa.schema([("domain", pa.string())]), flavor="hive")


class SinkError(RuntimeError):
    """The output dir cannot be written by this run (another run's data, a live writer, missing files)."""


@dataclass(frozen=True)
class RunMeta:
    """What produced a run; target, draft, hidden_states and the schema version must match for a resume."""

    run_id: str
    target: str
    draft: str
    config_yaml: str = ""  # stored as config.yaml when the run starts
    hidden_states: bool = False  # traces carry the draft's hidden states (label runs)
    # (stored, new) config YAML -> (refused changes, allowed changes); None: configs are not compared
    compare_config: Callable[[str, str], tuple[list[str], dict[str, Any]]] | None = None


def run_schemas(hidden_states: bool) -> dict[str, pa.Schema]:
    """The schema of each kind of file in a run."""
    return {"results": STORED_RESULT_SCHEMA, "traces": stored_trace_schema(hidden_states), "errors": ERROR_SCHEMA}


def schema_version(hidden_states: bool = False) -> str:
    """A fingerprint of the stored schemas, so a column change refuses to mix old and new files. ADDED_COLUMNS
    are left out: files without them read as null there, so a run begun before one was added may resume."""
    spec = {name: [(f.name, str(f.type)) for f in schema if f not in ADDED_COLUMNS]
            for name, schema in run_schemas(hidden_states).items()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class RunSink:
    """Buffers commits per domain, writes Parquet atomically, records them in the manifest. Single-threaded."""

    def __init__(self, out_dir: str | Path, run_meta: RunMeta, rows_per_file: int = 50_000, endpoint: str | None = None):
        """`out_dir`: a local path or a URI (s3://bucket/prefix, ...); `endpoint`: an S3-compatible store's address."""
        if rows_per_file < 1:
            raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}")
        try:
            self._store = open_store(out_dir, endpoint)
        except StorageError as exc:
            raise SinkError(f"output.dir {exc}") from None
        self.out_dir = self._store.root  # a resolved Path for a local run, the URI for a remote one
        self.meta = run_meta
        self.schemas = run_schemas(run_meta.hidden_states)
        self.rows_per_file = rows_per_file
        self._store.acquire()
        try:
            records = _open_manifest(self._store, run_meta)
        except BaseException:
            self._store.release()
            raise
        self.run_id: str = records[0]["run_id"]  # a resumed run keeps the id its first session chose
        self._seq = len(records) - 1
        self._committed = _ids(records)
        self._committed_positions = _positions(records)
        self._pending: set[str] = set()
        self._pending_positions: set[str] = set()
        self._results: dict[str, list[pa.Table]] = {}
        self._traces: dict[str, list[pa.Table]] = {}
        self._errors: list[pa.Table] = []
        self._buffered: dict[str, tuple[int, int]] = {}  # (result, trace) rows per domain, so a commit costs O(batch)
        self._broken = False

    @property
    def trace_schema(self) -> pa.Schema:
        """What `commit` expects its traces to look like in this run."""
        return self.schemas["traces"]

    def committed_ids(self) -> set[str]:
        """Ids durably committed, as results or as errors: the scheduler skips these."""
        return set(self._committed)

    def committed_positions(self) -> set[str]:
        """Input positions (`line:N` / `row:N`) of committed error rows that have no id of their own."""
        return set(self._committed_positions)

    def record_workers(self, workers: list) -> None:
        """Note in the manifest where this session's model workers run and in which precision (run metadata
        only: empty file and id lists, as for a session record)."""
        self._store.append({"kind": "workers", "time": time.time(), "workers": workers, "files": [],
                            "ids": [], "error_ids": [], "error_positions": []})

    def commit(self, results: pa.Table, traces: pa.Table, errors: pa.Table | None = None) -> int:
        """Accept a batch; ids already committed or pending are dropped (a retried batch is harmless).

        Buffered until a domain holds `rows_per_file` rows; call flush() when it must be durable now.
        Returns how many ids were newly accepted.
        """
        results, traces = _conform(results, "results", self.schemas["results"]), _conform(traces, "traces", self.trace_schema)
        errors = _conform(errors if errors is not None else ERROR_SCHEMA.empty_table(), "errors", ERROR_SCHEMA)
        _check_batch(results, traces, errors)
        results, errors = results.filter(self._new(results["id"])), errors.filter(self._new_errors(errors))
        traces = traces.filter(pc.is_in(traces["prompt_id"], value_set=results["id"].combine_chunks()))
        for domain in pc.unique(results["domain"]).to_pylist():
            domain_results = results.filter(pc.equal(results["domain"], domain))
            domain_traces = traces.filter(pc.equal(traces["domain"], domain))
            self._results.setdefault(domain, []).append(domain_results)
            self._traces.setdefault(domain, []).append(domain_traces)
            n_results, n_traces = self._buffered.get(domain, (0, 0))
            self._buffered[domain] = (n_results + domain_results.num_rows, n_traces + domain_traces.num_rows)
        if errors.num_rows:
            self._errors.append(errors)
        accepted = results["id"].to_pylist() + [i for i in errors["id"].to_pylist() if i is not None]
        positions = _error_positions(errors)
        self._pending.update(accepted)
        self._pending_positions.update(positions)
        self._flush_full()
        return len(accepted) + len(positions)

    def flush(self) -> None:
        """Write everything buffered and record it; when this returns, every accepted id is committed."""
        self._write(list(self._results), with_errors=True)
        self._store.keep_alive()

    def close(self) -> None:
        """Flush, then release the output dir."""
        try:
            self.flush()
        finally:
            self._store.release()

    def __enter__(self) -> RunSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _new(self, ids: pa.ChunkedArray) -> pa.Array:
        """Mask of ids neither committed nor pending; O(batch), however large the run has grown."""
        return pa.array([i not in self._committed and i not in self._pending for i in ids.to_pylist()], pa.bool_())

    def _new_errors(self, errors: pa.Table) -> pa.Array:
        """Mask of error rows whose key (their id, else their position) is neither committed nor pending."""
        keys = zip(errors["id"].to_pylist(), errors["position"].to_pylist())
        return pa.array([(i not in self._committed and i not in self._pending) if i is not None else
                         (p not in self._committed_positions and p not in self._pending_positions) for i, p in keys],
                        pa.bool_())

    def _flush_full(self) -> None:
        full = [d for d, sizes in self._buffered.items() if max(sizes) >= self.rows_per_file]
        with_errors = _rows(self._errors) >= self.rows_per_file
        if full or with_errors:
            self._write(full, with_errors)

    def _write(self, domains: list[str], with_errors: bool) -> None:
        if self._broken:
            raise SinkError(f"{self.out_dir}: a manifest append failed; open a new RunSink to resume from the manifest")
        seq, written = self._seq + 1, []
        ids = [i for d in domains for t in self._results[d] for i in t["id"].to_pylist()]
        error_ids = [i for t in self._errors for i in t["id"].to_pylist() if i is not None] if with_errors else []
        positions = [p for t in self._errors for p in _error_positions(t)] if with_errors else []
        try:
            for domain in domains:
                written += self._write_table("results", domain, self._results[domain], seq)
                written += self._write_table("traces", domain, self._traces[domain], seq)
            if with_errors:
                written += self._write_table("errors", None, self._errors, seq)
            if not written:
                return
            self._store.sync(written)
        except BaseException:
            for relative in written:  # never recorded: remove now rather than leave them for the next open
                self._store.remove(relative)
            raise
        self._broken = True  # if the append fails, only the manifest knows whether it landed
        self._store.append(_commit_record(seq, self.meta.run_id, written, ids, error_ids, positions))
        self._broken = False
        self._seq = seq
        self._committed.update(ids + error_ids)
        self._pending.difference_update(ids + error_ids)
        self._committed_positions.update(positions)
        self._pending_positions.difference_update(positions)
        for domain in domains:
            del self._results[domain], self._traces[domain], self._buffered[domain]
        if with_errors:
            self._errors = []

    def _write_table(self, kind: str, domain: str | None, parts: list[pa.Table], seq: int) -> list[str]:
        """Write `parts` as files of at most rows_per_file rows; returns their paths relative to the run."""
        table = pa.concat_tables(parts) if parts else self.schemas[kind].empty_table()
        if domain is not None:
            table = table.drop_columns(["domain"])  # the hive path carries it
        directory = _table_dir(kind, domain)
        written = []
        for start in range(0, table.num_rows, self.rows_per_file):
            relative = f"{directory}/part-{seq:06d}-{len(written):03d}-{uuid.uuid4().hex[:8]}.parquet"
            self._store.write_parquet(relative, table.slice(start, self.rows_per_file))
            written.append(relative)
        return written


def read_results(out_dir: str | Path, endpoint: str | None = None) -> pa.Table:
    """Every committed result row (RESULT_SCHEMA); files no manifest record names are never read.
    `out_dir`: a path or a URI; `endpoint`: an S3-compatible store's address (else AWS_ENDPOINT_URL)."""
    return _read(out_dir, "results", endpoint=endpoint)


def read_traces(out_dir: str | Path, columns: list[str] | None = None, endpoint: str | None = None) -> pa.Table:
    """Every committed trace row (TRACE_SCHEMA, plus `hidden` in a label run), or only `columns` of it:
    a label run's hidden states are most of its bytes, so readers that do not need them should say so."""
    return _read(out_dir, "traces", columns, endpoint)


def read_errors(out_dir: str | Path, endpoint: str | None = None) -> pa.Table:
    """Every committed error row (ERROR_SCHEMA)."""
    return _read(out_dir, "errors", endpoint=endpoint)


def run_records(out_dir: str | Path) -> list[dict[str, Any]]:
    """The header and commit records of the run at `out_dir` (a path or a URI); ManifestError when it is none."""
    return open_store(out_dir).read_records()


def committed_locations(out_dir: str | Path, kind: str) -> list[Location]:
    """The files of `kind` (results, traces, errors) the manifest of `out_dir` (a path or a URI) commits."""
    store = open_store(out_dir)
    return [store.location_of(f) for f in _files(store.read_records()) if f.startswith(f"{kind}/")]


def committed_files(out_dir: str | Path, kind: str) -> list[Path]:
    """The same, as paths, for a run in a local directory."""
    return [Path(location.path) for location in committed_locations(out_dir, kind)]


def _read(out_dir: str | Path, kind: str, columns: list[str] | None = None, endpoint: str | None = None) -> pa.Table:
    store = open_store(out_dir, endpoint)
    records = store.read_records()
    schema = run_schemas(bool(records[0].get("hidden_states")))[kind]
    files = [store.location_of(f) for f in _files(records) if f.startswith(f"{kind}/")]
    if not files:
        empty = schema.empty_table()
        return empty if columns is None else empty.select(columns)
    partitioned = kind != "errors"
    dataset = ds.dataset(
        [f.path for f in files],
        schema=schema,
        format="parquet",
        filesystem=files[0].fs,
        partitioning=DOMAIN_PARTITIONING if partitioned else None,
        partition_base_dir=store.location_of(kind).path if partitioned else None,
    )
    return dataset.to_table(columns=columns)


def open_store(out_dir: str | Path, endpoint: str | None = None):
    """The store of a run at `out_dir`: a LocalRun for a path, an ObjectRun for a URI of an object store.
    StorageError for a URI that names no usable store."""
    location = resolve(out_dir, endpoint)
    if location.is_local:
        root = Path(location.path).resolve()
        refused = forbidden_run_dir(root)
        if refused:
            raise SinkError(f"output.dir {root}: {refused}")
        return LocalRun(root)
    from specray.distributed.object_run import ObjectRun  # only runs on an object store need it

    return ObjectRun(location)


class LocalRun:
    """A run in a local directory: temp file + fsync + rename per data file, one fsync'd manifest line
    per commit, an flock held for the sink's life."""

    def __init__(self, root: Path):
        self.root = root
        self._lock = None

    def location_of(self, relative: str) -> Location:
        path = _confined(self.root, relative) if "/" in relative else self.root / relative
        return resolve(str(path))

    def acquire(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = _acquire_lock(self.root / LOCK)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def keep_alive(self) -> None:
        """Nothing to renew: the kernel holds the lock until the process ends."""

    def has_manifest(self) -> bool:
        return (self.root / MANIFEST).exists()

    def read_records(self) -> list[dict[str, Any]]:
        return read_records(self.root / MANIFEST)

    def repair(self) -> None:
        repair_tail(self.root / MANIFEST)

    def create_manifest(self, header: dict[str, Any]) -> None:
        create_manifest(self.root / MANIFEST, header, self.root / TMP)

    def append(self, record: dict[str, Any]) -> None:
        append_record(self.root / MANIFEST, record)

    def data_files(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for kind in KINDS for p in _files_under(self.root / kind)]

    def foreign_entries(self) -> list[str]:
        return _foreign_entries(self.root)

    def remove_uncommitted(self, committed: set[str]) -> None:
        _remove_uncommitted(self.root, committed)

    def read_config(self) -> str | None:
        stored = self.root / CONFIG
        return stored.read_text() if stored.is_file() else None

    def write_config(self, text: str) -> None:
        write_atomic(self.root / CONFIG, text.encode(), self.root / TMP)

    def write_parquet(self, relative: str, table: pa.Table) -> None:
        tmp = self.root / TMP / f"{uuid.uuid4().hex}.parquet"
        _write_parquet(table, tmp)
        final = self.root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

    def sync(self, written: list[str]) -> None:
        paths = [self.root / relative for relative in written]
        for directory in {d for path in paths for d in path.parents if d.is_relative_to(self.root)}:
            fsync_dir(directory)  # new partition dirs included, so the renames survive power loss

    def remove(self, relative: str) -> None:
        (self.root / relative).unlink(missing_ok=True)


def _acquire_lock(path: Path) -> Any:
    """An exclusive lock held for the sink's life; the kernel drops it when the process dies, even by SIGKILL."""
    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SinkError(f"{path.parent}: another process is writing to this output dir") from None
    return handle


def _open_manifest(store, meta: RunMeta) -> list[dict[str, Any]]:
    """Start a run or resume one: check it is ours, drop uncommitted files, return the records."""
    out_dir = store.root
    if store.has_manifest():
        store.repair()
        records = store.read_records()
        problem = _incompatibility(records[0], meta)
        if problem:
            raise SinkError(f"{out_dir} holds another run's outputs ({problem}); use a new output.dir")
    else:
        stray = store.data_files()
        if stray:
            raise SinkError(f"{out_dir} holds data but no manifest (e.g. {stray[0]}); refusing to mix runs")
        foreign = store.foreign_entries()
        if foreign:
            raise SinkError(f"output.dir {out_dir} is not empty and is not a specray run (it holds {foreign[0]!r}); "
                            "use a new or empty directory")
        header = {"run_id": meta.run_id, "target": meta.target, "draft": meta.draft, "hidden_states": meta.hidden_states,
                  "schema_version": schema_version(meta.hidden_states)}
        store.create_manifest({**header, "created": time.time()})
        records = store.read_records()
    store.remove_uncommitted(set(_files(records)))
    has_commits = any(r.get("kind") == "commit" and (r.get("files") or r.get("ids") or r.get("error_ids")
                                                     or r.get("error_positions")) for r in records[1:])
    stored = store.read_config()
    if meta.config_yaml and has_commits and stored is not None and meta.compare_config is not None:
        refused, allowed = meta.compare_config(stored, meta.config_yaml)
        if refused:
            raise SinkError(f"output.dir {out_dir}: this run was made with other settings that change outputs; resuming "
                            f"would mix them (set them back, or use a new output.dir):\n  " + "\n  ".join(refused))
        # empty file and id lists, so a reader that takes every later line for a commit still reads it right
        store.append({"kind": "session", "time": time.time(), "changed": allowed, "files": [], "ids": [],
                      "error_ids": [], "error_positions": []})
    elif meta.config_yaml and (not has_commits or stored is None):
        # nothing produced yet: the settings that will produce it are the new ones
        store.write_config(meta.config_yaml)
    return records


def _incompatibility(header: dict[str, Any], meta: RunMeta) -> str | None:
    expected = {"target": meta.target, "draft": meta.draft, "hidden_states": meta.hidden_states,
                "schema_version": schema_version(meta.hidden_states)}
    diffs = [f"{key} {header.get(key)!r} != {value!r}" for key, value in expected.items() if header.get(key) != value]
    return "; ".join(diffs) or None


def _foreign_entries(out_dir: Path) -> list[str]:
    """What a directory without a manifest holds besides the lock and a start's temp files (sorted)."""
    entries = []
    for entry in sorted(out_dir.iterdir()):
        if entry.name == LOCK and entry.is_file() and not entry.is_symlink():
            continue
        if entry.name == TMP and entry.is_dir() and not entry.is_symlink():
            entries += [f"{TMP}/{p.name}" for p in sorted(entry.iterdir()) if not _ours_in_tmp(p)]
            continue
        entries.append(entry.name)
    return entries


def _ours_in_tmp(path: Path) -> bool:
    return path.is_file() and not path.is_symlink() and bool(TMP_NAME.fullmatch(path.name))


def _remove_uncommitted(out_dir: Path, committed: set[str]) -> None:
    """Delete this sink's temp files and the data files it named that no record lists; fail if a recorded
    file has vanished. Anything else (a user's file, even in _tmp/) is left alone."""
    tmp = out_dir / TMP
    if tmp.is_dir() and not tmp.is_symlink():
        for path in tmp.iterdir():
            if _ours_in_tmp(path):
                path.unlink()
    for kind in KINDS:
        for path in _files_under(out_dir / kind):
            if path.relative_to(out_dir).as_posix() not in committed and PART_NAME.fullmatch(path.name) and not path.is_symlink():
                path.unlink()
    missing = [f for f in sorted(committed) if not _confined(out_dir, f).is_file()]
    if missing:
        raise SinkError(f"{out_dir}: committed file {missing[0]} is missing ({len(missing)} in all)")


def _files_under(directory: Path) -> list[Path]:
    """Parquet files below `directory`, without following symlinked dirs."""
    return [Path(root) / name for root, _, names in os.walk(directory) for name in names if name.endswith(".parquet")]


def _confined(out_dir: Path, relative: str) -> Path:
    """A manifest path resolved under out_dir; a record pointing outside it is corruption, not a file to open."""
    path = (out_dir / relative).resolve()
    if not path.is_relative_to(out_dir) or relative.split("/")[0] not in KINDS:
        raise ManifestError(f"{out_dir / MANIFEST}: file {relative!r} lies outside results/, traces/, errors/")
    return path


def _table_dir(kind: str, domain: str | None) -> str:
    """Where files of `kind` (and `domain`) go, relative to the run."""
    if domain is None:
        return kind
    if domain not in DOMAINS:
        raise ValueError(f"domain {domain!r} is not one of {', '.join(DOMAINS)}")
    return f"{kind}/domain={domain}"


def _conform(table: pa.Table, kind: str, schema: pa.Schema) -> pa.Table:
    """`table` with exactly the schema's columns, in order and cast; a missing or extra column is a bug upstream,
    except an errors table without `position` (written before that column existed), whose rows all have ids,
    and a table without one of the schema's ADDED_COLUMNS (null: not recorded)."""
    if kind == "errors" and "position" not in table.column_names:
        table = table.append_column("position", pa.nulls(table.num_rows, pa.string()))
    for added in ADDED_COLUMNS:
        if added.name in schema.names and added.name not in table.column_names:
            table = table.append_column(added, pa.nulls(table.num_rows, added.type))
    missing, extra = set(schema.names) - set(table.column_names), set(table.column_names) - set(schema.names)
    if missing or extra:
        raise ValueError(f"{kind}: missing columns {sorted(missing)}, unexpected columns {sorted(extra)}")
    return table.select(schema.names).cast(schema)


def _check_batch(results: pa.Table, traces: pa.Table, errors: pa.Table) -> None:
    """Reject what would break exactly-once: null or repeated ids, unknown domains, orphan trace rows."""
    if results["id"].null_count:
        raise ValueError("results: null id")
    if pc.sum(pc.and_(pc.is_null(errors["id"]), pc.is_null(errors["position"]))).as_py():
        raise ValueError("errors: a row with neither an id nor a position")
    ids = pa.concat_arrays([results["id"].combine_chunks(), errors["id"].drop_null().combine_chunks()])
    if pc.count_distinct(ids).as_py() != len(ids):
        raise ValueError("results/errors: an id appears twice in one commit")
    positions = _error_positions(errors)
    if len(set(positions)) != len(positions):
        raise ValueError("errors: a position appears twice in one commit")
    unknown = set(pc.unique(results["domain"]).to_pylist()) - set(DOMAINS)
    if unknown:
        raise ValueError(f"results: domain {sorted(unknown, key=str)[0]!r} is not one of {', '.join(DOMAINS)}")
    if traces["domain"].null_count:
        raise ValueError("traces: null domain")
    for domain in pc.unique(traces["domain"]).to_pylist():
        mine = traces.filter(pc.equal(traces["domain"], domain))["prompt_id"]
        owners = results.filter(pc.equal(results["domain"], domain))["id"].combine_chunks()
        if not pc.all(pc.is_in(mine, value_set=owners)).as_py():
            raise ValueError(f"traces: rows in domain {domain!r} whose prompt_id has no result of that domain here")


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pq.write_table(table, f, compression="zstd", **_encodings(table))
        f.flush()
        os.fsync(f.fileno())


def _encodings(table: pa.Table) -> dict[str, Any]:
    """Hidden states are distinct floats: dictionary encoding only bloats them, while splitting their
    bytes into streams lets zstd find the shared exponents (about 35% smaller than the default)."""
    if HIDDEN_FIELD.name not in table.column_names:
        return {}
    others = [name for name in table.column_names if name != HIDDEN_FIELD.name]
    return {"use_dictionary": others, "use_byte_stream_split": [f"{HIDDEN_FIELD.name}.list.element"]}


def _commit_record(seq: int, run_id: str, files: list[str], ids: list[str], error_ids: list[str],
                   error_positions: list[str]) -> dict[str, Any]:
    return {"seq": seq, "run_id": run_id, "time": time.time(), "files": files, "ids": ids, "error_ids": error_ids,
            "error_positions": error_positions}


def _files(records: list[dict[str, Any]]) -> list[str]:
    return [f for record in records[1:] for f in record.get("files", ())]


def _ids(records: list[dict[str, Any]]) -> set[str]:
    return {i for record in records[1:] for i in (*record.get("ids", ()), *record.get("error_ids", ()))}


def _positions(records: list[dict[str, Any]]) -> set[str]:
    return {p for record in records[1:] for p in record.get("error_positions", ())}


def _error_positions(errors: pa.Table) -> list[str]:
    """Positions of the error rows keyed by position (those without an id)."""
    return [p for i, p in zip(errors["id"].to_pylist(), errors["position"].to_pylist()) if i is None]


def _rows(tables: list[pa.Table]) -> int:
    return sum(t.num_rows for t in tables)
