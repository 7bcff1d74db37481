"""A run on an object store (s3://, gs://, abfs://, ...): exactly once without rename, fsync or locks.

An object store has none of the three, but a PUT is atomic per object: an object is there whole, or
not at all (an unfinished multipart upload is invisible). So:

- a data file is PUT once, under its final name, which is unique (`part-<seq>-<n>-<8 hex>.parquet`);
  the files of one commit upload in parallel (UPLOAD_THREADS), and the commit waits for all of them;
- the commit point is one small immutable object per record, `_manifest/<8-digit number>.json`
  (header first, then commits and session notes): an append-only manifest of immutable objects, as
  table formats keep one. Readers list `_manifest/`, never the data prefixes, so a data file whose
  commit never landed (a crashed writer) is invisible to them;
- only the run that owns the prefix deletes such files, when it next opens (the sink's clean-up);
- one writer at a time: a `_lease.json` object names the writing session (host, pid) and is renewed
  as it commits. A lease younger than LEASE_S, or held by a live process on this host, refuses a
  second writer; a lease whose process is gone from this host (a SIGKILLed driver) is taken over at
  once, any other after LEASE_S. Before each commit the writer checks the lease is still its own, and
  a record number already taken stops it, so two writers never both commit.

The run's readers and writer see the same layout as a local run's, with `_manifest/` in place of
`manifest.jsonl`; `specray report` and `specray retrain` read both alike.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from specray.distributed.manifest import FORMAT, ManifestError, check_header
from specray.distributed.sink import CONFIG, KINDS, PART_NAME, SinkError, _encodings
from specray.storage import Location, StorageError, check_bucket, storage_error

MANIFEST_DIR = "_manifest"
LEASE = "_lease.json"
LEASE_S = 300.0  # a writer not heard from for this long has died (its lease is renewed at every flush)
RECORD = re.compile(r"(\d{8})\.json")
UPLOAD_THREADS = 8  # a commit's files (results and traces per domain, errors) upload side by side; records load so


class ObjectRun:
    """The store of a RunSink whose output.dir is a URI of an object store."""

    def __init__(self, location: Location):
        self.location = location
        self.root = location.uri.rstrip("/")
        self.session = uuid.uuid4().hex
        self._held = False
        self._renewed = 0.0
        self._next = 0
        self._uploads: list[Future] = []
        self._pool: ThreadPoolExecutor | None = None

    def location_of(self, relative: str) -> Location:
        """A file a record names; a name outside results/, traces/, errors/ is corruption, not a file to open."""
        parts = relative.split("/")
        if parts[0] not in KINDS or any(p in ("", ".", "..") for p in parts):
            raise ManifestError(f"{self.root}/{MANIFEST_DIR}: file {relative!r} lies outside results/, traces/, errors/")
        return self.location.join(relative)

    # ---- one writer -------------------------------------------------------------------------------

    def acquire(self) -> None:
        if "/" not in self.location.path.strip("/"):
            raise SinkError(f"output.dir {self.root}: is a bucket root; a run needs a prefix of its own (s3://bucket/runs/NAME)")
        try:
            check_bucket(self.location)
        except StorageError as exc:
            raise SinkError(f"output.dir {exc}") from None
        lease = self._read_json(LEASE)
        if lease is not None and lease.get("session") != self.session and not _lapsed(lease):
            raise SinkError(f"{self.root}: another process is writing to this output dir (host {lease.get('host')}, "
                            f"pid {lease.get('pid')}, heard from {time.time() - float(lease.get('time', 0)):.0f} s ago; "
                            f"its lease lapses {LEASE_S:.0f} s after that)")
        self._write_lease()
        self._held = True

    def keep_alive(self) -> None:
        if self._held and time.monotonic() - self._renewed > LEASE_S / 4:
            self._check_lease()
            self._write_lease()

    def release(self) -> None:
        self._drain()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._held:
            self._held = False
            lease = self._read_json(LEASE)
            if lease is not None and lease.get("session") == self.session:
                self._call(self.location.fs.delete_file, self._path(LEASE))

    def _write_lease(self) -> None:
        self._put(LEASE, json.dumps({"session": self.session, "host": socket.gethostname(), "pid": os.getpid(),
                                     "time": time.time()}).encode())
        self._renewed = time.monotonic()

    def _check_lease(self) -> None:
        lease = self._read_json(LEASE)
        if lease is None or lease.get("session") != self.session:
            holder = "nobody" if lease is None else f"host {lease.get('host')}, pid {lease.get('pid')}"
            raise SinkError(f"{self.root}: this writer's lease was taken over ({holder}); stopping so that two writers "
                            "never commit to one run")

    # ---- the manifest -----------------------------------------------------------------------------

    def has_manifest(self) -> bool:
        return self._info(f"{MANIFEST_DIR}/{0:08d}.json").type == pafs.FileType.File

    def read_records(self) -> list[dict[str, Any]]:
        """The header and every commit, in order; ManifestError when the prefix holds no specray run."""
        infos = self._list(MANIFEST_DIR, recursive=False)
        numbered = sorted((int(m.group(1)), info.path) for info in infos
                          if (m := RECORD.fullmatch(info.base_name)) and info.type == pafs.FileType.File)
        if not numbered:
            raise ManifestError(f"{self.root}: no {MANIFEST_DIR}/; not a specray run directory")
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:  # a long run has thousands of records: fetch side by side
            contents = list(pool.map(lambda item: self._call(_read_bytes, self.location.fs, item[1]), numbered))
        records = []
        for (number, _), content in zip(numbered, contents):
            try:
                records.append(json.loads(content))
            except ValueError:
                raise ManifestError(f"{self.root}/{MANIFEST_DIR}/{number:08d}.json is corrupt") from None
        check_header(records, f"{self.root}/{MANIFEST_DIR}")
        self._next = numbered[-1][0] + 1
        return records

    def repair(self) -> None:
        """Nothing to repair: a record object is whole or absent."""

    def create_manifest(self, header: dict[str, Any]) -> None:
        self._put_record(0, {"kind": "header", "format": FORMAT, **header})

    def append(self, record: dict[str, Any]) -> None:
        self._check_lease()
        self._put_record(self._next, {"kind": "commit", **record})

    def _put_record(self, number: int, record: dict[str, Any]) -> None:
        name = f"{MANIFEST_DIR}/{number:08d}.json"
        if self._info(name).type != pafs.FileType.NotFound:
            raise SinkError(f"{self.root}: record {name} already exists: another writer is committing to this run")
        self._put(name, json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode())
        self._next = number + 1

    # ---- data files -------------------------------------------------------------------------------

    def data_files(self) -> list[str]:
        return sorted(self.location.relative(info.path) for kind in KINDS for info in self._list(kind, recursive=True)
                      if info.type == pafs.FileType.File and info.base_name.endswith(".parquet"))

    def foreign_entries(self) -> list[str]:
        """What a prefix without a manifest holds besides a lease."""
        return sorted(info.base_name for info in self._list("", recursive=False) if info.base_name != LEASE)

    def remove_uncommitted(self, committed: set[str]) -> None:
        """Delete this run's data files that no record names; fail if a recorded one has vanished."""
        present = set(self.data_files())
        for relative in sorted(present - committed):
            if PART_NAME.fullmatch(relative.rsplit("/", 1)[-1]):
                self.remove(relative)
        missing = sorted(committed - present)
        if missing:
            raise SinkError(f"{self.root}: committed file {missing[0]} is missing ({len(missing)} in all)")

    def read_config(self) -> str | None:
        if self._info(CONFIG).type != pafs.FileType.File:
            return None
        return self._call(_read_bytes, self.location.fs, self._path(CONFIG)).decode()

    def write_config(self, text: str) -> None:
        self._put(CONFIG, text.encode())

    def write_parquet(self, relative: str, table: pa.Table) -> None:
        """Start one upload under the file's final name: it appears whole when the upload completes, or not
        at all. `sync` waits for it."""
        def write() -> None:
            with self.location.fs.open_output_stream(self._path(relative)) as f:
                pq.write_table(table, f, compression="zstd", **_encodings(table))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="specray-upload")
        self._uploads.append(self._pool.submit(self._call, write))

    def sync(self, written: list[str]) -> None:
        """Wait for every upload started; an object is durable once its upload returns. Raises the first failure."""
        for future in self._drain():
            future.result()

    def _drain(self) -> list[Future]:
        uploads, self._uploads = self._uploads, []
        wait(uploads)
        return uploads

    def remove(self, relative: str) -> None:
        self._drain()  # an upload still running would land after the delete
        if self._info(relative).type == pafs.FileType.File:
            self._call(self.location.fs.delete_file, self._path(relative))

    # ---- plumbing ---------------------------------------------------------------------------------

    def _path(self, relative: str) -> str:
        return f"{self.location.path.rstrip('/')}/{relative}" if relative else self.location.path.rstrip("/")

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except (pa.ArrowException, OSError) as exc:
            raise SinkError(str(storage_error(self.root, exc))) from None

    def _info(self, relative: str) -> pafs.FileInfo:
        return self._call(self.location.fs.get_file_info, self._path(relative))

    def _list(self, relative: str, recursive: bool) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self._path(relative), allow_not_found=True, recursive=recursive)
        return self._call(self.location.fs.get_file_info, selector)

    def _put(self, relative: str, data: bytes) -> None:
        def put() -> None:
            with self.location.fs.open_output_stream(self._path(relative)) as f:
                f.write(data)
        self._call(put)

    def _read_json(self, relative: str) -> dict[str, Any] | None:
        if self._info(relative).type != pafs.FileType.File:
            return None
        try:
            return json.loads(self._call(_read_bytes, self.location.fs, self._path(relative)))
        except ValueError:
            return None


def _read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def _lapsed(lease: dict[str, Any]) -> bool:
    """A lease no live writer holds: too old, or its process is gone from this very host."""
    if time.time() - float(lease.get("time", 0)) > LEASE_S:
        return True
    if lease.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(lease.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return False
