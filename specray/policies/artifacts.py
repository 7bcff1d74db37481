"""Learned-policy weights on disk: `<stem>.safetensors` + `<stem>.json`, never pickle.

Every failure names the file and what is wrong with it, so a corrupt registry entry is never
mistaken for a default.
"""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class ArtifactError(ValueError):
    pass


def save_artifact(stem: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().float() for k, v in tensors.items()}, f"{stem}.safetensors")
    Path(f"{stem}.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def load_artifact(stem: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Load both files and check the metadata's kind."""
    weights, meta_path = Path(f"{stem}.safetensors"), Path(f"{stem}.json")
    for path in (weights, meta_path):
        if not path.is_file():
            raise ArtifactError(f"{kind} artifact missing: {path} does not exist")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{meta_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        raise ArtifactError(f"{meta_path}: expected kind '{kind}', found {meta.get('kind') if isinstance(meta, dict) else meta!r}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
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
