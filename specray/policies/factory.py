"""Spec string -> stop policy, in two steps: `resolve_spec` once, `build_policy` wherever the engine runs.

Resolving reads the kind's record (`specray.policies.kinds`), folds in the knobs' defaults and, for a
learned kind, the knobs tuned at training time (the artifact's JSON sits between the defaults and the
spec's own options), and pins the artifact: `path=` (a stem of `.safetensors` + `.json`) or the newest
registry version for the domain, with its version and the SHA-256 of its files. A job resolves each
domain's spec once on the driver and sends the `ResolvedPolicy` to its workers; a worker builds it,
reading the artifact once and refusing it when its bytes are not the ones the driver checked.
`make_policy` does both steps in one process (tests, benchmarks, offline tools).
"""

from __future__ import annotations

from typing import Any

from specray.policies.artifacts import ArtifactError, checksum, read_artifact, tuned_knobs
from specray.policies.base import StopPolicy
from specray.policies.kinds import declared_in, get_kind, require_kind
from specray.policies.registry import artifact_stem
from specray.policies.resolved import PinnedArtifact, ResolvedPolicy
from specray.policies.spec import SOURCE_KNOBS, parse_spec, shortest_ngram


def resolve_spec(spec: str, domain: str = "global", registry: str | None = None, parsed: tuple[str, dict] | None = None) -> ResolvedPolicy:
    """`spec` resolved (see the module docstring); `parsed`: `parse_spec(spec)` when the caller has it already."""
    name, options = parsed or parse_spec(spec)
    kind = get_kind(name)
    options = dict(options)
    if kind.learned is None:
        version = "builtin" if kind.drafts else ""
        return ResolvedPolicy(spec, name, declared_in(name), _knobs({**kind.defaults(), **options}), version)
    stem, version = options.pop("path", None), "unversioned"
    if stem is None:
        if registry is None:
            raise ValueError(f"policy '{name}' needs weights: give {name}:path=STEM or a policy registry")
        stem, version = artifact_stem(registry, name, domain)
    data = read_artifact(stem, name)
    _, meta = kind.learned.load(stem, data)
    claimed = meta.get("version", version)
    if not isinstance(claimed, str):
        raise ArtifactError(f"{stem}.json: version must be a string, got {claimed!r}")
    knobs = {**kind.defaults(), **tuned_knobs(stem, meta, kind.threshold_knob), **options}
    return ResolvedPolicy(spec, name, declared_in(name), _knobs(knobs), claimed, PinnedArtifact(str(stem), checksum(data)))


def build_policy(resolved: ResolvedPolicy, references: list[list[int]] | None = None) -> StopPolicy | None:
    """The policy `resolved` describes; None for a kind that does not draft (`target`: target-only decoding)."""
    kind, knobs = require_kind(resolved.kind, resolved.module), dict(resolved.knobs)
    source = {key: knobs.pop(key) for key in SOURCE_KNOBS if key in knobs}
    if kind.learned is None:
        policy = kind.build(knobs, references)
    else:
        stem = resolved.artifact.stem
        data = read_artifact(stem, kind.name)
        if checksum(data) != resolved.artifact.sha256:
            raise ArtifactError(f"{stem}: the artifact changed after the run resolved it (checksum differs)")
        model, _ = kind.learned.load(stem, data)
        policy = kind.learned.build(model, knobs, resolved.version)
    if policy is not None:
        policy.draft_source = source.get("draft", policy.draft_source)
        policy.ngram_max = source.get("ngram", policy.ngram_max)
        policy.ngram_min = source.get("ngram_min", shortest_ngram(policy.draft_source, policy.ngram_max))
    return policy


def make_policy(
    spec: str,
    domain: str = "global",
    registry: str | None = None,
    references: list[list[int]] | None = None,
) -> StopPolicy | None:
    """The policy for `spec`, resolved and built here; None for `target` (target-only decoding)."""
    return build_policy(resolve_spec(spec, domain, registry), references)


def _knobs(knobs: dict) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(knobs.items()))
