"""Teacher data for draft distillation: the target's own responses and its top-k log-probs.

The draft must imitate the target on the target's own outputs, so the data is
the target generating from the project's prompts; the top-k distribution at
every response position falls out of generation for free.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import DynamicCache

from specray.engine.forward import cache_keyword
from specray.file_modes import save_safetensors
from specray.models.prompts import encode_prompt

log = logging.getLogger(__name__)


@dataclass
class TeacherData:
    """Prompt + response token sequences with the target's top-k at each response position."""

    prompts: list[list[int]]
    responses: list[list[int]]
    topk_ids: torch.Tensor  # (sum of response lengths, k) int32, rows in response order
    topk_logprobs: torch.Tensor  # (sum of response lengths, k) float16
    domains: list[str]
    row_ids: list[str]
    seconds: float = 0.0  # wall time it took to generate, kept so reuse still reports the true cost

    def response_offsets(self) -> list[int]:
        """Start row in topk_* of each response."""
        offsets, total = [], 0
        for response in self.responses:
            offsets.append(total)
            total += len(response)
        return offsets

    @property
    def num_tokens(self) -> int:
        return sum(len(r) for r in self.responses)

    def sequences(self) -> list[list[int]]:
        """Each prompt followed by its response: what a draft reads when trained or evaluated on it."""
        return [p + r for p, r in zip(self.prompts, self.responses)]


