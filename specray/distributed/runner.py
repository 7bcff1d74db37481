"""What a model worker does with a batch: encode, check each prompt against the context window, decode it
with the domain's stop policy in the worker's one engine loop (`specray.distributed.stream`), and turn
the sequences into result rows.

One engine lives as long as its runner, because it keeps the measured costs its cost gate reads.
Stop policies are asked after every draft token, so they live here too: built from the resolved policy
each batch carries (the driver resolved it once; the domain's policy actor owns it) and cached, so a
learned policy's artifact is read once per worker and checked against the driver's checksum. Row-level problems that need the
tokenizer (nothing left after encoding, too long for the window) become error rows, not failed batches.
A label run's runner marks its traces' origin `label` and keeps the draft's hidden states in them; it may
draft the same prompts with further specs (one per draft source), whose traces join the batch's.
Every result and trace row is stamped with the draft source of the spec that produced it.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from functools import partial
from typing import Callable

import pyarrow as pa
import torch

from specray.config import JobConfig, ModelsConfig, worker_device
from specray.data.rows import ErrorRow, PromptRow, errors_table
from specray.distributed.batch import BatchOutput
from specray.distributed.stream import BatchStream, Pass, Request
from specray.engine.sampling import Sampling
from specray.engine.speculative import GenerationConfig, SequenceResult, SpeculativeEngine
from specray.models import encode_prompt, load_pair
from specray.models.precision import dtype_name
from specray.models.prompts import PromptError
from specray.policies.base import StopPolicy
from specray.policies.factory import build_policy, resolve_spec
from specray.policies.resolved import ResolvedPolicy
from specray.policies.sources import spec_source
from specray.schema import DRAFT_SOURCE_FIELD, STORED_RESULT_SCHEMA, stored_trace_schema


def load_engine(models: ModelsConfig, device: str, batch_size: int = 1) -> SpeculativeEngine:
    """The engine for `models`, on `device`, its precision chosen for `batch_size` sequences at once; the
    default `make_engine` of a worker."""
    pair = load_pair(models.target, models.draft, models.dtype, device, models.trust_remote_code, batch_size)
    return SpeculativeEngine(pair.target, pair.draft, pair.tokenizer)


def fit_prompt(tokens: list[int], window: int | None, max_new_tokens: int, truncate: str) -> tuple[list[int] | None, str | None]:
    """(tokens to decode, None), or (None, why not): the prompt plus max_new_tokens must fit the window."""
    if not tokens:
        return None, "prompt encodes to no tokens"
    if window is None or len(tokens) + max_new_tokens <= window:
        return tokens, None
    room = window - max_new_tokens
    if truncate == "left" and room >= 1:
        return tokens[-room:], None
    hint = "" if truncate == "left" else "; set data.truncate=left to keep its last tokens"
    return None, (
        f"prompt has {len(tokens)} tokens; with max_new_tokens={max_new_tokens} the context window of {window} "
        f"leaves room for {max(room, 0)}{hint}"
    )


def generation_config(cfg: JobConfig) -> GenerationConfig:
    """The engine's settings from the job's `generation` section."""
    g = cfg.generation
    return GenerationConfig(g.max_new_tokens, Sampling(g.temperature, g.top_k, g.top_p), g.seed, tuple(g.stop))


def batch_seed(seed: int, ids: list[str]) -> int:
    """A seed that depends on the run's seed and the batch's ids, so a retried drained batch draws the same
    samples (a streamed one shares its loop's generator, see `specray.engine.decoding`)."""
    return seed + zlib.crc32("\0".join(ids).encode())


class BatchRunner:
    """The body of a ModelWorker actor; plain, so tests and benchmarks can run it in-process. Every batch it
    is given, from whichever thread, goes through its one `BatchStream`: streamed through one engine loop
    with the batches beside it, or run to its end alone (`generation.batching`)."""

    def __init__(self, cfg: JobConfig, dataset: str, make_engine: Callable[[ModelsConfig, str], object] | None = None,
                 threads: int | None = None, label: bool = False):
        if threads:
            torch.set_num_threads(threads)
        self.cfg, self.dataset, self.label = cfg, dataset, label
        self.device = worker_device(cfg.models.device, cfg.cluster.gpus_per_worker)
        load = make_engine or partial(load_engine, batch_size=cfg.generation.batch_size)
        self.engine = load(cfg.models, self.device)
        self.policies: dict[tuple[str, ResolvedPolicy], StopPolicy | None] = {}
        self.generation = generation_config(cfg)
        self.stream = BatchStream(self.engine, cfg.generation.batch_size, cfg.run_id, "label" if label else "generate", label,
                                  drain=cfg.generation.batching == "drain")

    def __call__(self, domain: str, rows: tuple[PromptRow, ...], spec: ResolvedPolicy | str,
                 label_specs: tuple[ResolvedPolicy | str, ...] = ()) -> BatchOutput:
        """Decode `rows` with `spec`; a label run also drafts them with each of `label_specs` (traces only).
        A job sends policies its driver resolved; a spec string (tests, in-process use) is resolved here."""
        specs = [one if isinstance(one, ResolvedPolicy) else resolve_spec(one, domain) for one in (spec, *label_specs)]
        passes = [Pass(self._policy(domain, one), self.generation) for one in specs]
        kept: list[PromptRow] = []
        errors: list[ErrorRow] = []
        prepare = partial(self._prepare, rows, passes, kept, errors)
        return self.stream.submit(Request(domain, passes, prepare, partial(self._output, kept, errors, specs)))

    def _prepare(self, rows: tuple[PromptRow, ...], passes: list[Pass], kept: list[PromptRow],
                 errors: list[ErrorRow]) -> tuple[list[list[int]], list[str]]:
        """The batch's prompts as token ids and their ids; a seed for its passes from them, so a retried batch
        starts from the same one."""
        prompts = self._encode(rows, kept, errors)
        ids = [row.id for row in kept]
        for one in passes:
            one.config = replace(self.generation, seed=batch_seed(self.generation.seed, ids))
        return prompts, ids

    def _encode(self, rows: tuple[PromptRow, ...], kept: list[PromptRow], errors: list[ErrorRow]) -> list[list[int]]:
        """The token ids of the rows that can be decoded (added to `kept`); the others become `errors`: nothing
        left after encoding, or too long for the context window."""
        prompts = []
        window = self.engine.context_window()
        for row in rows:
            try:
                encoded = encode_prompt(self.engine.tokenizer, row.prompt)
            except PromptError as exc:
                errors.append(ErrorRow(row.id, self.dataset, str(exc), row.position))
                continue
            tokens, reason = fit_prompt(encoded, window, self.generation.max_new_tokens, self.cfg.data.truncate)
            if reason:
                errors.append(ErrorRow(row.id, self.dataset, reason, row.position))
            else:
                kept.append(row)
                prompts.append(tokens)
        return prompts

    def _output(self, kept: list[PromptRow], errors: list[ErrorRow], specs: list[ResolvedPolicy], request: Request) -> BatchOutput:
        """Result rows from the first pass (its failed sequences become error rows), trace rows from every pass."""
        if not request.prompts:
            return BatchOutput(STORED_RESULT_SCHEMA.empty_table(), stored_trace_schema(self.label).empty_table(),
                               errors_table(errors))
        passes = request.passes
        traces = pa.concat_tables(stamp_source(p.traces, spec_source(one.spec)) for p, one in zip(passes, specs))
        seqs = passes[0].results
        done = [i for i, seq in enumerate(seqs) if seq.error is None]
        errors = errors + [ErrorRow(kept[i].id, self.dataset, seq.error, kept[i].position) for i, seq in enumerate(seqs) if seq.error]
        results = result_table([kept[i] for i in done], [request.prompts[i] for i in done], [seqs[i] for i in done],
                               request.domain, passes[0].policy, self.cfg.models, spec_source(specs[0].spec))
        return BatchOutput(results, traces, errors_table(errors))

    def precision(self) -> dict[str, str]:
        """The dtype each role runs in (`models.dtype=auto` measures it per worker at load)."""
        models = {"target": getattr(self.engine, "target", None), "draft": getattr(self.engine, "draft", None)}
        return {role: dtype_name(SpeculativeEngine.dtype_of(m)) for role, m in models.items() if isinstance(m, torch.nn.Module)}

    def _policy(self, domain: str, resolved: ResolvedPolicy) -> StopPolicy | None:
        """Built once per worker and domain: its artifact is read once, and checked against the driver's checksum."""
        key = (domain, resolved)
        if key not in self.policies:
            self.policies[key] = build_policy(resolved)
        return self.policies[key]


def stamp_source(traces: pa.Table, source: str) -> pa.Table:
    """The engine's trace rows with the draft source that produced them."""
    return traces.append_column(DRAFT_SOURCE_FIELD, pa.array([source] * traces.num_rows, DRAFT_SOURCE_FIELD.type))


def result_table(rows: list[PromptRow], prompts: list[list[int]], seqs: list[SequenceResult], domain: str,
                 policy: StopPolicy | None, models: ModelsConfig, draft_source: str) -> pa.Table:
    """One RESULT_SCHEMA row per prompt; policy name and version as the engine writes them into traces."""
    n = len(rows)
    return pa.table(
        {
            "id": [r.id for r in rows],
            "domain": [domain] * n,
            "prompt": [r.prompt for r in rows],
            "output_text": [s.text for s in seqs],
            "output_tokens": [s.tokens for s in seqs],
            "prompt_tokens": [len(p) for p in prompts],
            "new_tokens": [len(s.tokens) for s in seqs],
            "iterations": [s.iterations for s in seqs],
            "drafted": [s.drafted for s in seqs],
            "accepted": [s.accepted for s in seqs],
            "wall_ms": [s.wall_ms for s in seqs],
            "stop_reason": [s.stop_reason for s in seqs],
            "policy": [policy.name if policy else "target"] * n,
            "policy_version": [policy.version if policy else ""] * n,
            "target": [models.target] * n,
            "draft": [models.draft] * n,
            "draft_source": [draft_source] * n,
        },
        schema=STORED_RESULT_SCHEMA,
    )
