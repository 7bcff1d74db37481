"""What travels between the scheduler, the policy actors and the model workers.

Plain dataclasses and Arrow tables that Ray moves between processes; nothing here imports torch,
so the driver's bookkeeping and the policy actors stay light.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from ray.exceptions import RayTaskError

from specray.data.rows import PromptRow
from specray.totals import Totals

MAX_REASON = 500  # characters of an exception kept in an error row


@dataclass(frozen=True)
class Batch:
    """Prompts of one domain sent to one worker; `attempt` counts failed tries of exactly these rows."""

    domain: str
    rows: tuple[PromptRow, ...]
    attempt: int = 0
    avoid: int | None = None  # the pool slot that last failed it, so a retry goes elsewhere


@dataclass
class BatchOutput:
    """A worker's answer: RESULT_SCHEMA rows, their TRACE_SCHEMA rows, ERROR_SCHEMA rows it rejected."""

    results: pa.Table
    traces: pa.Table
    errors: pa.Table

    def totals(self) -> Totals:
        return Totals.of(self.results)

    def __reduce__(self):
        """Cross processes as Arrow IPC streams: ~10x cheaper than pickling Tables, which rebuilds every schema."""
        return _from_ipc, tuple(_to_ipc(t) for t in (self.results, self.traces, self.errors))


def _to_ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _from_ipc(*buffers: pa.Buffer) -> BatchOutput:
    return BatchOutput(*(pa.ipc.open_stream(b).read_all() for b in buffers))


@dataclass(frozen=True)
class Failure:
    """A batch that produced nothing; `worker_lost` says the worker process is gone and needs replacing."""

    reason: str
    worker_lost: bool

    @classmethod
    def from_error(cls, exc: BaseException, worker_lost: bool) -> Failure:
        """The root cause, unwrapped from Ray's task errors and kept short enough for an error row."""
        while isinstance(exc, RayTaskError) and exc.cause is not None and exc.cause is not exc:
            exc = exc.cause
        text = " ".join(str(exc).split())
        return cls(f"{type(exc).__name__}: {text}"[:MAX_REASON], worker_lost)
