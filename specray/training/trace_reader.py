"""Stream trace rows out of run directories into compact numpy arrays for training.

Reads Parquet files one record batch at a time and keeps only what training needs (12 features,
labels, round keys, and `hidden` when a label run stored it), so millions of rows fit in a few GB.
A file that cannot be opened or whose columns drifted from TRACE_SCHEMA is skipped and counted,
never allowed to stop a scheduled retrain. A dir may be a URI (s3://bucket/runs/): its runs' committed
trace files are found by listing the prefix and read a record batch at a time, never downloaded whole.
"""

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from specray.distributed.manifest import ManifestError, read_records
from specray.distributed.object_run import MANIFEST_DIR
from specray.distributed.sink import SinkError, committed_locations
from specray.policies.sources import DEFAULT as DEFAULT_SOURCE
from specray.schema import TOPK, TRACE_SCHEMA
from specray.storage import Location, check_bucket, is_remote, resolve

log = logging.getLogger(__name__)

COLUMNS = [
    "run_id", "prompt_id", "iteration", "depth", "accepted", "evaluated", "accept_prob",
    "entropy", "topk_probs", "lookahead", "draft_ms", "verify_ms",
]
HIDDEN = "hidden"
SOURCE = "draft_source"  # absent or null in runs stored before it: those drafted with the default source
HELDOUT_BUCKETS = 5  # prompt_key % 5 == 0 is held out: whole prompts, so no round leaks into training


@dataclass
class TraceFile:
    path: str
    rows: int
    mtime: float
    domain: str | None  # from a hive `domain=<d>` directory; None when the file carries the column


@dataclass
class TraceData:
    """One entry per drafted token; `hidden` rows belong to the token indices in `hidden_index`."""

    domain: np.ndarray  # int codes into `domains`
    domains: list[str]
    prompt_key: np.ndarray  # int64 hash of (run_id, prompt_id)
    iteration: np.ndarray
    depth: np.ndarray
    features: np.ndarray  # (n, 12) float32 in FEATURES order
    accepted: np.ndarray
    evaluated: np.ndarray
    accept_prob: np.ndarray
    rounds: np.ndarray  # (r, 3): lookahead, draft_ms, verify_ms of each round (taken at depth 1)
    source: np.ndarray  # int codes into `sources`: the draft source of each token
    sources: list[str]
    round_source: np.ndarray  # the source code of each round
    hidden: np.ndarray
    hidden_index: np.ndarray
    runs: set[str] = field(default_factory=set)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def find_trace_files(dirs: list[str | Path]) -> tuple[list[TraceFile], list[tuple[str, str]]]:
    """Trace files under each dir (a run dir's committed files, else every Parquet file) and the unreadable ones."""
    found, bad = [], []
    for directory in dirs:
        candidates = _remote_candidates(directory) if is_remote(directory) else map(_local, _candidate_paths(Path(directory)))
        for location in candidates:
            try:
                rows = pq.ParquetFile(location.path, filesystem=location.fs).metadata.num_rows
                mtime = os.path.getmtime(location.path) if location.is_local else location.fs.get_file_info(location.path).mtime.timestamp()
            except (pa.ArrowException, OSError) as err:
                bad.append((location.uri, str(err)))
                continue
            found.append(TraceFile(location.uri, rows, mtime, _hive_domain(Path(location.path))))
    return found, bad


def _local(path: Path) -> Location:
    return resolve(str(path))


def _remote_candidates(uri: str) -> list[Location]:
    """The remote form of _candidate_paths: committed trace files of every run (a prefix with a
    `_manifest/`) at or below `uri`, plus Parquet objects outside any run."""
    top = resolve(uri)
    check_bucket(top)
    infos = top.fs.get_file_info(pafs.FileSelector(top.path, recursive=True, allow_not_found=True))
    objects = [i.path for i in infos if i.type == pafs.FileType.File]
    header = f"/{MANIFEST_DIR}/{0:08d}.json"
    runs = sorted(path.removesuffix(header) for path in objects if path.endswith(header))
    scheme = f"{top.scheme}://"
    found = [resolve(scheme + path) for path in objects if path.endswith(".parquet") and "/_tmp/" not in path
             and not any(path.startswith(run + "/") for run in runs)]
    for run in runs:
        try:
            found += committed_locations(scheme + run, "traces")
        except (ManifestError, SinkError) as err:
            log.warning("skipping run %s%s: %s", scheme, run, err)
    return sorted(found, key=lambda location: location.uri)


