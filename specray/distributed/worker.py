"""A model worker: the Ray actor that holds one draft+target pair on its device (its GPUs, or a share
of the CPUs) for the whole job and runs batches of any domain. It takes its batches in flight at once
(a threaded actor) and streams them all through one engine loop (`specray.distributed.stream`).

This module stays free of torch: every process that receives a handle to a worker imports it (a
policy actor gets one with each batch), and only the worker itself should pay for the engine.
"""

from __future__ import annotations

from typing import Callable

from specray.config import JobConfig
from specray.data.rows import PromptRow
from specray.distributed.batch import BatchOutput
from specray.distributed.console import quiet_worker
from specray.policies.resolved import ResolvedPolicy


class ModelWorker:
    """Wrapped with ray.remote by the job; `make_engine(models_config, device)` defaults to the real pair."""

    def __init__(self, cfg: JobConfig, dataset: str, make_engine: Callable | None = None, threads: int | None = None,
                 label: bool = False):
        quiet_worker(cfg.log_level)  # before torch and transformers load: no per-forward warnings, no loading bars
        from specray.distributed.runner import BatchRunner  # torch and the models load here, in the worker only

        self.runner = BatchRunner(cfg, dataset, make_engine, threads, label)

    @staticmethod
    def concurrency(max_in_flight: int) -> int:
        """Calls the actor serves at once: every batch in flight, and the pool's `ready`."""
        return max_in_flight + 1

    def ready(self) -> dict:
        """Answers once the models are loaded (the pool waits on it, so a bad model ref fails the job at once)
        with where they run, in which precision each role runs, and the target's context window in tokens
        (None: unbounded), which the run's manifest records and the driver checks max_new_tokens against.
        One answer, so a worker that dies after it leaves nothing for the driver to wait on."""
        return {"device": self.runner.device, "precision": self.runner.precision(),
                "context_window": self.runner.engine.context_window()}

    def generate(self, domain: str, rows: tuple[PromptRow, ...], spec: ResolvedPolicy | str,
                 label_specs: tuple[ResolvedPolicy | str, ...] = ()) -> BatchOutput:
        return self.runner(domain, rows, spec, label_specs)
