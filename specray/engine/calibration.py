"""Measure what a round costs on this machine, at this batch size, before the cost gate trusts it."""

import statistics
import time

import torch

from specray.engine.kv_cache import SlotCache

WIDTHS = (1, 2, 3, 5, 9)


@torch.no_grad()
def measure_costs(engine, batch_size: int, context: int = 48, repeats: int = 3) -> None:
    """Time the target verifying 1..9 tokens and one draft step on a scratch cache of random tokens."""
    generator = torch.Generator().manual_seed(0)
    vocab = engine.target.config.vocab_size
    prompt = torch.randint(vocab, (batch_size, context), generator=generator).tolist()
    for model in (engine.target, engine.draft):
        cache = SlotCache.for_model(model, batch_size)
        engine.forward(model, cache, prompt, keep=1)
        widths = WIDTHS if model is engine.target else (1,)
        for width in widths:
            times = []
            for _ in range(repeats):
                chunk = torch.randint(vocab, (batch_size, width), generator=generator).tolist()
                start = time.perf_counter()
                engine.forward(model, cache, chunk, keep=width)
                times.append((time.perf_counter() - start) * 1e3)
                cache.truncate(torch.full((batch_size,), context))
            ms = statistics.median(times)
            if model is engine.target:
                engine.costs.observe_verify(batch_size, width, ms)
            else:
                engine.costs.observe_draft(batch_size, ms)
