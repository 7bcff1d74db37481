"""Load a causal LM and its tokenizer from a hub id, a local dir, a GGUF file or a named ref."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from specray.models.gguf_cache import ensure_gguf_cache
from specray.models.refs import EMBEDDED, canonical_ref, embedded_gguf_path

log = logging.getLogger(__name__)


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Accept "float32"/"bfloat16"/... as well as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value


def resolve_location(ref: str) -> str:
    """Turn a ref into something `from_pretrained` reads: a GGUF becomes its safetensors cache dir."""
    ref = canonical_ref(ref)
    if ref == EMBEDDED:
        return str(ensure_gguf_cache(embedded_gguf_path()))
    if ref.endswith(".gguf"):
        if not Path(ref).is_file():
            raise FileNotFoundError(f"GGUF file not found: {ref}")
        return str(ensure_gguf_cache(ref))
    return ref


def prepare_for_inference(model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """Frozen, eval-mode, on `device`: nothing here trains through the loaded models."""
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def load_checkpoint(ref: str, dtype: str | torch.dtype = "float32", device: str | torch.device = "cpu",
                    trust_remote_code: bool = False):
    """Return `(model, tokenizer)` for a hub id, local dir, `.gguf` path or `embedded`: a checkpoint that is a
    whole model (a distilled draft is not: `specray.models.pairing.load_model` builds it around its target)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = canonical_ref(ref)
    if trust_remote_code:
        log.warning("trust_remote_code=True: running model code shipped with %s", ref)
    location = resolve_location(ref)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    return prepare_for_inference(model, device), tokenizer
