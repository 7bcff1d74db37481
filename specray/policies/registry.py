"""A versioned store of learned stop policies: `<registry>/<kind>/<version>/<domain>.{safetensors,json}`.

`<registry>/<kind>/LATEST` names the newest version and is switched atomically after the version's
directory is complete, so a reader sees either the old version or the new one, never half of one.
Older versions stay in place and loadable by name. Kinds, versions and domains become path parts only
after a name check, so a tampered LATEST or a hostile domain cannot point outside the registry.

A registry may be a URI (s3://bucket/registry): a version's objects are written first and LATEST is
one PUT after them, so readers again see the old version or the new one whole. Workers load the
artifacts from the URI themselves, with credentials and AWS_ENDPOINT_URL from their environment.
"""

import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from specray.file_modes import plain_mode
from specray.policies.artifacts import ArtifactError, save_artifact
from specray.storage import StorageError, child_names, is_remote, local_path, read_bytes, write_bytes

GLOBAL = "global"  # fallback for domains without a model of their own
NAME = re.compile(r"[a-z0-9_]+")  # a kind or a domain
VERSION = re.compile(r"v[0-9]{4,}")


def safe_name(value: str, pattern: re.Pattern, what: str) -> str:
    """`value` when it is a plain name fit to be one path part; an ArtifactError otherwise."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ArtifactError(f"registry {what} {value!r} is not a valid name (expected {pattern.pattern})")
    return value


def latest_version(registry: str | Path, kind: str) -> str:
    pointer = _join(registry, safe_name(kind, NAME, "kind"), "LATEST")
    text = _read(pointer)
    if text is None:
        raise ArtifactError(f"no {kind} policy in registry: {pointer} does not exist")
    return safe_name(text.decode(errors="replace").strip(), VERSION, f"version in {pointer}:")


def artifact_stem(registry: str | Path, kind: str, domain: str, version: str | None = None) -> tuple[Path | str, str]:
    """The stem to load for this domain (or the global fallback) and the version it belongs to
    (a Path in a local registry, a URI in a remote one)."""
    registry = _root(registry)
    version = safe_name(version or latest_version(registry, kind), VERSION, "version")
    safe_name(domain, NAME, "domain")
    if is_remote(registry):
        directory = _join(registry, safe_name(kind, NAME, "kind"), version)
        for name in (domain, GLOBAL):
            if _read(f"{directory}/{name}.json") is not None:
                return f"{directory}/{name}", version
        raise ArtifactError(f"{directory}: no artifact for domain '{domain}' and no '{GLOBAL}' fallback")
    directory = Path(registry) / safe_name(kind, NAME, "kind") / version
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
    registry = _root(registry)
    for domain in artifacts:
        safe_name(domain, NAME, "domain")
    if is_remote(registry):
        return _publish_remote(str(registry), safe_name(kind, NAME, "kind"), artifacts)
    root = Path(registry) / safe_name(kind, NAME, "kind")
    root.mkdir(parents=True, exist_ok=True)
    existing = [int(p.name[1:]) for p in root.iterdir() if VERSION.fullmatch(p.name) and p.is_dir()]  # junk like v1x ignored
    version = f"v{max(existing, default=0) + 1:04d}"
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        for domain, (tensors, meta) in artifacts.items():
            save_artifact(staging / domain, tensors, {**meta, "version": version, "domain": domain})
        staging.chmod(plain_mode(directory=True))  # mkdtemp's 0700; save_artifact gave the files theirs
        staging.rename(root / version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    pointer = root / ".LATEST.tmp"
    pointer.write_text(version)
    os.replace(pointer, root / "LATEST")
    return version


def _publish_remote(registry: str, kind: str, artifacts: dict[str, tuple[dict[str, torch.Tensor], dict]]) -> str:
    """publish() on an object store: nothing names the new version's objects until the one PUT of LATEST.
    A version prefix that already holds objects (another publisher, a crashed one) is never reused."""
    root = _join(registry, kind)
    taken = [int(name[1:]) for name in _children(root) if VERSION.fullmatch(name)]
    version = f"v{max(taken, default=0) + 1:04d}"
    try:
        for domain, (tensors, meta) in artifacts.items():
            save_artifact(f"{root}/{version}/{domain}", tensors, {**meta, "version": version, "domain": domain})
        write_bytes(f"{root}/LATEST", version.encode())
    except StorageError as err:
        raise ArtifactError(str(err)) from None
    return version


def _root(registry: str | Path) -> str | Path:
    """A remote registry's URI as it is; a local one as a Path (file:// stripped)."""
    return str(registry) if is_remote(registry) else Path(local_path(str(registry)))


def _join(registry: str | Path, *parts: str) -> str:
    registry = _root(registry)
    return "/".join([str(registry).rstrip("/"), *parts]) if is_remote(registry) else str(Path(registry, *parts))


def _read(uri: str) -> bytes | None:
    try:
        return read_bytes(uri)
    except StorageError as err:
        raise ArtifactError(str(err)) from None


def _children(uri: str) -> list[str]:
    try:
        return child_names(uri)
    except StorageError as err:
        raise ArtifactError(str(err)) from None
