"""The driver's side of the job: stream the dataset, shard it by domain into batches, keep a bounded
number of them in flight on the shared worker pool, retry what fails, commit what finishes.

The input is a chain of generators pulled only when a worker has room, so the driver holds one read
chunk, one partial batch per domain and the batches in flight, whatever the dataset's size. The only
state that grows with the dataset is a set of ids (the reader's, to reject duplicates; the sink's,
to skip what a previous session committed): a short string per row.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import ray
from ray.exceptions import RayError

from specray.config import ClusterConfig, DataConfig
from specray.data.builtin import builtin_path
from specray.data.readers import ReaderConfig, read_prompts
from specray.data.rows import ErrorRow, PromptBatch, errors_table
from specray.distributed.batch import Batch, BatchOutput, Failure
from specray.totals import Totals
from specray.distributed.pool import Lease, WorkerPool
from specray.distributed.sink import RunSink
from specray.domains.detector import DomainDetector, resolve_domains
from specray.schema import RESULT_SCHEMA

READ_CHUNK = 1024  # records read (and domain-detected) at a time
FLUSH_EVERY_S = 30.0  # a killed driver loses at most this much finished work
WAIT_S = 1.0  # how often the loop looks for hung workers when nothing finishes


def dataset_path(data: DataConfig) -> str | Path:
    """`data.path` (a path or a URI, as given), or the built-in set `data.builtin` when it is unset."""
    return data.path if data.path else builtin_path(data.builtin)


def read_stream(data: DataConfig, endpoint: str | None = None) -> Iterator[PromptBatch]:
    """Validated chunks of the dataset, as the readers stream them; `endpoint`: storage.endpoint."""
    config = ReaderConfig(data.prompt_column, data.id_column, data.domain_column, data.limit, READ_CHUNK)
    return read_prompts(dataset_path(data), config, endpoint)


def count_records(data: DataConfig, endpoint: str | None = None) -> int:
    """Records the job will see (valid or not): one streaming pass, for the progress bar's total."""
    return sum(len(chunk.rows) + len(chunk.errors) for chunk in read_stream(data, endpoint))


def skip_committed(stream: Iterator[PromptBatch], committed: set[str], on_skip: Callable[[int], None],
                   positions: set[str] = frozenset()) -> Iterator[PromptBatch]:
    """Drop rows and errors a previous session of this run already committed: rows and id-keyed errors
    by id, errors without an id of their own by their input position (`committed_positions`)."""
    for chunk in stream:
        rows = [r for r in chunk.rows if r.id not in committed]
        errors = [e for e in chunk.errors if (e.id not in committed if e.id is not None else e.position not in positions)]
        on_skip(len(chunk.rows) + len(chunk.errors) - len(rows) - len(errors))
        yield PromptBatch(rows, errors)


def with_domains(stream: Iterator[PromptBatch], detector: DomainDetector, on_domain: Callable[[str], None]) -> Iterator[PromptBatch]:
    """Detect the domain of rows that do not give one, a chunk at a time; tell `on_domain` which domains occur."""
    for chunk in stream:
        rows = [row for row, _ in resolve_domains(chunk.rows, detector)]
        for domain in {row.domain for row in rows}:
            on_domain(domain)
        yield PromptBatch(rows, chunk.errors)


def shard(stream: Iterator[PromptBatch], batch_size: int) -> Iterator[Batch | list[ErrorRow]]:
    """Batches of one domain each, as soon as a domain has `batch_size` rows; errors as they come."""
    pending: dict[str, list] = {}
    for chunk in stream:
        if chunk.errors:
            yield chunk.errors
        for row in chunk.rows:
            rows = pending.setdefault(row.domain, [])
            rows.append(row)
            if len(rows) == batch_size:
                yield Batch(row.domain, tuple(pending.pop(row.domain)))
    for domain, rows in pending.items():
        yield Batch(domain, tuple(rows))


def plan(data: DataConfig, batch_size: int, committed: set[str], detector: DomainDetector,
         on_skip: Callable[[int], None], on_domain: Callable[[str], None],
         positions: set[str] = frozenset(), endpoint: str | None = None) -> Iterator[Batch | list[ErrorRow]]:
    """The dataset as the scheduler consumes it: read, skip committed, detect domains, shard."""
    stream = skip_committed(read_stream(data, endpoint), committed, on_skip, positions)
    return shard(with_domains(stream, detector, on_domain), batch_size)


