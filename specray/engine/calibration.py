"""Measure what a round costs on this machine before the verification budget trusts it.

At start-up the engine times, on a scratch cache of random tokens, one draft step and the target
verifying 1..9 tokens per row, at batch sizes 1, 2, 4, ... up to the largest batch it will run; the
cost model interpolates between them, so a batch that shrinks as sequences finish needs no new
measurement mid-run. Live rounds then keep the table honest as load changes (`CostModel.observe_*`).
"""

import time

import torch

from specray.engine.forward import model_forward
from specray.engine.kv_cache import SlotCache

WIDTHS = (1, 2, 3, 5, 9)  # tokens per row a verification feeds


@torch.no_grad()
def forward_ms(model, batch: int, widths: tuple[int, ...], context: int = 48, repeats: int = 3) -> dict[int, float]:
    """Per width, the fastest of `repeats` forwards of that many new tokens per row over a `context`-token
    cache, through the engine's own forward, so the timing is of the code path that runs. The widths take
    turns (1, 2, 3, 5, 9, 1, 2, ...): on a shared machine a burst of load then slows one sample of several
    widths, where timed one width after another it slowed every sample of one width (at batch 1, width 2
    once measured 38.6 ms and width 3 36.6; in another run width 3 stood 7 ms above width 2, and the gate
    refused nearly every second draft token)."""
    generator = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)
    cache = SlotCache.for_model(model, batch)
    model_forward(model, cache, torch.randint(vocab, (batch, context), generator=generator).tolist(), keep=1)
    times: dict[int, list[float]] = {width: [] for width in widths}
    for turn in range(repeats + 1):  # the first turn pays each new shape's one-time kernel set-up
        for width in widths:
            chunk = torch.randint(vocab, (batch, width), generator=generator).tolist()
            start = time.perf_counter()
            model_forward(model, cache, chunk, keep=width)
            if turn:
                times[width].append((time.perf_counter() - start) * 1e3)
            cache.truncate(torch.full((batch,), context))
    return {width: min(samples) for width, samples in times.items()}


def batch_sizes(max_batch: int) -> list[int]:
    """Powers of two below `max_batch`, and `max_batch` itself."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch]


def measure_costs(engine, max_batch: int) -> None:
    """Fill the engine's cost table for every batch size up to `max_batch` (sizes already measured are kept)."""
    for batch in batch_sizes(max_batch):
        if engine.costs.measured(batch):
            continue
        for width, ms in forward_ms(engine.target, batch, WIDTHS).items():
            engine.costs.record_verify(batch, width, ms)
        engine.costs.record_draft(batch, forward_ms(engine.draft, batch, (1,))[1])
