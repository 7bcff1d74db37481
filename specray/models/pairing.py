"""Draft/target pairs: speculative decoding only works when both speak the same vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specray.models.loading import load_checkpoint, prepare_for_inference, torch_dtype
from specray.models.precision import AUTO, Precision, auto_precision, check_dtype_runs
from specray.models.refs import DEFAULT_DRAFT, DEFAULT_TARGET, canonical_ref, draft_dir


@dataclass
class ModelPair:
    """A verified draft/target pair sharing one tokenizer, each model in its own precision."""

    target: torch.nn.Module
    draft: torch.nn.Module
    tokenizer: object
    target_ref: str
    draft_ref: str
    precision: Precision


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


def load_model(ref: str, dtype: str | torch.dtype = "float32", device: str | torch.device = "cpu",
               trust_remote_code: bool = False):
    """Return `(model, tokenizer)` for a hub id, local dir, `.gguf` path, `embedded` or a distilled draft.

    A distilled draft (`embedded-draft`, or a `specray distill` output dir)
    is rebuilt around its target's shared weights, so this loads the target
    too; `load_pair` shares them instead of loading twice.
    """
    distilled = draft_dir(canonical_ref(ref))
    if distilled is None:
        return load_checkpoint(ref, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    from specray.models.draft import draft_target_ref

    pair = load_pair(draft_target_ref(distilled), ref, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    return pair.draft, pair.tokenizer


def load_pair(target_ref: str = DEFAULT_TARGET, draft_ref: str = DEFAULT_DRAFT, dtype: str = AUTO,
              device: str = "cpu", trust_remote_code: bool = False, batch_size: int = 1) -> ModelPair:
    """Load and check a pair; with no arguments, the embedded SmolLM2 and its shipped draft.

    `dtype="auto"` picks each model's precision by measuring both on its own work at `batch_size`, the
    number of sequences the pair will decode at once (`specray.models.precision`); any other dtype is used
    for both.
    """
    target_ref, draft_ref = canonical_ref(target_ref), canonical_ref(draft_ref)
    if dtype != AUTO:
        check_dtype_runs(torch_dtype(dtype), device)
    load_dtype = "float32" if dtype == AUTO else dtype
    target, tokenizer = load_model(target_ref, dtype=load_dtype, device=device, trust_remote_code=trust_remote_code)
    distilled = draft_dir(draft_ref)

    def draft_in(draft_dtype: torch.dtype | None):
        """(draft, its tokenizer); a distilled draft is built around the target's weights as they are now."""
        if distilled is not None:
            from specray.models.distilled import load_distilled

            return prepare_for_inference(load_distilled(distilled, target, draft_dtype), device), tokenizer
        return load_model(draft_ref, dtype=draft_dtype or load_dtype, device=device, trust_remote_code=trust_remote_code)

    draft, draft_tokenizer = draft_in(None)
    check_pair(target, draft, tokenizer, draft_tokenizer)
    if dtype != AUTO:
        return ModelPair(target, draft, tokenizer, target_ref, draft_ref, Precision(torch_dtype(dtype), torch_dtype(dtype)))
    precision = auto_precision(target, draft, device, batch_size)
    target.to(precision.target)  # in place: a distilled draft's shared modules follow
    if distilled is not None and precision.draft != precision.target:
        draft = draft_in(precision.draft)[0]  # rebuilt with its own copy of the shared weights
    else:
        draft.to(precision.draft)
    return ModelPair(target, draft, tokenizer, target_ref, draft_ref, precision)