def padded(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and their 0/1 mask."""
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    return ids, mask


def interleave_domains(rows: list[dict], seed: int) -> list[dict]:
    """Shuffle within each domain, then round-robin, so a time-cut prefix stays domain-balanced."""
    rng = random.Random(seed)
    by_domain: dict[str, list[dict]] = {}
    for row in rows:
        by_domain.setdefault(row.get("domain", "chat"), []).append(row)
    queues = [rng.sample(group, len(group)) for _, group in sorted(by_domain.items())]
    out = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


@torch.no_grad()
def generate_batch(model, prompts: list[list[int]], max_new_tokens: int, eos_ids: set[int], topk: int,
                   pad_id: int):
    """Batched greedy decoding (left padding, finished rows dropped from the batch).

    Returns per prompt the response ids (EOS included) and the (len, k) top-k ids / log-probs
    of the target's distribution at each response position.
    """
    n, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, **{cache_keyword(model): cache}, use_cache=True,
                logits_to_keep=1)
    rows = torch.arange(n)
    responses: list[list[int]] = [[] for _ in range(n)]
    top_ids: list[list[torch.Tensor]] = [[] for _ in range(n)]
    top_lps: list[list[torch.Tensor]] = [[] for _ in range(n)]
    for step in range(max_new_tokens):
        logprobs = out.logits[:, -1].float().log_softmax(-1)
        lp, ix = logprobs.topk(topk, dim=-1)
        nxt = ix[:, 0]
        keep = []
        for j, row in enumerate(rows.tolist()):
            token = int(nxt[j])
            responses[row].append(token)
            top_ids[row].append(ix[j].to(torch.int32))
            top_lps[row].append(lp[j].to(torch.float16))
            if token not in eos_ids:
                keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(rows):
            sel = torch.tensor(keep)
            cache.batch_select_indices(sel)
            rows, mask, positions, nxt = rows[sel], mask[sel], positions[sel], nxt[sel]
        mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=torch.long)], dim=-1)
        positions = positions[:, -1:] + 1
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions, **{cache_keyword(model): cache},
                    use_cache=True)
    return responses, [torch.stack(t) for t in top_ids], [torch.stack(t) for t in top_lps]


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a response (the model's and the tokenizer's, which can differ)."""
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def teacher_data(target, tokenizer, rows: list[dict], max_new_tokens: int = 128, topk: int = 64,
                 batch_size: int = 64, minutes: float | None = None, seed: int = 0, group: int = 256) -> TeacherData:
    """The target's responses to `rows` (prompt dicts), domain-interleaved, stopping when `minutes` run out.

    Prompts are length-sorted within groups of `group` so batches carry little padding.
    """
    started = time.monotonic()
    deadline = None if minutes is None else started + 60 * minutes
    eos = eos_token_ids(target, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    ordered = interleave_domains(rows, seed)
    empty = torch.empty(0, topk)
    data = TeacherData([], [], empty.to(torch.int32), empty.to(torch.float16), [], [])
    ids_parts, lp_parts = [], []
    for start in range(0, len(ordered), group):
        chunk = [(encode_prompt(tokenizer, r["prompt"]), r) for r in ordered[start:start + group]]
        chunk.sort(key=lambda item: len(item[0]))
        for b in range(0, len(chunk), batch_size):
            if deadline is not None and time.monotonic() > deadline:
                log.info("teacher data: time budget reached after %d prompts", len(data.prompts))
                return finish(data, ids_parts, lp_parts, started)
            batch = chunk[b:b + batch_size]
            responses, tids, tlps = generate_batch(target, [p for p, _ in batch], max_new_tokens, eos, topk, pad)
            for (prompt, row), response, ti, tl in zip(batch, responses, tids, tlps):
                data.prompts.append(prompt)
                data.responses.append(response)
                data.domains.append(row.get("domain", "chat"))
                data.row_ids.append(str(row.get("id", len(data.row_ids))))
                ids_parts.append(ti)
                lp_parts.append(tl)
            log.info("teacher data: %d/%d prompts, %d tokens", len(data.prompts), len(ordered),
                     sum(len(r) for r in data.responses))
    return finish(data, ids_parts, lp_parts, started)


def finish(data: TeacherData, ids_parts: list[torch.Tensor], lp_parts: list[torch.Tensor],
           started: float) -> TeacherData:
    """Stack the per-response top-k rows and stamp the wall time."""
    data.seconds = round(time.monotonic() - started, 1)
    if ids_parts:
        data.topk_ids, data.topk_logprobs = torch.cat(ids_parts), torch.cat(lp_parts)
    return data


def save_teacher_data(data: TeacherData, path: str | Path) -> None:
    """Safetensors for the tensors, JSON (in the safetensors metadata) for the rest."""
    flat = lambda seqs: torch.tensor([t for s in seqs for t in s], dtype=torch.int32)  # noqa: E731
    tensors = {
        "prompt_tokens": flat(data.prompts),
        "prompt_lens": torch.tensor([len(p) for p in data.prompts], dtype=torch.int64),
        "response_tokens": flat(data.responses),
        "response_lens": torch.tensor([len(r) for r in data.responses], dtype=torch.int64),
        "topk_ids": data.topk_ids.contiguous(),
        "topk_logprobs": data.topk_logprobs.contiguous(),
    }
    meta = {"domains": json.dumps(data.domains), "row_ids": json.dumps(data.row_ids), "seconds": str(data.seconds)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    save_safetensors(tensors, tmp, metadata=meta)
    tmp.replace(path)


def load_teacher_data(path: str | Path) -> TeacherData:
    from safetensors import safe_open

    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    split = lambda flat, lens: [s.tolist() for s in torch.split(flat.long(), lens.tolist())]  # noqa: E731
    return TeacherData(
        prompts=split(tensors["prompt_tokens"], tensors["prompt_lens"]),
        responses=split(tensors["response_tokens"], tensors["response_lens"]),
        topk_ids=tensors["topk_ids"], topk_logprobs=tensors["topk_logprobs"],
        domains=json.loads(meta["domains"]), row_ids=json.loads(meta["row_ids"]), seconds=float(meta.get("seconds", 0)),
    )


def concat_teacher_data(parts: list[TeacherData]) -> TeacherData:
    """One data set from shards generated side by side (wall time: the slowest shard)."""
    return TeacherData(
        prompts=[p for d in parts for p in d.prompts],
        responses=[r for d in parts for r in d.responses],
        topk_ids=torch.cat([d.topk_ids for d in parts]),
        topk_logprobs=torch.cat([d.topk_logprobs for d in parts]),
        domains=[x for d in parts for x in d.domains],
        row_ids=[x for d in parts for x in d.row_ids],
        seconds=max((d.seconds for d in parts), default=0.0),
    )


def _shard_worker(target_ref: str, dtype: str, rows: list[dict], out: str, kwargs: dict) -> None:
    """One generation process: a single torch thread, so shards never fight over cores."""
    torch.set_num_threads(1)
    from specray.models import load_model

    target, tokenizer = load_model(target_ref, dtype=dtype)
    save_teacher_data(teacher_data(target, tokenizer, rows, **kwargs), out)


def sharded_teacher_data(target_ref: str, rows: list[dict], workers: int, seed: int = 0, dtype: str = "float32",
                         **kwargs) -> TeacherData:
    """Teacher data from `workers` single-thread processes over disjoint slices of the interleaved prompts.

    On a small CPU, one thread per process scales far better than one process
    with many threads, which stalls badly whenever another job takes a core.
    """
    import multiprocessing
    import tempfile

    ordered = interleave_domains(rows, seed)
    bounds = [len(ordered) * i // workers for i in range(workers + 1)]
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="specray-teacher-") as tmp:
        paths = [str(Path(tmp) / f"shard{i}.safetensors") for i in range(workers)]
        procs = [ctx.Process(target=_shard_worker, args=(target_ref, dtype, ordered[bounds[i]:bounds[i + 1]], paths[i],
                                                          {**kwargs, "seed": seed})) for i in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"teacher data shards {failed} failed")
        return concat_teacher_data([load_teacher_data(p) for p in paths])
