"""The registry's per-domain draft-source prior: how fast each draft source decodes each domain.

`specray retrain` writes it (kind `draft_sources`, one artifact per domain plus `global`) from label runs
that drafted with every source: per source, the replayed tokens/ms of its best static lookahead under a
cost model fitted to that source's own traces, with the evidence behind it (rounds, evaluated tokens,
acceptance). `draft: auto` reads the newest version on the driver before any model loads; a missing
version is no prior (every source is tried), a corrupt one is an error naming the file.
"""

from __future__ import annotations

import math
from pathlib import Path

from specray.policies.artifacts import ArtifactError, load_artifact
from specray.policies.registry import artifact_stem, latest_version
from specray.policies.sources import SOURCES

KIND = "draft_sources"


def prior_meta(rates: dict[str, dict]) -> dict:
    """The artifact's JSON for one domain: {source: {tokens_per_ms, ...evidence}}."""
    return {"kind": KIND, "sources": rates}


def load_prior(registry: str | Path, domain: str) -> tuple[dict[str, float], str] | None:
    """({source: tokens_per_ms}, version) for `domain` (or the global fallback); None when none was published."""
    try:
        latest_version(registry, KIND)
    except ArtifactError:
        if (Path(registry) / KIND / "LATEST").exists():
            raise
        return None
    stem, version = artifact_stem(registry, KIND, domain)
    _, meta = load_artifact(stem, KIND)
    sources = meta.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise ArtifactError(f"{stem}.json: 'sources' must map draft sources to their measured speed")
    rates = {}
    for source, entry in sources.items():
        rate = entry.get("tokens_per_ms") if isinstance(entry, dict) else None
        if source not in SOURCES:
            raise ArtifactError(f"{stem}.json: unknown draft source {source!r}")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise ArtifactError(f"{stem}.json: sources.{source}.tokens_per_ms must be a positive number, got {rate!r}")
        rates[source] = float(rate)
    return rates, version
