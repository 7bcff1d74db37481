"""A run's manifest: an append-only JSONL log whose records alone say which files and ids are committed.

Line 1 is a header naming what produced the run; each later line is one commit, or a `session`
record (a resume: the settings it changed that do not change outputs, such as workers or batch size). A record is written
with a single append and fsync'd, so a crash leaves at most one torn last line, which readers skip
and the next writer truncates: a commit exists exactly when its whole line does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FORMAT = 1


class ManifestError(RuntimeError):
    """The manifest is missing, corrupt, or belongs to another kind of run."""


def create_manifest(path: Path, header: dict[str, Any], tmp_dir: Path) -> None:
    """Write the header as a new manifest, atomically: a crash leaves either no manifest or a whole one."""
    write_atomic(path, _line({"kind": "header", "format": FORMAT, **header}), tmp_dir)


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one commit record and fsync it; when this returns the commit survives a crash."""
    with open(path, "ab") as f:
        f.write(_line({"kind": "commit", **record}))
        f.flush()
        os.fsync(f.fileno())


def read_records(path: Path) -> list[dict[str, Any]]:
    """The header followed by every whole commit record; a torn last line (a crash mid-append) is left out."""
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest; not a specray run directory")
    records, _ = _parse(path.read_bytes(), path)
    check_header(records, path)
    return records


def check_header(records: list[dict[str, Any]], where: Any) -> None:
    """ManifestError unless the first record is a header of the format this specray reads."""
    if not records or records[0].get("kind") != "header":
        raise ManifestError(f"{where}: no header line; not a specray manifest")
    if records[0].get("format") != FORMAT:
        raise ManifestError(f"{where}: manifest format {records[0].get('format')!r}, this specray reads {FORMAT}")


def repair_tail(path: Path) -> None:
    """Truncate a torn last line so the next append starts on a line of its own."""
    data = path.read_bytes()
    _, whole = _parse(data, path)
    if whole != len(data):
        with open(path, "r+b") as f:
            f.truncate(whole)
            os.fsync(f.fileno())


def _parse(data: bytes, path: Path) -> tuple[list[dict[str, Any]], int]:
    """The whole records and the bytes they span. An unterminated remainder is torn, and so is an
    unparseable last line (a filesystem may zero-fill a block after power loss); earlier damage is not."""
    lines = data.split(b"\n")  # the last item is what follows the final newline
    records, whole = [], 0
    for number, line in enumerate(lines[:-1], start=1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines) - 1:
                break
            raise ManifestError(f"{path}: line {number} is corrupt") from None
        whole += len(line) + 1
    return records, whole


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def write_atomic(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write under a temp name in `tmp_dir` (same filesystem), fsync, rename over `path`, fsync the dir."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{path.name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make renames and creations inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