def _candidate_paths(directory: Path) -> list[Path]:
    """Committed trace files of every run dir (a dir with a manifest) at or below `directory`, plus
    Parquet files outside any run dir; uncommitted files and results/ of a run are never read."""
    runs = sorted(m.parent for m in directory.rglob("manifest.jsonl")) if directory.is_dir() else []
    paths = {p.resolve() for p in directory.rglob("*.parquet") if "_tmp" not in p.parts and not any(p.is_relative_to(r) for r in runs)}
    for run in runs:
        try:
            records = read_records(run / "manifest.jsonl")
        except ManifestError as err:
            log.warning("skipping run dir %s: %s", run, err)
            continue
        paths.update((run / f).resolve() for record in records[1:] for f in record.get("files", []) if f.startswith("traces/"))
    return sorted(paths)


def _hive_domain(path: Path) -> str | None:
    return next((part.split("=", 1)[1] for part in reversed(path.parts) if part.startswith("domain=")), None)


def schema_problem(schema: pa.Schema, domain_from_path: bool) -> str | None:
    """Why this file's columns cannot be read as traces, or None."""
    wanted = COLUMNS + ([] if domain_from_path else ["domain"])
    for name in wanted:
        if name not in schema.names:
            return f"column '{name}' missing"
        if schema.field(name).type != TRACE_SCHEMA.field(name).type:
            return f"column '{name}' is {schema.field(name).type}, expected {TRACE_SCHEMA.field(name).type}"
    if HIDDEN in schema.names and not pa.types.is_list(schema.field(HIDDEN).type):
        return f"column '{HIDDEN}' is {schema.field(HIDDEN).type}, expected a list of floats"
    return None


def iter_batches(trace_file: TraceFile, batch_size: int = 65_536):
    """Record batches of the columns training needs, with a `domain` column; raises on a bad file."""
    location = resolve(trace_file.path)
    dataset = ds.dataset(location.path, format="parquet", filesystem=location.fs)
    problem = schema_problem(dataset.schema, trace_file.domain is not None)
    if problem:
        raise ValueError(problem)
    columns = COLUMNS + [c for c in (HIDDEN, "domain", SOURCE) if c in dataset.schema.names]
    for batch in dataset.to_batches(columns=columns, batch_size=batch_size):
        if "domain" not in batch.schema.names:
            batch = batch.append_column("domain", pa.array([trace_file.domain] * batch.num_rows, pa.string()))
        if SOURCE not in batch.schema.names:
            batch = batch.append_column(SOURCE, pa.nulls(batch.num_rows, pa.string()))
        yield batch


def read_traces_streaming(files: list[TraceFile], batch_size: int = 65_536, max_hidden_rows: int = 500_000) -> TraceData:
    """Every file's rows as arrays; hidden states of whole prompts subsampled to about `max_hidden_rows`."""
    total = max(1, sum(f.rows for f in files))
    keep_hidden = min(1.0, max_hidden_rows / total)
    acc = _Accumulator(keep_hidden)
    skipped = []
    for trace_file in files:
        mark = acc.mark()
        try:
            for batch in iter_batches(trace_file, batch_size):
                acc.add(batch)
        except (pa.ArrowException, OSError, ValueError) as err:
            acc.rewind(mark)  # a file counts whole or not at all
            skipped.append((trace_file.path, str(err)))
            log.warning("skipping trace file %s: %s", trace_file.path, err)
    return acc.finish(skipped)


