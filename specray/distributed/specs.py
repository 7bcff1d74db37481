"""A domain's stop policy, decided once on the driver before any batch runs.

`policy.default` or the domain's `name`, with the domain's budget (`k_max`, `threshold`) folded into
the spec string, and a learned policy pinned to one registry version: retraining may publish a new
version while a job runs, and every batch of a run must use the version its results name.
"""

from __future__ import annotations

import json
from pathlib import Path

from specray.config import ConfigError, PolicyConfig
from specray.distributed.policy_actor import DomainPolicy
from specray.policies.artifacts import ArtifactError
from specray.policies.registry import artifact_stem
from specray.policies.spec import parse_spec

K_OPTION = {"static": "k", "heuristic": "k_max", "confidence": "k_max", "disco": "k_max", "specdecpp": "k_max"}
THRESHOLD_OPTION = {"confidence": "threshold", "disco": "tau", "specdecpp": "h"}
LEARNED = ("disco", "specdecpp")


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
    if name in LEARNED:
        stem, version = _pin(name, options.get("path"), policy.registry, domain)
        options["path"] = str(stem)
    spec = given if parse_spec(given) == (name, options) else format_spec(name, options)  # as written, when unchanged
    if parse_spec(spec) != (name, options):
        raise ConfigError(f"{key}: policy options {options} do not survive the spec grammar (a ',' in a path?)")
    return DomainPolicy(domain, spec, version, override.k_max, override.threshold)


def format_spec(name: str, options: dict) -> str:
    """The inverse of parse_spec: `name:key=value,...`."""
    return name + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")


def _option(table: dict[str, str], name: str, key: str) -> str:
    if name not in table:
        raise ConfigError(f"{key}: policy '{name}' has no such knob")
    return table[name]


def _pin(name: str, path: str | None, registry: str | None, domain: str) -> tuple[Path, str]:
    """The artifact stem and its version: the registry's newest for this domain, or the one `path=` names."""
    key = f"policy.per_domain.{domain}"
    if path is None:
        if registry is None:
            raise ConfigError(f"{key}: policy '{name}' needs weights; set policy.registry or use {name}:path=STEM")
        try:
            return artifact_stem(registry, name, domain)
        except ArtifactError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    meta = Path(f"{path}.json")
    if not meta.is_file():
        raise ConfigError(f"{key}: policy '{name}' weights {meta} do not exist")
    return Path(path), json.loads(meta.read_text()).get("version", "unversioned")
