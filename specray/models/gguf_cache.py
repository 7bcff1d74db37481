"""GGUF -> safetensors cache: dequantising costs ~20 s, reading safetensors back a few."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from specray.file_modes import as_if_created

log = logging.getLogger(__name__)

CACHE_ENV = "SPECRAY_CACHE"
MARKER = "specray_gguf.json"


def cache_root() -> Path:
    """Root of specray's cache: `$SPECRAY_CACHE`, else `~/.cache/specray`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "specray")


def cache_key(gguf_path: Path) -> str:
    """Key from the file's name, size and mtime: cheap, and changes when the file does."""
    stat = gguf_path.stat()
    digest = hashlib.sha256(f"{gguf_path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return f"{gguf_path.stem}-{digest}"


def cache_dir_for(gguf_path: Path) -> Path:
    """Where the dequantised copy of `gguf_path` lives (it may not exist yet)."""
    return cache_root() / "gguf" / cache_key(Path(gguf_path).resolve())


def dequantize_gguf(gguf_path: Path):
    """Load a GGUF through transformers as a dense float32 model plus its tokenizer (the slow part)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(gguf_file=name, dequantize=True)
    )
    return model, tokenizer


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF into a save_pretrained directory (model + tokenizer, chat template included)."""
    model, tokenizer = dequantize_gguf(gguf_path)
    model.hf_quantizer = None  # fully dequantised: nothing GGUF-specific is left to serialise
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    strip_quantization_config(out_dir / "config.json")


def strip_quantization_config(config_path: Path) -> None:
    """Drop the GGUF `quantization_config`: kept, it routes reloads through the
    GGUF quantizer and the reloaded model runs ~10x slower."""
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def ensure_gguf_cache(gguf_path: str | os.PathLike) -> Path:
    """Return a safetensors directory for `gguf_path`, converting it on first use.

    Written to a temp dir beside the target and renamed into place, so a
    crash or a concurrent loader never sees a half-written cache.
    """
    gguf_path = Path(gguf_path).resolve()
    target = cache_dir_for(gguf_path)
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("dequantising %s into %s (first use only)", gguf_path, target)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        convert_gguf(gguf_path, tmp)
        marker = {"source": str(gguf_path), "size": gguf_path.stat().st_size}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        as_if_created(tmp)
        os.rename(tmp, target)
    except OSError:
        if not (target / MARKER).is_file():
            raise
        log.info("another process filled %s first", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
