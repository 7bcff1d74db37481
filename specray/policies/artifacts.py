"""Learned-policy weights on disk: `<stem>.safetensors` + `<stem>.json`, never pickle. A stem may be a
URI (s3://bucket/registry/disco/v0001/code): the two objects are then read and written whole.

Every failure names the file and what is wrong with it, so a corrupt registry entry is never
mistaken for a default. Contents are checked as well as the format, because a job validates its
policies once on the driver and then trusts them on every worker: exactly the expected tensors, of a
floating dtype and finite (a NaN weight or a bool tensor loads fine and silently stops all drafting),
and the tuned knobs in the JSON (threshold, `k_max`) of the right type and range.
"""

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from specray.file_modes import save_safetensors
from specray.policies.kinds import MAX_LOOKAHEAD, is_probability
from specray.storage import StorageError, is_remote, read_bytes, write_bytes


class ArtifactError(ValueError):
    pass


def save_artifact(stem: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    if is_remote(stem):
        write_bytes(f"{stem}.safetensors", save({k: v.detach().contiguous().float() for k, v in tensors.items()}))
        write_bytes(f"{stem}.json", json.dumps(meta, indent=2, sort_keys=True).encode())
        return
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors({k: v.detach().contiguous().float() for k, v in tensors.items()}, f"{stem}.safetensors")
    Path(f"{stem}.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def read_artifact(stem: str | Path, kind: str) -> dict[str, bytes]:
    """Both files' bytes (local or remote, read whole), by path."""
    try:
        data = {path: read_bytes(path) for path in (f"{stem}.safetensors", f"{stem}.json")}
    except StorageError as err:
        raise ArtifactError(str(err)) from None
    for path, content in data.items():
        if content is None:
            raise ArtifactError(f"{kind} artifact missing: {path} does not exist")
    return data


def checksum(data: dict[str, bytes]) -> str:
    """SHA-256 over both files of an artifact, in a fixed order (weights, then metadata)."""
    digest = hashlib.sha256()
    for path in sorted(data, key=lambda p: p.endswith(".json")):
        digest.update(hashlib.sha256(data[path]).digest())
    return digest.hexdigest()


def load_artifact(stem: str | Path, kind: str, data: dict[str, bytes] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Load both files (or parse `data`, as `read_artifact` returned it) and check the metadata's kind."""
    weights, meta_path = f"{stem}.safetensors", f"{stem}.json"
    data = read_artifact(stem, kind) if data is None else data
    try:
        meta = json.loads(data[meta_path])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{meta_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        raise ArtifactError(f"{meta_path}: expected kind '{kind}', found {meta.get('kind') if isinstance(meta, dict) else meta!r}")
    try:
        tensors = load(data[weights])
    except (SafetensorError, ValueError) as err:
        raise ArtifactError(f"{weights}: unreadable safetensors ({err})") from None
    return tensors, meta


def require_shapes(stem: str | Path, tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> None:
    """Every named tensor present with this shape (-1 = any size)."""
    weights = f"{stem}.safetensors"
    for name, shape in shapes.items():
        if name not in tensors:
            raise ArtifactError(f"{weights}: tensor '{name}' missing (has {sorted(tensors)})")
        actual = tuple(tensors[name].shape)
        if len(actual) != len(shape) or any(s not in (-1, a) for s, a in zip(shape, actual)):
            raise ArtifactError(f"{weights}: tensor '{name}' has shape {actual}, expected {shape}")


def require_exact_tensors(stem: str | Path, tensors: dict[str, torch.Tensor], names: set[str]) -> None:
    """No tensor beyond `names`, and every tensor floating point and finite."""
    weights = f"{stem}.safetensors"
    extra = sorted(set(tensors) - names)
    if extra:
        raise ArtifactError(f"{weights}: unexpected tensor(s) {extra} (expected {sorted(names)})")
    for name in sorted(tensors):
        tensor = tensors[name]
        if not tensor.is_floating_point():
            raise ArtifactError(f"{weights}: tensor '{name}' has dtype {tensor.dtype}, expected a floating-point dtype")
        if not bool(torch.isfinite(tensor).all()):
            raise ArtifactError(f"{weights}: tensor '{name}' holds NaN or infinite values")


def tuned_knobs(stem: str | Path, meta: dict, threshold: str) -> dict:
    """The threshold (a probability) and k_max chosen at training time, checked; explicit options override them."""
    knobs = {key: meta[key] for key in (threshold, "k_max") if key in meta}
    value = knobs.get(threshold)
    if threshold in knobs and not is_probability(value):
        raise ArtifactError(f"{stem}.json: {threshold} must be a number in [0, 1], got {value!r}")
    value = knobs.get("k_max")
    if "k_max" in knobs and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LOOKAHEAD):
        raise ArtifactError(f"{stem}.json: k_max must be an integer in [1, {MAX_LOOKAHEAD}], got {value!r}")
    return knobs
