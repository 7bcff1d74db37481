"""How good is a draft: teacher-forced agreement with the target's greedy output, simulated
acceptance at lookahead K, and single-token latency relative to the target."""

from __future__ import annotations

import statistics
import time

import torch
from transformers import DynamicCache

from specray.engine.forward import cache_keyword
from specray.training.distill_data import TeacherData, padded


@torch.no_grad()
def teacher_forced_matches(data: TeacherData, predict, batch_size: int = 16) -> list[list[bool]]:
    """Per response, whether the draft's argmax equals the target's greedy token at each position;
    `predict(indices, ids, mask)` is the draft's argmax [B, T] over right-padded prompt + response ids.

    On the target's own greedy output this is exactly what greedy speculative
    decoding sees: a draft token is accepted iff it equals the target's argmax.
    """
    out: list[list[bool]] = []
    seqs = data.sequences()
    for start in range(0, len(seqs), batch_size):
        indices = list(range(start, min(start + batch_size, len(seqs))))
        ids, mask = padded([seqs[i] for i in indices])
        predicted = predict(indices, ids, mask)
        for row, i in enumerate(indices):
            p, r = len(data.prompts[i]), data.responses[i]
            out.append((predicted[row, p - 1 : p - 1 + len(r)] == torch.tensor(r)).tolist())
    return out


def greedy_matches(draft, data: TeacherData, batch_size: int = 16) -> list[list[bool]]:
    """`teacher_forced_matches` of a draft that reads tokens only."""
    return teacher_forced_matches(
        data, lambda indices, ids, mask: draft(input_ids=ids, attention_mask=mask).logits.argmax(-1), batch_size)


def accepted_per_iteration(matches: list[bool], k: int) -> list[int]:
    """Replay greedy speculative decoding with lookahead k over one response's match pattern.

    Each iteration accepts the run of matches from the current position (at most k);
    the target then adds one token (correction or bonus), so the next iteration starts
    accepted + 1 positions later.
    """
    accepted, i = [], 0
    while i < len(matches):
        run = 0
        while run < k and i + run < len(matches) and matches[i + run]:
            run += 1
        accepted.append(run)
        i += run + 1
    return accepted


def agreement_report(matches: list[list[bool]], domains: list[str], k: int = 4) -> dict:
    """Agreement and mean accepted draft tokens per iteration, per domain and overall (token-weighted)."""
    report = {}
    for name in sorted(set(domains)) + ["all"]:
        rows = [m for m, d in zip(matches, domains) if name in ("all", d)]
        flat = [x for m in rows for x in m]
        iters = [a for m in rows for a in accepted_per_iteration(m, k)]
        report[name] = {
            "agreement": round(sum(flat) / max(len(flat), 1), 4),
            f"accepted_per_iter_k{k}": round(sum(iters) / max(len(iters), 1), 3),
            "tokens": len(flat),
        }
    return report


@torch.no_grad()
def decode_latency(model, context: int = 128, reps: int = 30) -> float:
    """Median seconds for one single-token step at batch 1 over a cached `context`."""
    ids = torch.randint(0, model.config.vocab_size, (1, context + 1), generator=torch.Generator().manual_seed(0))
    cache = DynamicCache()
    model(input_ids=ids[:, :context], **{cache_keyword(model): cache}, use_cache=True)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        model(input_ids=ids[:, context:], position_ids=torch.tensor([[context]]), **{cache_keyword(model): cache}, use_cache=True)
        times.append(time.perf_counter() - start)
        cache.crop(-1)
    return statistics.median(times)


def latency_ratio(draft, target, context: int = 128, reps: int = 30) -> dict:
    """Draft/target single-token latency; interleaved rounds so CPU contention hits both alike."""
    d, t = [], []
    for _ in range(3):
        d.append(decode_latency(draft, context, reps))
        t.append(decode_latency(target, context, reps))
    draft_s, target_s = min(d), min(t)
    return {"draft_ms": round(1000 * draft_s, 3), "target_ms": round(1000 * target_s, 3),
            "ratio": round(draft_s / target_s, 4), "context": context, "threads": torch.get_num_threads()}
