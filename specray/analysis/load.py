"""Read the committed traces and results of one or more runs, keeping only what the report needs.

Goes through the sink's readers, so a crashed run's uncommitted files are never counted; drops the
wide `topk_probs` list column at once so a million-row trace set stays a few tens of MB in memory.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from specray.distributed.sink import read_results, read_traces

TRACE_COLUMNS = (
    "run_id", "prompt_id", "domain", "iteration", "depth", "gen_position",
    "accepted", "evaluated", "entropy", "policy", "policy_version", "lookahead",
)
RESULT_COLUMNS = ("id", "domain", "new_tokens", "iterations", "drafted", "accepted", "wall_ms", "policy", "policy_version")
ORACLE_POLICY = "oracle"


def load_runs(run_dirs: list[str]) -> tuple[pa.Table, pa.Table]:
    """(traces, results) of every run, concatenated; traces gain a boolean `oracle` column."""
    traces = pa.concat_tables([_select(read_traces(d), TRACE_COLUMNS + ("source",)) for d in run_dirs], promote_options="default")
    results = pa.concat_tables([_select(read_results(d), RESULT_COLUMNS) for d in run_dirs])
    return traces.append_column("oracle", oracle_mask(traces)), results


def oracle_mask(traces: pa.Table) -> pa.ChunkedArray:
    """Rows that label what the target would accept (policy `oracle`, or `source` = label) rather than a real policy's draft."""
    mask = pc.equal(traces["policy"], ORACLE_POLICY)
    if "source" in traces.column_names:
        mask = pc.or_(mask, pc.fill_null(pc.equal(traces["source"], "label"), False))
    return pc.fill_null(mask, False)


def _select(table: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """The named columns that exist; `source` is optional (label traces may add it later)."""
    return table.select([c for c in columns if c in table.column_names])
