"""The shared pool of model workers as the driver sees it: who has room, who died, who hangs.

There are `cluster.num_workers` slots. A dead worker is replaced in its slot, and the slot's
generation tells late answers about the old worker from answers about the new one. Every domain
draws from the same slots, so a skewed dataset still keeps every worker busy. A replacement's hang
clock starts once its models are loaded: a load slower than `cluster.batch_timeout_s` is not a hang.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import ray
from ray import ObjectRef
from ray.actor import ActorHandle


@dataclass
class Slot:
    worker: ActorHandle
    generation: int = 0
    in_flight: int = 0
    busy_since: float = 0.0  # when it last started work or finished a batch while more was queued
    loading: ObjectRef | None = None  # a replacement's `ready` call, until its models are loaded


@dataclass(frozen=True)
class Lease:
    """A batch's place on a worker; handed back with `release` whatever the outcome."""

    slot: int
    generation: int
    worker: ActorHandle


class WorkerPool:
    def __init__(self, spawn: Callable[[int, int], ActorHandle], size: int, max_in_flight: int):
        self.spawn, self.max_in_flight = spawn, max_in_flight
        self.slots = [Slot(spawn(i, 0)) for i in range(size)]  # wait_ready covers the first generation
        self.replaced = 0
        self.hung: set[tuple[int, int]] = set()  # (slot, generation) of every worker declared hung

    def wait_ready(self, timeout_s: float | None = None) -> list:
        """Block until every worker has loaded its models and return what each answered; raises the first
        load failure, and TimeoutError when some are not ready within `timeout_s` (Ray may never place them)."""
        refs = [slot.worker.ready.remote() for slot in self.slots]
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        answers = ray.get(ready)  # raises a worker's load failure
        if pending:
            raise TimeoutError(f"{len(pending)} of {len(refs)} worker(s) not placed and ready within {timeout_s} s")
        return answers

    def has_room(self) -> bool:
        return any(s.in_flight < self.max_in_flight for s in self.slots)

    def acquire(self, now: float, avoid: int | None = None) -> Lease | None:
        """A place on the least loaded worker, never on slot `avoid` while another slot exists."""
        open_slots = [i for i, s in enumerate(self.slots) if s.in_flight < self.max_in_flight]
        allowed = [i for i in open_slots if i != avoid or len(self.slots) == 1]
        if not allowed:
            return None
        index = min(allowed, key=lambda i: self.slots[i].in_flight)
        slot = self.slots[index]
        if slot.in_flight == 0:
            slot.busy_since = now
        slot.in_flight += 1
        return Lease(index, slot.generation, slot.worker)

    def release(self, lease: Lease, now: float) -> None:
        slot = self.slots[lease.slot]
        if slot.generation == lease.generation:
            slot.in_flight -= 1
            slot.busy_since = now

    def replace(self, lease: Lease) -> None:
        """The leased worker is gone: start a new one in its slot (once, however many batches report it)."""
        if self.slots[lease.slot].generation == lease.generation:
            self._respawn(lease.slot)

    def replace_hung(self, now: float, timeout_s: float) -> int:
        """Replace workers busy for `timeout_s` without finishing a batch; their batches fail back and are retried."""
        self._start_clocks(now)
        hung = [i for i, s in enumerate(self.slots) if s.loading is None and s.in_flight and now - s.busy_since > timeout_s]
        for index in hung:
            self.hung.add((index, self.slots[index].generation))
            self._respawn(index)
        return len(hung)

    def was_hung(self, lease: Lease) -> bool:
        """Whether the lease's worker was killed as hung, so its batch's failure can say so."""
        return (lease.slot, lease.generation) in self.hung

    def _start_clocks(self, now: float) -> None:
        """Replacements that finished loading start their hang clock now."""
        for slot in self.slots:
            if slot.loading is not None and ray.wait([slot.loading], timeout=0)[0]:
                slot.loading, slot.busy_since = None, now

    def _respawn(self, index: int) -> None:
        old = self.slots[index]
        ray.kill(old.worker)  # it may be alive but hung or unreachable; it must not come back holding a GPU
        worker = self.spawn(index, old.generation + 1)
        self.slots[index] = Slot(worker, old.generation + 1, loading=worker.ready.remote())
        self.replaced += 1

    def shutdown(self) -> None:
        for slot in self.slots:
            ray.kill(slot.worker)
