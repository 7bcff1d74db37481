"""The optimisation loop every draft kind trains with: AdamW within a wall-clock budget.

The learning-rate schedule (linear warm-up, then cosine to zero) runs on elapsed time rather than on
steps, so a budget is honest whatever the CPU does; `max_steps` (tests) runs it on steps instead.
Sequences are visited in shuffled epochs.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def cosine_lr(base: float, progress: float, warmup: float = 0.03) -> float:
    """Linear warmup then cosine to zero, over the fraction of the time budget spent."""
    if progress < warmup:
        return base * progress / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def fit(params: list[torch.nn.Parameter], loss_of: Callable[[list[int]], torch.Tensor], items: int, minutes: float,
        lr: float, batch_size: int = 8, seed: int = 0, max_steps: int | None = None, log_every: int = 20) -> dict:
    """Minimise `loss_of(indices)` over batches of `items` sequences until the budget (or max_steps) is spent."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    order: list[int] = []
    start, step, seen, recent = time.monotonic(), 0, 0, []
    while True:
        progress = (time.monotonic() - start) / (60 * minutes)
        if progress >= 1 or (max_steps is not None and step >= max_steps):
            break
        if len(order) < batch_size:
            order += rng.sample(range(items), items)
        indices, order = order[:batch_size], order[batch_size:]
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(lr, progress if max_steps is None else step / max_steps)
        value = loss_of(indices)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step, seen = step + 1, seen + len(indices)
        recent = (recent + [value.item()])[-log_every:]
        if step % log_every == 0:
            log.info("step %d  %.1f min  epoch %.2f  loss %.4f", step, (time.monotonic() - start) / 60,
                     seen / items, sum(recent) / len(recent))
    return {"steps": step, "sequences_seen": seen, "epochs": round(seen / max(items, 1), 2),
            "final_loss": round(sum(recent) / max(len(recent), 1), 4),
            "train_seconds": round(time.monotonic() - start, 1)}
