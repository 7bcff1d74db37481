"""Read the committed traces and results of one or more runs, keeping only what the report needs.

Goes through the sink's readers (a local dir or a URI such as s3://bucket/runs/x alike), so a crashed
run's uncommitted files are never counted; reads only
the columns below (never `topk_probs` or a label run's `hidden`), so a million-row trace set stays a
few tens of MB in memory. A label run's rows are the drafts of its `static:K` policy like any other (and also feed oracle SL).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from specray.distributed.manifest import ManifestError
from specray.distributed.sink import SinkError, committed_locations, read_results, read_traces
from specray.storage import StorageError, is_remote

TRACE_COLUMNS = (
    "run_id", "prompt_id", "domain", "iteration", "depth", "gen_position",
    "accepted", "evaluated", "entropy", "policy", "policy_version", "lookahead", "source", "draft_source",
)
RESULT_COLUMNS = ("id", "domain", "new_tokens", "iterations", "drafted", "accepted", "wall_ms", "policy", "policy_version",
                  "draft_source")
ORACLE_POLICY = "oracle"


class RunReadError(ValueError):
    """A run directory whose committed files cannot be read; the message names the dir or the file."""


def load_runs(run_dirs: list[str]) -> tuple[pa.Table, pa.Table]:
    """(traces, results) of every run, concatenated; traces gain a boolean `oracle` column.

    A report is about whole runs, so an unreadable run or file fails it (RunReadError naming the file)
    rather than silently leaving rows out of the figures."""
    traces = pa.concat_tables([_read_run(d, "traces", lambda: read_traces(d, columns=list(TRACE_COLUMNS))) for d in run_dirs])
    results = pa.concat_tables([_read_run(d, "results", lambda: read_results(d).select(list(RESULT_COLUMNS))) for d in run_dirs])
    return traces.append_column("oracle", oracle_mask(traces)), results


def _read_run(run_dir: str, kind: str, read):
    if not is_remote(run_dir) and not Path(run_dir).is_dir():  # a run on an object store (s3://...) is a prefix
        raise RunReadError(f"{run_dir}: no such directory")
    try:
        return read()
    except (ManifestError, SinkError, StorageError) as exc:
        raise RunReadError(str(exc)) from None
    except (pa.ArrowException, OSError) as exc:
        for file in committed_locations(run_dir, kind):  # name the file that breaks the read
            try:
                pq.ParquetFile(file.path, filesystem=file.fs).read()
            except (pa.ArrowException, OSError) as file_exc:
                raise RunReadError(f"{file.uri}: unreadable Parquet file ({file_exc})") from None
        raise RunReadError(f"{run_dir}: {kind} cannot be read ({exc})") from None


def oracle_mask(traces: pa.Table) -> pa.ChunkedArray:
    """Rows of the `oracle` policy: the longest run the target accepts, not a real policy's draft."""
    return pc.fill_null(pc.equal(traces["policy"], ORACLE_POLICY), False)
