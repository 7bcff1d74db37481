"""Read the committed traces and results of one or more runs, keeping only what the report needs.

Goes through the sink's readers, so a crashed run's uncommitted files are never counted; reads only
the columns below (never `topk_probs` or a label run's `hidden`), so a million-row trace set stays a
few tens of MB in memory. A label run's rows are the drafts of its `static:K` policy like any other (and also feed oracle SL).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from specray.distributed.sink import read_results, read_traces

TRACE_COLUMNS = (
    "run_id", "prompt_id", "domain", "iteration", "depth", "gen_position",
    "accepted", "evaluated", "entropy", "policy", "policy_version", "lookahead", "source",
)
RESULT_COLUMNS = ("id", "domain", "new_tokens", "iterations", "drafted", "accepted", "wall_ms", "policy", "policy_version")
ORACLE_POLICY = "oracle"


def load_runs(run_dirs: list[str]) -> tuple[pa.Table, pa.Table]:
    """(traces, results) of every run, concatenated; traces gain a boolean `oracle` column."""
    traces = pa.concat_tables([read_traces(d, columns=list(TRACE_COLUMNS)) for d in run_dirs])
    results = pa.concat_tables([read_results(d).select(list(RESULT_COLUMNS)) for d in run_dirs])
    return traces.append_column("oracle", oracle_mask(traces)), results


def oracle_mask(traces: pa.Table) -> pa.ChunkedArray:
    """Rows of the `oracle` policy: the longest run the target accepts, not a real policy's draft."""
    return pc.fill_null(pc.equal(traces["policy"], ORACLE_POLICY), False)
