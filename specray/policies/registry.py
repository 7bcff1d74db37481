"""A versioned store of learned stop policies: `<registry>/<kind>/<version>/<domain>.{safetensors,json}`.

`<registry>/<kind>/LATEST` names the newest version and is switched atomically after the version's
directory is complete, so a reader sees either the old version or the new one, never half of one.
Older versions stay in place and loadable by name. Kinds, versions and domains become path parts only
after a name check, so a tampered LATEST or a hostile domain cannot point outside the registry.
"""

import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from specray.policies.artifacts import ArtifactError, save_artifact

GLOBAL = "global"  # fallback for domains without a model of their own
NAME = re.compile(r"[a-z0-9_]+")  # a kind or a domain
VERSION = re.compile(r"v[0-9]{4,}")


def safe_name(value: str, pattern: re.Pattern, what: str) -> str:
    """`value` when it is a plain name fit to be one path part; an ArtifactError otherwise."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ArtifactError(f"registry {what} {value!r} is not a valid name (expected {pattern.pattern})")
    return value


def latest_version(registry: str | Path, kind: str) -> str:
    pointer = Path(registry) / safe_name(kind, NAME, "kind") / "LATEST"
    if not pointer.is_file():
        raise ArtifactError(f"no {kind} policy in registry: {pointer} does not exist")
    return safe_name(pointer.read_text().strip(), VERSION, f"version in {pointer}:")


def artifact_stem(registry: str | Path, kind: str, domain: str, version: str | None = None) -> tuple[Path, str]:
    """The stem to load for this domain (or the global fallback) and the version it belongs to."""
    version = safe_name(version or latest_version(registry, kind), VERSION, "version")
    directory = Path(registry) / safe_name(kind, NAME, "kind") / version
    safe_name(domain, NAME, "domain")
    root = Path(registry).resolve()
    for name in (domain, GLOBAL):
        if Path(directory, f"{name}.json").is_file():
            for suffix in (".json", ".safetensors"):  # a symlink may not lead outside the registry
                target = Path(directory, f"{name}{suffix}").resolve()
                if not target.is_relative_to(root):
                    raise ArtifactError(f"{directory / (name + suffix)}: resolves to {target}, outside the registry {root}")
            return directory / name, version
    raise ArtifactError(f"{directory}: no artifact for domain '{domain}' and no '{GLOBAL}' fallback")


def publish(registry: str | Path, kind: str, artifacts: dict[str, tuple[dict[str, torch.Tensor], dict]]) -> str:
    """Write a new version holding one artifact per domain, then point LATEST at it."""
    root = Path(registry) / safe_name(kind, NAME, "kind")
    for domain in artifacts:
        safe_name(domain, NAME, "domain")
    root.mkdir(parents=True, exist_ok=True)
    existing = [int(p.name[1:]) for p in root.iterdir() if VERSION.fullmatch(p.name) and p.is_dir()]  # junk like v1x ignored
    version = f"v{max(existing, default=0) + 1:04d}"
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        for domain, (tensors, meta) in artifacts.items():
            save_artifact(staging / domain, tensors, {**meta, "version": version, "domain": domain})
        staging.rename(root / version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    pointer = root / ".LATEST.tmp"
    pointer.write_text(version)
    os.replace(pointer, root / "LATEST")
    return version
