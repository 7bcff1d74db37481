"""The registry's per-domain draft-source prior: how fast each draft source decodes each domain.

`specray retrain` writes it (kind `draft_sources`, one artifact per domain plus `global`) from label runs
that drafted with every source: per source, the replayed tokens/ms of its best static lookahead under a
cost model fitted to that source's own traces, with the evidence behind it (prompts, rounds, evaluated
tokens, acceptance). `draft: auto` reads the newest version on the driver before any model loads; a
missing version is no prior (every source is tried), a corrupt one is an error naming the file.

How much the prior weighs, in batches (`DraftPrior.batches`): one per prompt behind it, since a label run
times every prompt with every source, as many prompts as `draft: auto` would need batches at batch size 1
to learn as much; at most `MAX_PRIOR_BATCHES`, because the prior is a replay under a fitted cost model of
other prompts, not this job's policy on this job's prompts, so a few live batches of a source must be able
to overturn it. Versions written before prompts were counted weigh one batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from specray.policies.artifacts import ArtifactError, load_artifact
from specray.policies.registry import artifact_stem, latest_version
from specray.policies.sources import SOURCES

KIND = "draft_sources"
MAX_PRIOR_BATCHES = 8


@dataclass(frozen=True)
class DraftPrior:
    speeds: dict[str, float]  # source -> tokens/ms (any common scale: only ratios are used)
    batches: dict[str, float]  # source -> how many live batches its speed weighs as
    version: str = ""


def prior_meta(rates: dict[str, dict]) -> dict:
    """The artifact's JSON for one domain: {source: {tokens_per_ms, ...evidence}}."""
    return {"kind": KIND, "sources": rates}


def load_prior(registry: str | Path, domain: str) -> DraftPrior | None:
    """The prior for `domain` (or the global fallback); None when none was published."""
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
    rates, batches = {}, {}
    for source, entry in sources.items():
        rate = entry.get("tokens_per_ms") if isinstance(entry, dict) else None
        if source not in SOURCES:
            raise ArtifactError(f"{stem}.json: unknown draft source {source!r}")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise ArtifactError(f"{stem}.json: sources.{source}.tokens_per_ms must be a positive number, got {rate!r}")
        prompts = entry.get("prompts", 1)
        if isinstance(prompts, bool) or not isinstance(prompts, int) or prompts < 1:
            raise ArtifactError(f"{stem}.json: sources.{source}.prompts must be a positive integer, got {prompts!r}")
        rates[source], batches[source] = float(rate), float(min(prompts, MAX_PRIOR_BATCHES))
    return DraftPrior(rates, batches, version)
