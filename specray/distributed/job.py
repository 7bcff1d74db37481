"""`run_job(cfg)`: the generation job on Ray, from a config to committed Parquet.

Wiring only. The sink opens first, so a locked or foreign output dir fails before any model loads,
and it decides what a resumed run skips. Workers load their models before the first batch is sent,
so a bad model ref fails the job at once instead of turning every row into an error.

Ctrl-C stops the job cleanly: what finished is committed (the sink flushes on the way out), further
presses are ignored while it does so, and `JobInterrupted` says how many prompts are done, so the
command line can print one line with the command that resumes instead of a traceback from `ray.wait`.

A label run is this same job with every domain drafting a fixed `label.depth` tokens (`static:K`, never
cost-gated, so every round is labelled to the same depth) and traces that keep the draft's hidden states.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import replace
from functools import partial
from itertools import chain
from typing import Callable

import ray
from ray.exceptions import RayError

from specray.config import ConfigError, JobConfig, config_changes, config_to_yaml, worker_device
from specray.distributed.console import driver_console, ray_init_options
from specray.distributed.draft_artifacts import check_draft_sources
from specray.distributed.policy_actor import PolicyActors
from specray.distributed.pool import WorkerPool
from specray.distributed.progress import Progress
from specray.distributed.scheduler import Counts, Scheduler, count_records, dataset_path, plan
from specray.distributed.sink import RunMeta, RunSink
from specray.distributed.resolve import domain_policy, label_policy
from specray.distributed.worker import ModelWorker
from specray.domains.detector import DomainDetector
from specray.models.loading import torch_dtype
from specray.models.precision import AUTO, check_dtype_runs
from specray.schema import DOMAINS


class JobError(RuntimeError):
    """The job cannot run: its workers could not start."""


class JobInterrupted(Exception):
    """Stopped by Ctrl-C after committing what had finished: `done` of `total` input records are in the run."""

    def __init__(self, run_id: str, output_dir: str, done: int, total: int):
        super().__init__(f"interrupted: {done} of {total} prompts done in {output_dir}")
        self.run_id, self.output_dir, self.done, self.total = run_id, output_dir, done, total


@contextlib.contextmanager
def _ctrl_c_once():
    """The first SIGINT raises KeyboardInterrupt; later ones are ignored while the job commits and stops."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed = []

    def handler(signum, frame):
        pressed.append(signum)
        if len(pressed) == 1:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_job(cfg: JobConfig, make_engine: Callable | None = None, label: bool = False) -> dict:
    """Generate for every prompt of `cfg.data` not yet committed under `cfg.output.dir`; returns a summary.

    `make_engine(models_config, device)` builds each worker's engine; None loads the configured pair.
    `label`: a labelling run (`specray label`) instead of `specray generate`.
    Joins Ray if it is initialised, else `ray.init(cluster.address)`, and shuts down only what it started.
    Raises `JobInterrupted` on Ctrl-C, once everything that finished is committed.
    """
    device = worker_device(cfg.models.device, cfg.cluster.gpus_per_worker)  # fail before starting anything
    if cfg.models.dtype != AUTO and device == "cpu":  # the driver's CPU stands for the workers'; a GPU is checked there
        try:
            check_dtype_runs(torch_dtype(cfg.models.dtype), device)
        except ValueError as error:
            raise ConfigError(f"models.dtype: {error}") from None
    pick = partial(label_policy, cfg.label.depth, list(cfg.label.draft_sources)) if label else partial(domain_policy, cfg.policy)
    policies = {domain: pick(domain) for domain in DOMAINS}
    if make_engine is None:  # the configured pair will load: its draft files are checked before anything starts
        check_draft_sources(cfg.models, policies)
    started_ray = not ray.is_initialized()
    with driver_console(cfg.log_level):
        if started_ray:  # address None: RAY_ADDRESS when set (ray job submit), else a local instance
            ray.init(address=cfg.cluster.address, **ray_init_options(cfg.log_level))
        try:
            with _ctrl_c_once():
                return _open_and_run(cfg, policies, make_engine, label)
        finally:
            if started_ray:
                ray.shutdown()


def _open_and_run(cfg: JobConfig, policies: dict, make_engine: Callable | None, label: bool) -> dict:
    check_placement(cfg.cluster, ray.cluster_resources())  # before the output dir is touched
    meta = RunMeta(cfg.run_id, cfg.models.target, cfg.models.draft, config_to_yaml(cfg), hidden_states=label,
                   compare_config=config_changes)
    sink, total = RunSink(cfg.output.dir, meta, cfg.output.rows_per_file, cfg.storage.endpoint), 0
    try:
        with sink:
            total = count_records(cfg.data, cfg.storage.endpoint)
            return _run(replace(cfg, run_id=sink.run_id), policies, sink, make_engine, label, total)
    except KeyboardInterrupt:  # the sink has flushed on the way out: what finished is committed
        raise JobInterrupted(sink.run_id, str(sink.out_dir), len(sink.committed_ids()), total) from None


