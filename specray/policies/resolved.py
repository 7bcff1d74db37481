"""A stop policy resolved once, as plain data: what a job's driver sends its policy actors and workers.

The kind by name and declaring module (its record is looked up, or its file imported, where the policy
is built), every knob with the defaults, the
artifact's tuned knobs and the spec's own options folded in, the version results name, and for a
learned kind the artifact's stem with the SHA-256 of its files. No torch: policy actors hold these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PinnedArtifact:
    stem: str  # a local path or a URI
    sha256: str  # `specray.policies.artifacts.checksum` of both files


@dataclass(frozen=True)
class ResolvedPolicy:
    spec: str
    kind: str
    module: str  # where the kind is declared: a process that has not registered it imports this
    knobs: tuple[tuple[str, Any], ...]
    version: str
    artifact: PinnedArtifact | None = None
