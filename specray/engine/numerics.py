"""Lossless in low precision: when a greedy output may differ from target-only decoding, and when not.

In float32 speculative greedy output equals target-only output token for token. In bf16 it need not:
a forward over k tokens and k forwards over one token sum in different orders and round differently,
so where the target's top two logits are nearly tied the two runs can pick different tokens — both
the target's argmax within its own numerical noise, with nothing lost from its distribution. That is a
*tie*. Any other difference is a *divergence*, a bug.

The noise is measured, never assumed: the largest logit difference between feeding the same tokens one
per forward (decoding) and several per forward (verification), over the same prefixes. A first
differing token is a tie when the reference's logit for its own token exceeds the other run's token's
logit by at most twice that noise (each of the two logits may be off by the noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specray.engine.kv_cache import SlotCache
from specray.engine.forward import model_forward

WIDTHS = (1, 4, 8)  # tokens per forward compared: decoding, and verification widths


@torch.no_grad()
def logits_fed_by(model, prompts: list[list[int]], continuations: list[list[int]], width: int) -> torch.Tensor:
    """Logits at every continuation position (B, L, V), feeding the continuations `width` tokens per forward."""
    cache = SlotCache.for_model(model, len(prompts))
    first, _ = model_forward(model, cache, prompts, keep=1)
    out = [first[:, None]]
    length = len(continuations[0])
    for start in range(0, length - 1, width):
        chunk = [c[start : min(start + width, length - 1)] for c in continuations]
        logits, _ = model_forward(model, cache, chunk, keep=len(chunk[0]))
        out.append(logits.view(len(chunk), len(chunk[0]), -1))
    return torch.cat(out, dim=1)


def logit_noise(model, prompts: list[list[int]], continuations: list[list[int]], widths=WIDTHS) -> float:
    """Largest |logit difference| between one-token and wider forwards over the same prefixes.

    Continuations are cut to a common length so every forward has the same width in every row.
    """
    length = min(len(c) for c in continuations)
    if length < 2:
        return 0.0
    continuations = [c[:length] for c in continuations]
    reference = logits_fed_by(model, prompts, continuations, widths[0])
    return max(float((logits_fed_by(model, prompts, continuations, w) - reference).abs().max()) for w in widths[1:])


@dataclass(frozen=True)
class Difference:
    position: int  # first generated position where the outputs differ
    gap: float  # reference logit of its own token minus its logit of the other run's token
    tie: bool


@torch.no_grad()
def classify_difference(model, prompt: list[int], reference: list[int], other: list[int], noise: float) -> Difference | None:
    """None when the outputs are identical; else where they first differ and whether that is a tie."""
    position = next((i for i, (a, b) in enumerate(zip(reference, other)) if a != b), None)
    if position is None:  # equal, or one stopped where the other went on: no token choice to blame
        return None if len(reference) == len(other) else Difference(min(len(reference), len(other)), float("inf"), False)
    cache = SlotCache.for_model(model, 1)
    logits, _ = model_forward(model, cache, [prompt + reference[:position]], keep=1)
    row = logits[0]
    gap = float(row[reference[position]] - row[other[position]])
    return Difference(position, gap, gap <= 2 * noise)
