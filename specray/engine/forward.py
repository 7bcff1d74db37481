"""One forward of a model over ragged per-row chunks appended to its `SlotCache`.

Every role (verification, drafting, calibration, the numerics check) feeds a model the same way: each
row's new tokens, left-padded with masked holes to the widest row, with positions and an attention
mask from the row's own valid slots. Only the last `keep` slots' logits are computed where the model
allows it, since verification needs k+1 positions and drafting one. A feature-level draft also reads,
for every token it is fed, the target's hidden state before it (`features`), padded the same way.
"""

import functools
import inspect

import torch

from specray.engine.attention import use_packed_gqa
from specray.engine.kv_cache import SlotCache


@functools.cache
def forward_keywords(model_class: type) -> tuple[bool, str]:
    """Whether `forward` can skip unneeded logits, and what it calls the KV cache: transformers renamed
    `past_key_values` to `cache` (the old name warns on every forward, and is going away)."""
    params = inspect.signature(model_class.forward).parameters
    return "logits_to_keep" in params, "cache" if "cache" in params else "past_key_values"


def cache_keyword(model) -> str:
    """The keyword `model.forward` takes its KV cache by."""
    return forward_keywords(type(model))[1]


def model_forward(model, cache: SlotCache, chunks: list[list[int]], keep: int, hidden: int = 0,
                  features: list[torch.Tensor] | None = None):
    """Append ragged per-row chunks (left-padded with holes); logits (B, keep, V) of the last `keep` slots
    and, with `hidden`, the last hidden states (B, hidden, H) of the last `hidden` slots. `features`: per
    row, the target state behind each token of its chunk (len(chunk), H), for a feature-level draft."""
    width = max(len(c) for c in chunks)
    ids = torch.zeros(len(chunks), width, dtype=torch.long)
    valid = torch.zeros(len(chunks), width, dtype=torch.bool)
    for i, chunk in enumerate(chunks):
        if chunk:
            ids[i, width - len(chunk) :] = torch.tensor(chunk)
            valid[i, width - len(chunk) :] = True
    device = cache.valid.device
    contiguous_head_input(model)
    use_packed_gqa(model)
    mask, positions = cache.extend(valid.to(device))
    keeps_logits, cache_name = forward_keywords(type(model))
    extra = {"logits_to_keep": keep} if keeps_logits else {}
    if features is not None:
        extra["target_hidden"] = left_padded(features, width).to(device)
    norm = final_norm(model) if hidden else None
    captured: list[torch.Tensor] = []
    handle = norm.register_forward_hook(lambda module, args, output: captured.append(output)) if norm is not None else None
    try:
        out = model(
            input_ids=ids.to(device), attention_mask=mask, position_ids=positions,
            use_cache=True, output_hidden_states=hidden > 0 and norm is None, **{cache_name: cache.kv}, **extra,
        )
    finally:
        if handle is not None:
            handle.remove()
    states = (captured[-1] if captured else out.hidden_states[-1]) if hidden else None
    return out.logits[:, -keep:].float().cpu(), None if states is None else states[:, -hidden:].float().cpu()


def final_norm(model) -> torch.nn.Module | None:
    """The module whose output is `model`'s last hidden state (a Llama-like decoder's final `norm`), or None.
    Reading it there is cheaper than `output_hidden_states`, which keeps every layer's states: on the
    embedded target at batch 32 that cost ~4 ms a round in prefills."""
    norm = getattr(getattr(model, "model", None), "norm", None)
    return norm if isinstance(norm, torch.nn.Module) else None


def contiguous_head_input(model) -> None:
    """Hand `model`'s LM head a contiguous input. `logits_to_keep` slices the last slots out of the hidden
    states, a strided view when a chunk is wider than what is kept (prefills, catch-up draft steps), and
    on this CPU a bf16 matrix product takes a slow path for a strided input (53 ms instead of 0.3 ms for
    8 rows through an 8k head); copying the few kept rows first costs nothing. The copy must have
    row-major strides: a one-row slice already counts as contiguous, so `.contiguous()` hands it back with
    the strides of its source, and the product then copies the whole weight (73 ms instead of 2.4 ms for
    one row through the embedded target's 49k head). Installed once per model."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "_contiguous_input", False):
        return
    head.register_forward_pre_hook(lambda module, args: (args[0].clone(memory_format=torch.contiguous_format), *args[1:]))
    head._contiguous_input = True


def left_padded(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """(B, width, H) from per-row (n_b, H) tensors, each right-aligned (holes on the left are zeros)."""
    size = next(r.shape[-1] for r in rows)
    out = torch.zeros(len(rows), width, size)
    for b, row in enumerate(rows):
        if len(row):
            out[b, width - len(row) :] = row
    return out
