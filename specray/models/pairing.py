"""Draft/target pairs: speculative decoding only works when both speak the same vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specray.models.loading import load_model, prepare_for_inference
from specray.models.refs import DEFAULT_DRAFT, DEFAULT_TARGET, canonical_ref, draft_dir


@dataclass
class ModelPair:
    """A verified draft/target pair sharing one tokenizer."""

    target: torch.nn.Module
    draft: torch.nn.Module
    tokenizer: object
    target_ref: str
    draft_ref: str


def output_vocab_size(model: torch.nn.Module) -> int:
    """Rows of the model's LM head (can exceed `len(tokenizer)` when padded)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "out_features", None) is not None:
        return int(head.out_features)
    return int(model.config.vocab_size)


def check_pair(target, draft, target_tokenizer, draft_tokenizer) -> None:
    """Raise ValueError unless draft and target share output vocabulary and tokenizer.

    The verifier compares draft and target probabilities token id by token id;
    any mismatch silently corrupts acceptance, so refuse the pair up front.
    """
    t_size, d_size = output_vocab_size(target), output_vocab_size(draft)
    if t_size != d_size:
        raise ValueError(
            f"draft and target vocabularies differ: target output vocab size {t_size}, draft output vocab size {d_size}"
        )
    if target_tokenizer is draft_tokenizer:
        return
    t_len, d_len = len(target_tokenizer), len(draft_tokenizer)
    if t_len != d_len:
        raise ValueError(
            f"draft and target tokenizers differ: target tokenizer vocab size {t_len}, "
            f"draft tokenizer vocab size {d_len}"
        )
    if target_tokenizer.get_vocab() != draft_tokenizer.get_vocab():
        raise ValueError(
            f"draft and target tokenizers map tokens to different ids (both have vocab size {t_len})"
        )


def load_pair(target_ref: str = DEFAULT_TARGET, draft_ref: str = DEFAULT_DRAFT, dtype: str = "float32",
              device: str = "cpu", trust_remote_code: bool = False) -> ModelPair:
    """Load and check a pair; with no arguments, the embedded SmolLM2 and its shipped draft."""
    target_ref, draft_ref = canonical_ref(target_ref), canonical_ref(draft_ref)
    target, tokenizer = load_model(target_ref, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    if draft_dir(draft_ref) is not None:
        from specray.models.draft import load_draft

        draft = prepare_for_inference(load_draft(draft_dir(draft_ref), target), device)
        draft_tokenizer = tokenizer
    else:
        draft, draft_tokenizer = load_model(draft_ref, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    check_pair(target, draft, tokenizer, draft_tokenizer)
    return ModelPair(target=target, draft=draft, tokenizer=tokenizer, target_ref=target_ref, draft_ref=draft_ref)
