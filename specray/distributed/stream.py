"""A model worker's batches, streamed through one engine loop: each batch joins the loop as it arrives
and leaves when its last sequence finishes, so the engine stays full across batches and domains instead
of draining at the end of each batch.

One thread owns the engine, its tokenizer and its loop (`Decoding`); the actor's calls hand it batches
and wait for their outputs. A batch's prompts join with its domain's stop policy, so rows of several
domains share rounds, each stopped by its own policy. A batch is decoded by one or more passes (a label
run drafts the same prompts once per draft source); passes join the loop in arrival order while they
agree with it on the batch settings (`Decoding.accepts`). The first that does not waits until the loop
empties and a loop of its settings opens, so nothing waits behind a stream of others.

When a round fails, the loop cannot tell whose row broke it: every batch in it is run again alone, and
only a batch that fails alone fails (the scheduler then retries it, and splits it into single rows at
last), so one poison row never turns its neighbours' rows into error rows.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Callable

import pyarrow as pa
import torch

from specray.engine.batch_state import Sequence
from specray.engine.decoding import Decoding
from specray.engine.speculative import GenerationConfig, SequenceResult
from specray.policies.base import StopPolicy


@dataclass
class Pass:
    """One decoding of a batch's prompts with one stop policy."""

    policy: StopPolicy | None
    config: GenerationConfig
    seqs: list[Sequence] = field(default_factory=list)  # once it joined a loop
    results: list[SequenceResult] | None = None  # once its sequences all finished
    traces: pa.Table | None = None  # their trace rows, then


@dataclass
class Request:
    """A batch given to the stream. `prepare` encodes its prompts and `done` builds its output once its
    passes finished; both run on the engine's thread, the only one that uses the tokenizer."""

    domain: str
    passes: list[Pass]
    prepare: Callable[[], tuple[list[list[int]], list[str]]]  # () -> (prompts as token ids, their ids)
    done: Callable[[Request], object]  # its output, once its passes finished (or at once when nothing is left to decode)
    future: Future = field(default_factory=Future)
    prompts: list[list[int]] | None = None  # once prepared
    ids: list[str] = field(default_factory=list)
    alone: bool = False  # rerun after a failed round: it runs in a loop of its own

    def rerun(self) -> Request:
        """The same batch, to run again alone from its start."""
        return replace(self, passes=[Pass(p.policy, p.config) for p in self.passes], alone=True)


class BatchStream:
    def __init__(self, engine, max_batch: int, run_id: str, origin: str, record_hidden: bool, drain: bool = False):
        """`drain`: a batch joins only an empty loop, so each runs to its end alone (`generation.batching=drain`)."""
        self.engine, self.max_batch, self.drain = engine, max_batch, drain
        self.run_id, self.origin, self.record_hidden = run_id, origin, record_hidden
        self.inbox: queue.Queue[Request] = queue.Queue()
        self.waiting: deque[tuple[Request, Pass]] = deque()  # passes not yet in a loop, in arrival order
        self.running: list[tuple[Request, Pass]] = []  # passes in the loop
        self.loop: Decoding | None = None
        self.owner: Request | None = None  # the batch a loop of its own runs for
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def submit(self, request: Request):
        """Decode `request` and return its output (blocks; any number of callers may wait at once)."""
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._serve, name="specray-engine", daemon=True)
                self.thread.start()
        self.inbox.put(request)
        return request.future.result()

    def _serve(self) -> None:
        with torch.no_grad():  # grad mode is per thread
            while True:
                self._receive(block=not self.running and not self.waiting)
                try:
                    self._fill()
                    if self.loop is not None and self.loop.busy:
                        self.loop.step()
                    self._finish()
                except Exception as error:  # noqa: BLE001 - a failed round fails (or reruns) its batches, never the thread
                    self._failed(error)

    def _receive(self, block: bool) -> None:
        """Prepare new batches and queue their passes (wait for one when there is nothing else to do)."""
        try:
            request = self.inbox.get(block=block)
            while True:
                self._prepared(request)
                request = self.inbox.get_nowait()
        except queue.Empty:
            pass

    def _prepared(self, request: Request) -> None:
        try:
            request.prompts, request.ids = request.prepare()
            if not request.prompts:  # nothing to decode: every row was an error
                request.future.set_result(request.done(request))
                return
        except Exception as error:  # noqa: BLE001 - this batch's problem only
            request.future.set_exception(error)
            return
        self.waiting.extend((request, p) for p in request.passes)

    def _fill(self) -> None:
        """Waiting passes join the loop in arrival order while it accepts them; once the loop has emptied, a
        new one opens for the first waiting pass (a batch rerun alone gets one of its own)."""
        if self.waiting and not self.running:
            request, first = self.waiting[0]
            self.owner = request if request.alone else None
            self.loop = None  # were opening the new one to fail, nothing would be left of the old
            self.loop = Decoding(self.engine, first.config, first.policy, self.max_batch, self.run_id, self.origin,
                                 self.record_hidden)
        while self.waiting:
            request, one = self.waiting[0]
            if self.running and (self.drain or not self.loop.accepts(one.policy)):
                return
            if (request.alone or self.owner is not None) and self.owner is not request:
                return
            self.waiting.popleft()
            self.running.append((request, one))  # before it joins: a failure to join is its batch's
            one.seqs = self.loop.add(request.prompts, request.ids, [request.domain] * len(request.ids),
                                     [one.policy] * len(request.ids))

    def _finish(self) -> None:
        """Passes whose sequences all finished leave the loop; a batch whose passes all finished is answered."""
        still = []
        for request, one in self.running:
            if any(s.stop_reason is None for s in one.seqs):
                still.append((request, one))
                continue
            one.results = [self.engine.result(s) for s in one.seqs]
            one.traces = self.loop.trace.take({s.index for s in one.seqs})
            self.loop.release(one.seqs)
            if all(p.results is not None for p in request.passes):
                try:
                    request.future.set_result(request.done(request))
                except Exception as error:  # noqa: BLE001 - this batch's problem only
                    request.future.set_exception(error)
        self.running = still

    def _failed(self, error: Exception) -> None:
        """A failed round: the batches in the loop run again alone, unless they were alone; the loop is dropped."""
        requests = list({id(r): r for r, _ in self.running if not r.future.done()}.values())
        if not requests and self.waiting:  # opening a loop for the first waiting batch failed
            requests = [self.waiting[0][0]]
        self.waiting = deque((r, p) for r, p in self.waiting if all(r is not q for q in requests))
        self.running, self.loop, self.owner = [], None, None
        for request in reversed(requests):
            if request.alone:
                request.future.set_exception(error)
            else:
                again = request.rerun()
                self.waiting.extendleft(reversed([(again, p) for p in again.passes]))