class _Accumulator:
    """Appends converted batches; rewindable so a file that breaks midway leaves nothing behind."""

    def __init__(self, keep_hidden: float):
        self.keep_hidden = keep_hidden
        self.parts: dict[str, list[np.ndarray]] = {}
        self.domains: dict[str, int] = {}
        self.sources: dict[str, int] = {}
        self.runs: list[set[str]] = []
        self.rows = 0

    def mark(self) -> tuple[dict[str, int], int, int]:
        return {k: len(v) for k, v in self.parts.items()}, self.rows, len(self.runs)

    def rewind(self, mark: tuple[dict[str, int], int, int]) -> None:
        lengths, self.rows, runs = mark
        for key, parts in self.parts.items():
            del parts[lengths.get(key, 0):]
        del self.runs[runs:]

    def _put(self, key: str, value: np.ndarray) -> None:
        self.parts.setdefault(key, []).append(value)

    def add(self, batch: pa.RecordBatch) -> None:
        n = batch.num_rows
        col = {name: batch.column(name) for name in batch.schema.names}
        topk = _fixed_width(col["topk_probs"], TOPK, "topk_probs")
        prompt_key = _prompt_keys(col["run_id"], col["prompt_id"])
        depth = col["depth"].to_numpy(zero_copy_only=False).astype(np.int16)
        features = np.concatenate(
            [topk, _floats(col["entropy"])[:, None], depth.astype(np.float32)[:, None]], axis=1
        )
        if col["domain"].null_count:
            raise ValueError("column 'domain' has nulls")
        for name, values in (("entropy/topk_probs/depth", features), ("accept_prob", _floats(col["accept_prob"]))):
            if not np.isfinite(values).all():  # one NaN poisons every weight it trains; skip the file instead
                raise ValueError(f"column {name} holds NaN, infinite or null values")
        encoded = pc.dictionary_encode(col["domain"])
        codes = np.array([self.domains.setdefault(d, len(self.domains)) for d in encoded.dictionary.to_pylist()], np.int16)
        self._put("domain", codes[encoded.indices.to_numpy(zero_copy_only=False)])
        source = _codes(pc.fill_null(col[SOURCE], DEFAULT_SOURCE), self.sources)
        self._put("source", source)
        self._put("prompt_key", prompt_key)
        self._put("iteration", col["iteration"].to_numpy(zero_copy_only=False).astype(np.int32))
        self._put("depth", depth)
        self._put("features", features)
        self._put("accepted", col["accepted"].to_numpy(zero_copy_only=False).astype(bool))
        self._put("evaluated", col["evaluated"].to_numpy(zero_copy_only=False).astype(bool))
        self._put("accept_prob", _floats(col["accept_prob"]))
        first = depth == 1
        self._put("rounds", np.stack([_floats(col[c])[first] for c in ("lookahead", "draft_ms", "verify_ms")], axis=1))
        self._put("round_source", source[first])
        if HIDDEN in col and col[HIDDEN].null_count < n:
            keep = (_bucket(prompt_key) < self.keep_hidden) & col[HIDDEN].is_valid().to_numpy(zero_copy_only=False)
            rows = np.flatnonzero(keep)
            if len(rows):
                width = len(col[HIDDEN][int(rows[0])].as_py())
                self._put("hidden", _fixed_width(col[HIDDEN].take(pa.array(rows)), width, HIDDEN))
                self._put("hidden_index", rows.astype(np.int64) + self.rows)
        self.runs.append(set(pc.unique(col["run_id"]).to_pylist()))
        self.rows += n

    def finish(self, skipped: list[tuple[str, str]]) -> TraceData:
        def cat(key: str, empty: np.ndarray) -> np.ndarray:
            parts = self.parts.get(key, [])
            return np.concatenate(parts) if parts else empty

        return TraceData(
            domain=cat("domain", np.zeros(0, np.int16)),
            domains=list(self.domains),
            prompt_key=cat("prompt_key", np.zeros(0, np.int64)),
            iteration=cat("iteration", np.zeros(0, np.int32)),
            depth=cat("depth", np.zeros(0, np.int16)),
            features=cat("features", np.zeros((0, TOPK + 2), np.float32)),
            accepted=cat("accepted", np.zeros(0, bool)),
            evaluated=cat("evaluated", np.zeros(0, bool)),
            accept_prob=cat("accept_prob", np.zeros(0, np.float32)),
            rounds=cat("rounds", np.zeros((0, 3), np.float32)),
            source=cat("source", np.zeros(0, np.int16)),
            sources=list(self.sources),
            round_source=cat("round_source", np.zeros(0, np.int16)),
            hidden=cat("hidden", np.zeros((0, 0), np.float32)),
            hidden_index=cat("hidden_index", np.zeros(0, np.int64)),
            runs=set().union(*self.runs),
            skipped=skipped,
        )


def _codes(values: pa.Array, table: dict[str, int]) -> np.ndarray:
    """Int codes of a string column, new strings added to `table`."""
    encoded = pc.dictionary_encode(values)
    codes = np.array([table.setdefault(v, len(table)) for v in encoded.dictionary.to_pylist()], np.int16)
    return codes[encoded.indices.to_numpy(zero_copy_only=False)]


def _floats(array: pa.Array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False).astype(np.float32)


def _fixed_width(array: pa.Array, width: int, name: str) -> np.ndarray:
    """A list column as an (n, width) matrix; ragged or null lists mean the file is not usable."""
    if array.null_count or not pc.all(pc.equal(pc.list_value_length(array), width)).as_py():
        raise ValueError(f"column '{name}' does not hold {width} values on every row")
    return _floats(pc.list_flatten(array)).reshape(len(array), width)


def _prompt_keys(run_id: pa.Array, prompt_id: pa.Array) -> np.ndarray:
    """A stable 63-bit key per (run, prompt): hashed once per distinct pair, which are few per batch."""
    joined = pc.binary_join_element_wise(run_id, prompt_id, "\x1f")
    encoded = pc.dictionary_encode(joined)
    keys = np.array(
        [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") >> 1 for s in encoded.dictionary.to_pylist()],
        np.int64,
    )
    return keys[encoded.indices.to_numpy(zero_copy_only=False)]


def _bucket(prompt_key: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) draw per prompt, independent of the held-out split (which uses the low bits)."""
    return ((prompt_key >> 20) % 1_000_003) / 1_000_003
