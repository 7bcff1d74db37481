"""Grouped-query attention that never copies the keys and values out to every query head.

Llama-like models share each key/value head among a group of query heads (the embedded target: 9 query
heads over 3 key/value heads). For one query token per row transformers folds a group's query heads
into the query axis and attends over the shared keys and values (`pack_gqa`); for more than one token
under a mask, which is every verification of drafted tokens, every catch-up read of a draft and every
prefill, it first copies each layer's keys and values out to all the query heads (`repeat_kv`). That
copy grows with the context and made a wide verification dear on a CPU where the wide matrix products
are nearly free: measured on the embedded target in bf16 at batch 8 over 150-token contexts, attention
took 0.60 ms a layer for 2 tokens a row against 0.19 ms with the heads folded (0.16 ms for 1 token),
and a forward verifying 2 tokens a row spent 13 ms more than one verifying 1 in copies alone.

So the engine's models attend through `packed_gqa_attention`: the query heads of a group stacked along
the query axis (n_rep * q queries over the group's key/value head), the row's mask repeated to match.
Each query meets the same keys, values and mask as before, so the arithmetic per head is unchanged;
for one token per row it is exactly transformers' own folding. Models that do not share key/value
heads, masks that differ per head and attention kinds other than SDPA run transformers' code.

A packed forward (`specray.engine.packing`) reaches attention with every row's queries side by side in
one sequence; they are spread over their rows first and packed again after, so what each query attends
to is the same in both layouts. Only models whose attention all runs here can be packed (`packs`).
"""

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from specray.engine import packing

PACKED_SDPA = "specray_packed_sdpa"


def packed_gqa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """transformers' attention-function contract: query (B, H, q, d), key and value (B, G, kv, d), an additive or
    boolean mask (B, 1, q, kv) shared by every head; returns ((B, q, H, d), None). In a packed forward the
    query comes packed (1, H, T, d) and so does the result (1, T, H, d)."""
    layout = packing.current()
    if layout is None:
        return row_attention(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    out, _ = row_attention(module, layout.to_rows(query), key, value, attention_mask, dropout, scaling, **kwargs)
    return layout.to_tokens(out), None


def row_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """`packed_gqa_attention` over rows: query (B, H, q, d) -> ((B, q, H, d), None)."""
    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, q_length, dim = query.shape
    shared_mask = attention_mask is not None and attention_mask.shape[1:3] == (1, q_length)  # (B, 1, q, kv)
    if groups == 1 or q_length == 1 or not shared_mask or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    kv_heads = heads // groups
    folded = query.reshape(batch, kv_heads, groups * q_length, dim)  # a group's heads one after another along q
    mask = repeated_mask(attention_mask, groups)
    out = torch.nn.functional.scaled_dot_product_attention(folded, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.reshape(batch, heads, q_length, dim).transpose(1, 2).contiguous(), None


def repeated_mask(mask: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, 1, groups * q, kv): each head's copy of the rows' (B, 1, q, kv) mask. Every layer of one forward is
    handed the same mask object, so the copy is kept on it and made once a forward rather than once a layer
    (~9 us a layer, 0.27 ms a forward of the embedded target's 30 layers, at batch 1 or 16)."""
    repeated = getattr(mask, "_repeated", None)
    if repeated is None or repeated.shape[2] != groups * mask.shape[2]:
        repeated = mask._repeated = mask.repeat(1, 1, groups, 1)
    return repeated


AttentionInterface.register(PACKED_SDPA, packed_gqa_attention)
AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)  # masks transformers builds itself (its own generate) are SDPA's


def use_packed_gqa(model: torch.nn.Module) -> None:
    """Route the SDPA attention of `model` (or of the transformers models inside it, such as a feature-level
    draft's decoder) through `packed_gqa_attention`; other attention kinds are left as chosen. Once per model;
    it also settles whether the model's forwards can be packed (`packs`)."""
    if getattr(model, "_packed_gqa", False):
        return
    inner = [module for module in model.modules() if isinstance(module, PreTrainedModel)]
    for module in inner:
        if module.config._attn_implementation == "sdpa":
            module.set_attn_implementation(PACKED_SDPA)
    model._packed_gqa = True
    model._packs = bool(inner) and all(module.config._attn_implementation == PACKED_SDPA for module in inner)


def packs(model: torch.nn.Module) -> bool:
    """Whether a forward of `model` can be packed: every transformers model in it attends through
    `packed_gqa_attention` (settled by `use_packed_gqa`)."""
    return getattr(model, "_packs", False)
