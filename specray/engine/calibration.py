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
def forward_ms(model, batch: int, width: int, context: int = 48, repeats: int = 3) -> float:
    """Fastest of `repeats` forwards of `width` new tokens per row over a `context`-token cache,
    through the engine's own forward, so the timing is of the code path that runs."""
    generator = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)
    cache = SlotCache.for_model(model, batch)
    model_forward(model, cache, torch.randint(vocab, (batch, context), generator=generator).tolist(), keep=1)
    times = []
    for _ in range(repeats + 1):  # the first forward of a new shape pays one-time kernel set-up
        chunk = torch.randint(vocab, (batch, width), generator=generator).tolist()
        start = time.perf_counter()
        model_forward(model, cache, chunk, keep=width)
        times.append((time.perf_counter() - start) * 1e3)
        cache.truncate(torch.full((batch,), context))
    return min(times[1:])


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
        for width in WIDTHS:
            engine.costs.record_verify(batch, width, forward_ms(engine.target, batch, width))
        engine.costs.record_draft(batch, forward_ms(engine.draft, batch, 1))