def _run(cfg: JobConfig, policies: dict, sink: RunSink, make_engine: Callable | None, label: bool, total: int) -> dict:
    dataset, progress = str(dataset_path(cfg.data)), Progress(total, "label" if label else "generate")
    actors = PolicyActors(policies, f"specray-{cfg.run_id}")
    try:
        work = plan(cfg.data, cfg.generation.batch_size, sink.committed_ids(), DomainDetector.load(), progress.skip, actors.start,
                    sink.committed_positions(), cfg.storage.endpoint)
        first = next(work, None)  # reads a first chunk, so its domains' policy actors start while the models load
        if first is None:  # an earlier session committed everything
            counts, replaced = Counts(), 0
        else:
            counts, replaced = _generate(cfg, chain([first], work), actors, sink, progress, dataset, make_engine, label)
        return _summary(cfg, sink, counts, progress, replaced, actors.snapshots())
    finally:
        progress.close()
        actors.shutdown()


def _generate(cfg: JobConfig, work, actors: PolicyActors, sink: RunSink, progress: Progress, dataset: str,
              make_engine: Callable | None, label: bool) -> tuple[Counts, int]:
    """Start the worker pool, wait for its models, run the scheduler; (counts, workers replaced)."""
    pool = WorkerPool(_spawner(cfg, dataset, make_engine, label), cfg.cluster.num_workers, cfg.cluster.max_in_flight)
    try:
        try:
            workers = pool.wait_ready(cfg.cluster.start_timeout_s)
        except RayError as exc:
            raise JobError(f"a model worker failed to start:\n{exc}") from None
        except TimeoutError as exc:
            raise JobError(f"{exc} (cluster.start_timeout_s={cfg.cluster.start_timeout_s}); the cluster has "
                           f"{_describe_resources(ray.cluster_resources())}") from None
        sink.record_workers(workers)
        window = workers[0]["context_window"]
        if window is not None and cfg.generation.max_new_tokens >= window:
            raise JobError(f"generation.max_new_tokens={cfg.generation.max_new_tokens} leaves no room for a prompt in the "
                           f"target's context window of {window} tokens; every row would be an error")
        progress.begin()
        return Scheduler(work, pool, actors, sink, progress.done, cfg.cluster, dataset).run(), pool.replaced
    finally:
        pool.shutdown()


def check_placement(cluster, resources: dict) -> None:
    """Fail now, naming the key, when the cluster cannot hold the workers asked for: Ray would wait forever.
    Checked against the resources the cluster has now (an autoscaling cluster: size its minimum to fit)."""
    gpus, total_gpus, total_cpus = cluster.gpus_per_worker, resources.get("GPU", 0), int(resources.get("CPU", 0))
    if gpus > 0 and gpus > total_gpus:
        raise JobError(f"cluster.gpus_per_worker={gpus:g} asked for {gpus:g} GPU per worker; the cluster has {total_gpus:g}")
    if gpus > 0 and gpus * cluster.num_workers > total_gpus:
        raise JobError(f"cluster.num_workers={cluster.num_workers} workers x {gpus:g} GPU need {gpus * cluster.num_workers:g} "
                       f"GPUs; the cluster has {total_gpus:g}")
    if cluster.num_workers > total_cpus:  # every worker takes at least one CPU
        raise JobError(f"cluster.num_workers={cluster.num_workers} workers need at least {cluster.num_workers} CPUs; "
                       f"the cluster has {total_cpus}")


def _describe_resources(resources: dict) -> str:
    return f"{resources.get('CPU', 0):g} CPU(s) and {resources.get('GPU', 0):g} GPU(s)"


def _spawner(cfg: JobConfig, dataset: str, make_engine: Callable | None,
             label: bool) -> Callable[[int, int], ray.actor.ActorHandle]:
    """Starts the worker of a pool slot: its GPUs, or an equal share of the cluster's CPUs (and as many torch threads)."""
    gpus = cfg.cluster.gpus_per_worker
    on_cpu = worker_device(cfg.models.device, gpus) == "cpu"
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // cfg.cluster.num_workers) if on_cpu else 1
    remote = ray.remote(ModelWorker)

    def spawn(slot: int, generation: int) -> ray.actor.ActorHandle:
        options = {"num_gpus": gpus, "num_cpus": cpus, "name": f"specray-{cfg.run_id}-worker-{slot}-{generation}",
                   "max_concurrency": ModelWorker.concurrency(cfg.cluster.max_in_flight)}
        return remote.options(**options).remote(cfg, dataset, make_engine, cpus if on_cpu else None, label)

    return spawn


def _summary(cfg: JobConfig, sink: RunSink, counts: Counts, progress: Progress, replaced: int, policies: dict) -> dict:
    domains = {}
    for domain, t in sorted(progress.per_domain.items()):
        domains[domain] = {
            "prompts": t.prompts, "new_tokens": t.new_tokens, "drafted": t.drafted, "accepted": t.accepted,
            "acceptance": t.acceptance, "accepted_per_iteration": t.accepted_per_iteration, "policy": policies.get(domain),
        }
    return {
        "run_id": cfg.run_id, "output_dir": str(sink.out_dir),
        "results": counts.results, "errors": counts.errors, "skipped": progress.skipped,
        "new_tokens": progress.new_tokens, "seconds": round(progress.seconds, 3),
        "seconds_to_first_result": None if progress.first_result is None else round(progress.first_result, 3),
        "tokens_per_s": progress.new_tokens / max(progress.seconds, 1e-9),
        "failed_batches": counts.failures, "hung_workers": counts.hung, "replaced_workers": replaced,
        "domains": domains,
    }
