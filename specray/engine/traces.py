"""Collects one trace row per drafted token (the schema in `specray.schema`) while a batch decodes."""

from collections import defaultdict

import pyarrow as pa

from specray.schema import TRACE_SCHEMA


class TraceBuffer:
    def __init__(self, run_id: str, domain: str, policy: str, policy_version: str):
        self.constant = {"run_id": run_id, "domain": domain, "policy": policy, "policy_version": policy_version}
        self.columns: dict[str, list] = defaultdict(list)
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
    ) -> None:
        """One round of one sequence: `tokens` were proposed, the first `n_accepted` accepted."""
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
        self.rows += k

    def table(self) -> pa.Table:
        columns = {name: self.columns.get(name, []) for name in TRACE_SCHEMA.names}
        for name, value in self.constant.items():
            columns[name] = [value] * self.rows
        return pa.Table.from_pydict(columns, schema=TRACE_SCHEMA)
