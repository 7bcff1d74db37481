"""A domain's stop policy, resolved once on the driver before any batch runs.

`policy.default` or the domain's `name`, with the domain's budget (`k_max`, `threshold`) folded into
the spec string, and a learned policy pinned to one registry version: retraining may publish a new
version while a job runs, and every batch of a run must use the version its results name. Each spec is
resolved here once (`factory.resolve_spec`: kind, knobs, version, artifact and its checksum); the policy
actors send that `ResolvedPolicy` to the workers, which load the artifact once and check its checksum. With
`policy.per_domain.<d>.draft` the spec drafts with that source; with `auto`, this is done once per
source of `policy.auto_sources`, and a learned policy is pinned to the artifact trained on that source's
traces where the registry has one.
"""

from __future__ import annotations

from pathlib import Path

from specray.config import ConfigError, PolicyConfig
from specray.distributed.policy_actor import DomainPolicy
from specray.policies.artifacts import ArtifactError
from specray.policies.draft_prior import DraftPrior, load_prior
from specray.policies.factory import build_policy, resolve_spec
from specray.policies.kinds import PolicyKind, get_kind
from specray.policies.registry import GLOBAL, artifact_stem
from specray.policies.resolved import ResolvedPolicy
from specray.policies.sources import AUTO, DEFAULT, NONE, format_spec, registry_name, spec_source, with_source
from specray.policies.spec import parse_spec
from specray.storage import is_remote


def domain_policy(policy: PolicyConfig, domain: str) -> DomainPolicy:
    """Resolve and pin `domain`'s policy, once per draft source it may use; raises ConfigError naming the key.

    `policy.per_domain.<d>.draft` picks the source (overriding the spec's `draft=`), or `auto`: every one of
    `policy.auto_sources`, each resolved here so that a source that cannot run fails the job now."""
    override = getattr(policy.per_domain, domain)
    given = override.name or policy.default
    draft = override.draft or spec_source(given)
    sources = tuple(policy.auto_sources) if draft == AUTO else (draft,)
    resolved = {s: _resolve(policy, domain, _with_source(given, s, f"policy.per_domain.{domain}.draft"), s) for s in sources}
    prior = _prior(policy.registry, domain) if draft == AUTO else None
    first = resolved[sources[0]]
    return DomainPolicy(domain, first.spec, first.version, override.k_max, override.threshold, draft,
                        {source: one.spec for source, one in resolved.items()}, prior,
                        resolved={one.spec: one for one in resolved.values()})


def label_policy(depth: int, sources: list[str], domain: str) -> DomainPolicy:
    """A label run's policy for every domain: a fixed-depth draft from each of `sources` on every prompt,
    whatever `policy.*` and the registry say."""
    specs = [with_source(f"static:{depth}", source) for source in sources]
    return DomainPolicy(domain, specs[0], "builtin", depth, None, sources[0], {sources[0]: specs[0]}, None, tuple(specs[1:]),
                        resolved={spec: resolve_spec(spec, domain) for spec in specs})


def _with_source(given: str, source: str, key: str) -> str:
    try:
        return with_source(given, source)
    except ValueError as exc:
        raise ConfigError(f"{key}={source}: {exc}") from None


def _resolve(policy: PolicyConfig, domain: str, given: str, source: str) -> ResolvedPolicy:
    """One source's policy: budget folded in, learned weights pinned and checked, resolved once."""
    override = getattr(policy.per_domain, domain)
    key = f"policy.per_domain.{domain}"
    name, options = parse_spec(given)
    kind = get_kind(name)
    if kind.offline:
        raise ConfigError(f"{key}: the {name} policy needs the target's outputs and only runs offline")
    budget = kind.drafts or source != NONE or override.draft is None  # `draft: none`: no budget to fold in
    if budget and override.k_max is not None:
        options[_knob(kind.k_knob, name, f"{key}.k_max")] = override.k_max
    if budget and override.threshold is not None:
        options[_knob(kind.threshold_knob, name, f"{key}.threshold")] = override.threshold
    pinned = None
    if kind.learned is not None:
        stem, pinned = _pin(kind, options.get("path"), policy.registry, domain, source)
        options["path"] = str(stem)
    spec = given if parse_spec(given) == (name, options) else format_spec(name, options)  # as written, when unchanged
    if parse_spec(spec) != (name, options):
        raise ConfigError(f"{key}: policy options {options} do not survive the spec grammar (a ',' in a path?)")
    try:
        resolved = resolve_spec(spec, domain, parsed=(name, options))
        if pinned is not None and resolved.version != pinned:  # results name the version; it must be the one loaded
            raise ArtifactError(f"{stem}.json: claims version {resolved.version!r} but lies in registry version {pinned}")
        if resolved.artifact is None:  # built here as every worker will build it, so a value no worker accepts fails now
            build_policy(resolved)
    except (ValueError, TypeError, OverflowError) as exc:  # ArtifactError is a ValueError
        raise ConfigError(f"{key}: policy {spec!r} cannot be built: {exc}") from None
    return resolved


def _prior(registry: str | None, domain: str) -> DraftPrior | None:
    """The registry's draft-source prior for `domain`, or None when it has none."""
    if registry is None:
        return None
    try:
        return load_prior(registry, domain)
    except ArtifactError as exc:
        raise ConfigError(f"policy.per_domain.{domain}.draft=auto: {exc}") from None


def source_stem(registry: str, kind: str, domain: str, source: str) -> tuple[Path | str, str]:
    """The stem for (domain, source): `<domain>__<source>`, then `global__<source>`, then the model-draft
    `<domain>` / `global` artifacts every registry has (a source without policies of its own uses those)."""
    if source not in (DEFAULT, NONE):
        for name in (registry_name(domain, source), registry_name(GLOBAL, source)):
            stem, version = artifact_stem(registry, kind, name)
            if str(stem).rsplit("/", 1)[-1] == name:  # a Path locally, a URI in a remote registry
                return stem, version
    return artifact_stem(registry, kind, domain)


def _knob(knob: str | None, name: str, key: str) -> str:
    if knob is None:
        raise ConfigError(f"{key}: policy '{name}' has no such knob")
    return knob


def _pin(kind: PolicyKind, path: str | None, registry: str | None, domain: str, source: str) -> tuple[Path | str, str | None]:
    """The artifact stem and the registry version it lies in (None for `path=`): the registry's newest for this
    domain and draft source (see `source_stem`), or the one `path=` names. `resolve_spec` then loads and
    checks it here, on the driver, so a missing or corrupt file fails the job at once, naming the file,
    instead of failing every batch on the workers and turning every row into an error."""
    key, name = f"policy.per_domain.{domain}", kind.name
    if path is not None:
        return _stem(path), None
    if registry is None:
        raise ConfigError(f"{key}: policy '{name}' needs weights; set policy.registry or use {name}:path=STEM")
    try:
        return source_stem(registry, name, domain, source)
    except ArtifactError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _stem(path: str) -> Path | str:
    """A `path=` option as a local Path, or as the URI it is (pathlib would fold its `//`)."""
    return path if is_remote(path) else Path(path)
