"""Collects one trace row per drafted token (the schema in `specray.schema`) while a batch decodes."""

from collections import defaultdict

import numpy as np
import pyarrow as pa
import torch

from specray.schema import HIDDEN_FIELD, TRACE_SCHEMA, TRACE_SOURCES, trace_schema


class TraceBuffer:
    def __init__(self, run_id: str, domain: str, policy: str, policy_version: str, source: str = "generate",
                 record_hidden: bool = False):
        if source not in TRACE_SOURCES:
            raise ValueError(f"trace source {source!r} is not one of {', '.join(TRACE_SOURCES)}")
        self.constant = {"run_id": run_id, "source": source, "domain": domain, "policy": policy, "policy_version": policy_version}
        self.record_hidden, self.schema = record_hidden, trace_schema(record_hidden)
        self.columns: dict[str, list] = defaultdict(list)
        self.hidden: list[np.ndarray] = []  # (k, H) per round, when recorded
        self.rows = 0

    def add_draft(
        self,
        prompt_id: str,
        iteration: int,
        first_position: int,
        tokens: list[int],
        draft_probs: list[float],
        target_probs: list[float],
        entropy: list[float],
        topk_probs: list[list[float]],
        n_accepted: int,
        stop_reason: str,
        draft_ms: float,
        verify_ms: float,
        hidden: list[torch.Tensor] | None = None,
    ) -> None:
        """One round of one sequence: `tokens` were proposed, the first `n_accepted` accepted;
        `hidden` holds the draft's hidden state behind each token (kept only when recording them)."""
        k = len(tokens)
        cols = self.columns
        cols["prompt_id"] += [prompt_id] * k
        cols["iteration"] += [iteration] * k
        cols["depth"] += list(range(1, k + 1))
        cols["gen_position"] += list(range(first_position, first_position + k))
        cols["draft_token"] += tokens
        cols["draft_prob"] += draft_probs
        cols["target_prob"] += target_probs
        cols["accept_prob"] += [min(1.0, p / q) if q > 0 else 0.0 for p, q in zip(target_probs, draft_probs)]
        cols["accepted"] += [j < n_accepted for j in range(k)]
        cols["evaluated"] += [j <= n_accepted for j in range(k)]
        cols["entropy"] += entropy
        cols["topk_probs"] += topk_probs
        cols["lookahead"] += [k] * k
        cols["stop_reason"] += [stop_reason] * k
        cols["draft_ms"] += [draft_ms] * k
        cols["verify_ms"] += [verify_ms] * k
        if self.record_hidden and k:
            if hidden is None or len(hidden) != k:
                raise ValueError(f"{k} drafted tokens need as many hidden states, got {0 if hidden is None else len(hidden)}")
            self.hidden.append(torch.stack(hidden).float().numpy())
        self.rows += k

    def table(self) -> pa.Table:
        columns = {name: self.columns.get(name, []) for name in TRACE_SCHEMA.names}
        for name, value in self.constant.items():
            columns[name] = [value] * self.rows
        if self.record_hidden:
            columns[HIDDEN_FIELD.name] = _list_column(self.hidden)
        return pa.Table.from_pydict(columns, schema=self.schema)


def _list_column(rows: list[np.ndarray]) -> pa.Array:
    """(k, H) blocks as one list<float32> column, built from a flat buffer rather than Python lists."""
    if not rows:
        return pa.array([], HIDDEN_FIELD.type)
    flat = np.concatenate(rows)
    offsets = np.arange(0, flat.size + 1, flat.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1)))
