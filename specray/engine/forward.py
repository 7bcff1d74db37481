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
                  features: list[torch.Tensor] | None = None, layers: tuple[int, ...] | None = None):
    """Append ragged per-row chunks (left-padded with holes); logits (B, keep, V) of the last `keep` slots
    and, with `hidden`, the hidden states of the last `hidden` slots: the last ones (B, hidden, H), or
    those after each of `layers` side by side (B, hidden, len(layers) * H). `features`: per row, the
    state behind each token of its chunk, for a feature-level draft: the target's, as captured at the
    layers it reads (len(chunk), L*H), or its own predicted one (len(chunk), H)."""
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
    inputs = dict(input_ids=ids.to(device), attention_mask=mask, position_ids=positions, use_cache=True,
                  **{cache_name: cache.kv}, **extra)
    if not hidden:
        return model(**inputs).logits[:, -keep:].float().cpu(), None
    out, states = forward_with_states(model, layers, **inputs)
    return out.logits[:, -keep:].float().cpu(), states[:, -hidden:].float().cpu()


def forward_with_states(model, layers: tuple[int, ...] | None = None, **inputs):
    """`model(**inputs)` and its hidden states after each of `layers` side by side [B, T, len(layers) * H],
    numbered as transformers numbers them (i: the output of decoder layer i; the last: the final state,
    normed); default: the final state alone. A Llama-like decoder's states are read by hooks on those
    modules, which is cheaper than `output_hidden_states`, which keeps every layer's states: on the
    embedded target at batch 32 that cost ~4 ms a round in prefills."""
    modules = state_modules(model, layers)
    if modules is None:
        out = model(**inputs, output_hidden_states=True)
        return out, side_by_side([out.hidden_states[i] for i in (layers or (-1,))])
    captured: dict[int, torch.Tensor] = {}

    def keep(i):
        return lambda module, args, output: captured.__setitem__(i, output[0] if isinstance(output, tuple) else output)

    handles = [module.register_forward_hook(keep(i)) for i, module in enumerate(modules)]
    try:
        out = model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return out, side_by_side([captured[i] for i in range(len(modules))])


def side_by_side(states: list[torch.Tensor]) -> torch.Tensor:
    """[.., L*H] from L states [.., H]; one state is handed back as it is (`torch.cat` would copy it, and a
    final-state-only read in a prefill at batch 32 is megabytes)."""
    return states[0] if len(states) == 1 else torch.cat(states, dim=-1)


def state_modules(model, layers: tuple[int, ...] | None) -> list[torch.nn.Module] | None:
    """The modules whose outputs are `model`'s hidden states after `layers` (default: the final state): a
    Llama-like decoder's layers and final `norm`, or None for a model without them."""
    inner = getattr(model, "model", None)
    norm, blocks = getattr(inner, "norm", None), getattr(inner, "layers", None)
    if not isinstance(norm, torch.nn.Module) or not isinstance(blocks, torch.nn.ModuleList):
        return None
    return [norm if i in (-1, len(blocks)) else blocks[i - 1] for i in (layers or (-1,))]


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
