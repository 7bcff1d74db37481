"""A domain's stop policy, decided once on the driver before any batch runs.

`policy.default` or the domain's `name`, with the domain's budget (`k_max`, `threshold`) folded into
the spec string, and a learned policy pinned to one registry version: retraining may publish a new
version while a job runs, and every batch of a run must use the version its results name.
"""

from __future__ import annotations

from pathlib import Path

from specray.config import ConfigError, PolicyConfig
from specray.distributed.policy_actor import DomainPolicy
from specray.policies.artifacts import ArtifactError
from specray.policies.disco import DiscoClassifier
from specray.policies.factory import make_policy
from specray.policies.registry import artifact_stem
from specray.policies.spec import parse_spec
from specray.storage import is_remote
from specray.policies.specdecpp import AcceptanceHead

K_OPTION = {"static": "k", "heuristic": "k_max", "confidence": "k_max", "disco": "k_max", "specdecpp": "k_max"}
THRESHOLD_OPTION = {"confidence": "threshold", "disco": "tau", "specdecpp": "h"}
LOADERS = {"disco": DiscoClassifier.load, "specdecpp": AcceptanceHead.load}  # the learned policies


def domain_policy(policy: PolicyConfig, domain: str) -> DomainPolicy:
    """Resolve and pin `domain`'s policy; raises ConfigError naming the config key when it cannot run."""
    override = getattr(policy.per_domain, domain)
    key = f"policy.per_domain.{domain}"
    given = override.name or policy.default
    name, options = parse_spec(given)
    if name == "oracle":
        raise ConfigError(f"{key}: the oracle policy needs the target's outputs and only runs offline")
    if override.k_max is not None:
        options[_option(K_OPTION, name, f"{key}.k_max")] = override.k_max
    if override.threshold is not None:
        options[_option(THRESHOLD_OPTION, name, f"{key}.threshold")] = override.threshold
    version = "" if name == "target" else "builtin"
    if name in LOADERS:
        stem, version = _pin(name, options.get("path"), policy.registry, domain)
        options["path"] = str(stem)
    spec = given if parse_spec(given) == (name, options) else format_spec(name, options)  # as written, when unchanged
    if parse_spec(spec) != (name, options):
        raise ConfigError(f"{key}: policy options {options} do not survive the spec grammar (a ',' in a path?)")
    try:  # built here exactly as every worker will build it, so a value no worker accepts fails the job now
        make_policy(spec, domain=domain)
    except (ValueError, TypeError, OverflowError) as exc:  # ArtifactError is a ValueError
        raise ConfigError(f"{key}: policy {spec!r} cannot be built: {exc}") from None
    return DomainPolicy(domain, spec, version, override.k_max, override.threshold)


def label_policy(depth: int, domain: str) -> DomainPolicy:
    """A label run's policy for every domain: a fixed-depth draft, whatever `policy.*` and the registry say."""
    return DomainPolicy(domain, f"static:{depth}", "builtin", depth, None)


def format_spec(name: str, options: dict) -> str:
    """The inverse of parse_spec: `name:key=value,...`."""
    return name + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")


def _option(table: dict[str, str], name: str, key: str) -> str:
    if name not in table:
        raise ConfigError(f"{key}: policy '{name}' has no such knob")
    return table[name]


def _pin(name: str, path: str | None, registry: str | None, domain: str) -> tuple[Path | str, str]:
    """The artifact stem and its version: the registry's newest for this domain, or the one `path=` names.

    The artifact is loaded here, on the driver, so a missing or corrupt file fails the job at once,
    naming the file, instead of failing every batch on the workers and turning every row into an error."""
    key = f"policy.per_domain.{domain}"
    if path is None and registry is None:
        raise ConfigError(f"{key}: policy '{name}' needs weights; set policy.registry or use {name}:path=STEM")
    try:
        stem, version = artifact_stem(registry, name, domain) if path is None else (_stem(path), "unversioned")
        _, meta = LOADERS[name](stem)
        claimed = meta.get("version", version)
        if path is None and claimed != version:  # results name the version; it must be the one that was loaded
            raise ArtifactError(f"{stem}.json: claims version {claimed!r} but lies in registry version {version}")
        if not isinstance(claimed, str):
            raise ArtifactError(f"{stem}.json: version must be a string, got {claimed!r}")
    except ArtifactError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return stem, claimed


def _stem(path: str) -> Path | str:
    """A `path=` option as a local Path, or as the URI it is (pathlib would fold its `//`)."""
    return path if is_remote(path) else Path(path)
