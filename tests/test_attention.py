"""Grouped-query attention with the query heads folded: the same attention as transformers' SDPA path."""

import copy

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from conftest import tiny_llama
from specray.engine.attention import PACKED_SDPA, packed_gqa_attention, packs, repeated_mask, use_packed_gqa
from specray.engine.forward import cache_keyword, model_forward
from specray.engine.kv_cache import SlotCache


class Grouped(torch.nn.Module):
    num_key_value_groups = 3
    is_causal = True
    training = False


def ragged_mask(batch: int, q: int, kv: int, dtype=torch.float64) -> torch.Tensor:
    """An additive (B, 1, q, kv) mask: causal over the last q slots, each row missing a different prefix."""
    visible = torch.ones(q, kv, dtype=torch.bool).tril(kv - q).expand(batch, q, kv).clone()
    for b in range(batch):
        visible[b, :, : b + 1] = False
    return torch.zeros(batch, 1, q, kv, dtype=dtype).masked_fill(~visible[:, None], torch.finfo(dtype).min)


def test_folded_query_heads_attend_like_copied_keys_and_values():
    generator = torch.Generator().manual_seed(0)
    batch, heads, groups, q, kv, dim = 3, 6, 3, 4, 11, 8
    query = torch.randn(batch, heads, q, dim, generator=generator, dtype=torch.float64)
    key = torch.randn(batch, heads // groups, kv, dim, generator=generator, dtype=torch.float64)
    value = torch.randn(batch, heads // groups, kv, dim, generator=generator, dtype=torch.float64)
    mask = ragged_mask(batch, q, kv)
    folded, _ = packed_gqa_attention(Grouped(), query, key, value, mask, scaling=0.3)
    copied, _ = sdpa_attention_forward(Grouped(), query, key, value, mask, scaling=0.3)  # repeats key and value per head
    assert folded.shape == (batch, q, heads, dim)
    torch.testing.assert_close(folded, copied, rtol=1e-12, atol=1e-12)


def test_the_layers_of_one_forward_share_one_repeat_of_its_mask():
    mask = ragged_mask(2, 3, 7)
    first = repeated_mask(mask, 3)
    assert repeated_mask(mask, 3) is first, "the next layer reuses it"
    torch.testing.assert_close(first, mask.repeat(1, 1, 3, 1), rtol=0, atol=0)
    torch.testing.assert_close(repeated_mask(mask, 2), mask.repeat(1, 1, 2, 1), rtol=0, atol=0)  # another model's groups
    assert repeated_mask(ragged_mask(2, 3, 7), 3) is not first, "a new forward's mask is repeated anew"


def test_engine_models_attend_folded_and_compute_the_same_logits():
    model = tiny_llama(seed=3)
    reference = copy.deepcopy(model)
    chunks = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]  # ragged rows: a (B, 1, q, kv) mask with holes
    caches = [SlotCache.for_model(m, len(chunks)) for m in (model, reference)]
    logits = model_forward(model, caches[0], chunks, keep=4)[0]  # ragged: packed
    assert model.config._attn_implementation == PACKED_SDPA and packs(model)
    inputs, valid = _plain_inputs(reference, caches[1], chunks)
    expected = reference(**inputs).logits[valid].float()  # every token of every row, row after row
    torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9)
    held = torch.arange(4)[None, :] < torch.tensor([4, 2, 3])[:, None]  # [B, slots]: row b's tokens sit in its first slots
    assert torch.equal(caches[0].lengths, held.sum(-1)) and torch.equal(caches[1].lengths, held.sum(-1))
    for mine, theirs in zip(caches[0].kv.layers, caches[1].kv.layers):  # each packed token's keys in its row's slot
        for name in ("keys", "values"):
            torch.testing.assert_close(getattr(mine, name)[held[:, None, :].expand(-1, 2, -1)],
                                       getattr(theirs, name)[held[:, None, :].expand(-1, 2, -1)], rtol=1e-9, atol=1e-9)
            assert not getattr(mine, name)[~held[:, None, :].expand(-1, 2, -1)].any(), "slots no token took hold zeros"


def test_a_model_that_cannot_be_packed_runs_padded_with_the_same_outputs():
    packed, padded = tiny_llama(seed=3), tiny_llama(seed=3)
    padded.set_attn_implementation("eager")
    chunks = [[5, 6, 7, 8], [9, 10], [11, 12, 13], [14]]
    outputs = [model_forward(m, SlotCache.for_model(m, len(chunks)), chunks, keep=2, hidden=3) for m in (packed, padded)]
    assert packs(packed) and not packs(padded)
    (logits, states), (expected_logits, expected_states) = outputs
    assert logits.shape == (7, 64) and states.shape == (9, 32), "each row's last 2 logits and last 3 states, row after row"
    # eager and SDPA attention round differently: float64 inside, float32 out
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states, expected_states, rtol=1e-5, atol=1e-5)


def _plain_inputs(model, cache: SlotCache, chunks: list[list[int]]) -> tuple[dict, torch.Tensor]:
    """The same forward through transformers' own SDPA attention (the reference is never routed), padded; and
    its [B, width] mask of real slots."""
    width = max(map(len, chunks))
    ids = torch.zeros(len(chunks), width, dtype=torch.long)
    valid = torch.zeros(len(chunks), width, dtype=torch.bool)
    for i, chunk in enumerate(chunks):
        ids[i, width - len(chunk) :], valid[i, width - len(chunk) :] = torch.tensor(chunk), True
    mask, positions = cache.extend(valid)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, cache_keyword(model): cache.kv}, valid


def test_other_attention_kinds_are_left_as_chosen():
    model = tiny_llama(seed=4)
    model.set_attn_implementation("eager")
    use_packed_gqa(model)
    assert model.config._attn_implementation == "eager"
