"""Model loading (hub id, local dir, GGUF, embedded), GGUF caching, draft/target pairing."""

from specray.models.pairing import ModelPair, check_pair, load_model, load_pair
from specray.models.prompts import encode_prompt
from specray.models.refs import DEFAULT_DRAFT, DEFAULT_TARGET, EMBEDDED, EMBEDDED_DRAFT

__all__ = [
    "DEFAULT_DRAFT",
    "DEFAULT_TARGET",
    "EMBEDDED",
    "EMBEDDED_DRAFT",
    "ModelPair",
    "check_pair",
    "encode_prompt",
    "load_model",
    "load_pair",
]
