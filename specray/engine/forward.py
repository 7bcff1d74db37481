"""One forward of a model over ragged per-row chunks appended to its `SlotCache`.

Every role (verification, drafting, calibration, the numerics check) feeds a model the same way: each
row's new tokens, laid out right-aligned in its row with masked holes on the left up to the widest row,
with positions and an attention mask from the row's own valid slots. When rows feed different numbers
of tokens the forward runs packed (`specray.engine.packing`): the model's matrix products see only the
real tokens. Only the logits that are needed are computed where the model allows it (verification needs
k+1 positions of a row, drafting one), and they come back flat, row after row. A feature-level draft also
reads, for every token it is fed, the target's hidden state before it (`features`), laid out the same way.
"""

import contextlib
import functools
import inspect

import torch

from specray.engine.attention import packs, use_packed_gqa
from specray.engine.kv_cache import SlotCache
from specray.engine.packing import Packing, packed


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
    """Append ragged per-row chunks to `cache`; the logits of each row's last `keep` tokens (a shorter chunk: all
    of its tokens), row after row [K, V], and with `hidden` the hidden states of each row's last `hidden` tokens,
    laid out alike: the last ones [K', H], or those after each of `layers` side by side [K', len(layers) * H].
    A row with an empty chunk contributes nothing. `features`: per row, the state behind each token of its chunk,
    for a feature-level draft: the target's, as captured at the layers it reads (len(chunk), L*H), or its own
    predicted one (len(chunk), H). Ragged chunks run packed (`specray.engine.packing`) when the model allows it."""
    width = max(len(c) for c in chunks)
    slot = torch.arange(width)
    valid = slot[None, :] >= width - torch.tensor([len(c) for c in chunks])[:, None]  # [B, width] real slots, right-aligned
    tokens = torch.tensor([token for chunk in chunks for token in chunk], dtype=torch.long)  # [T] row after row
    device = cache.lengths.device
    use_packed_gqa(model)
    mask, positions = cache.extend(valid.to(device))
    keeps_logits, cache_name = forward_keywords(type(model))
    logit_at, state_at = (valid & (slot >= width - n) for n in (keep, hidden))  # the slots whose outputs come back
    layout = Packing.of(valid) if packs(model) and not bool(valid.all()) else None
    if layout is None:  # [B, width], holes included
        ids = torch.zeros(valid.shape, dtype=torch.long).masked_scatter_(valid, tokens)
        fed = left_padded(features, width) if features is not None else None
    else:  # [1, T], the real tokens only
        ids, positions, logit_at, state_at = tokens[None], positions[valid.to(device)][None], logit_at[valid][None], state_at[valid][None]
        fed = torch.cat(features)[None] if features is not None else None
    logit_at, state_at = logit_at.to(device), state_at.to(device)
    inputs = dict(input_ids=ids.to(device), attention_mask=mask, position_ids=positions, use_cache=True, **{cache_name: cache.kv})
    if keeps_logits:  # a boolean mask: only those slots' logits are computed, flattened row after row. The
        # head then reads a row-major copy of those slots: an int here hands it a strided slice, which bf16
        # products on this CPU take a slow path for (53 ms instead of 0.3 for 8 rows through an 8k head; a
        # one-row slice, contiguous with its source's strides, made the product copy the whole 49k-row weight)
        inputs["logits_to_keep"] = logit_at
    if fed is not None:
        inputs["target_hidden"] = fed.to(device)
    with packed(layout) if layout is not None else contextlib.nullcontext():
        out, states = forward_with_states(model, layers, **inputs) if hidden else (model(**inputs), None)
    logits = out.logits if keeps_logits else out.logits[logit_at]
    return logits.float().cpu(), None if states is None else states[state_at].float().cpu()


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


def left_padded(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """(B, width, H) from per-row (n_b, H) tensors, each right-aligned (holes on the left are zeros)."""
    size = next(r.shape[-1] for r in rows)
    out = torch.zeros(len(rows), width, size)
    for b, row in enumerate(rows):
        if len(row):
            out[b, width - len(row) :] = row
    return out