def after_failure(batch: Batch, failure: Failure, max_retries: int, slot: int, dataset: str) -> tuple[list[Batch], list[ErrorRow]]:
    """Retry a failed batch elsewhere; once it has used its retries, retry its rows one by one, so a
    poison row cannot take its batch down with it; a single row out of retries becomes an error row."""
    if batch.attempt < max_retries:
        return [replace(batch, attempt=batch.attempt + 1, avoid=slot)], []
    if len(batch.rows) > 1:
        return [Batch(batch.domain, (row,), avoid=slot) for row in batch.rows], []
    reason = f"generation failed {batch.attempt + 1} time(s): {failure.reason}"
    return [], [ErrorRow(batch.rows[0].id, dataset, reason, batch.rows[0].position)]


@dataclass
class Counts:
    """What the scheduler did, for the job summary."""

    results: int = 0
    errors: int = 0
    failures: int = 0
    hung: int = 0


class Scheduler:
    def __init__(self, work: Iterator[Batch | list[ErrorRow]], pool: WorkerPool, actors, sink: RunSink,
                 on_done: Callable[[int, list[tuple[str, Totals]]], None], cluster: ClusterConfig, dataset: str):
        self.work, self.pool, self.actors, self.sink = work, pool, actors, sink
        self.on_done, self.cluster, self.dataset = on_done, cluster, dataset
        self.retry: deque[Batch] = deque()
        self.in_flight: dict[ray.ObjectRef, tuple[Batch, Lease]] = {}
        self.counts = Counts()

    def run(self) -> Counts:
        """Until the dataset is read and every batch is committed or an error; then flush the sink."""
        last_flush = time.monotonic()
        self._dispatch()
        while self.in_flight:
            ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=WAIT_S)
            if ready:  # take everything that is done, not just the first
                ready, _ = ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=0)
            self._commit([out for out in map(self._finish, ready) if out is not None])
            now = time.monotonic()
            self.counts.hung += self.pool.replace_hung(now, self.cluster.batch_timeout_s)
            if now - last_flush > FLUSH_EVERY_S:
                self.sink.flush()
                last_flush = now
            self._dispatch()
        self.sink.flush()
        return self.counts

    def _dispatch(self) -> None:
        """Send batches while a worker has room: retries first, then new work (backpressure on the reader)."""
        while self.pool.has_room():
            batch = self.retry.popleft() if self.retry else self._next_batch()
            if batch is None:
                return
            lease = self.pool.acquire(time.monotonic(), avoid=batch.avoid)
            if lease is None:  # the only room is on the worker this retry must avoid
                self.retry.appendleft(batch)
                return
            self.in_flight[self.actors[batch.domain].run.remote(lease.worker, batch)] = (batch, lease)

    def _next_batch(self) -> Batch | None:
        for item in self.work:
            if isinstance(item, Batch):
                return item
            self._commit_errors(item)
        return None

    def _finish(self, ref: ray.ObjectRef) -> tuple[str, BatchOutput] | None:
        """The batch's output, or None when it failed (and was queued for a retry or became error rows)."""
        batch, lease = self.in_flight.pop(ref)
        self.pool.release(lease, time.monotonic())
        try:
            out = ray.get(ref)
        except RayError as exc:  # the policy actor itself died; Ray restarts it, the worker is fine
            out = Failure.from_error(exc, worker_lost=False)
        if isinstance(out, BatchOutput):
            return batch.domain, out
        if self.pool.was_hung(lease):  # Ray only reports the kill; the error row should say why
            out = Failure(f"worker hung: nothing finished within cluster.batch_timeout_s={self.cluster.batch_timeout_s:g}", True)
        self.counts.failures += 1
        if out.worker_lost:
            self.pool.replace(lease)
        retries, errors = after_failure(batch, out, self.cluster.max_retries, lease.slot, self.dataset)
        self.retry.extend(retries)
        self._commit_errors(errors)
        return None

    def _commit(self, outputs: list[tuple[str, BatchOutput]]) -> None:
        """One sink commit for every batch that finished together: the commit's fixed cost is what bounds
        the driver, and the more it lags the more batches share one."""
        if not outputs:
            return
        tables = [pa.concat_tables(t) for t in zip(*((o.results, o.traces, o.errors) for _, o in outputs))]
        done = self.sink.commit(*tables)
        self.counts.results += tables[0].num_rows
        self.counts.errors += tables[2].num_rows
        self.on_done(done, [(domain, out.totals()) for domain, out in outputs])

    def _commit_errors(self, errors: list[ErrorRow]) -> None:
        if errors:
            done = self.sink.commit(RESULT_SCHEMA.empty_table(), self.sink.trace_schema.empty_table(), errors_table(errors))
            self.counts.errors += len(errors)
            self.on_done(done, [])
