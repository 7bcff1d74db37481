"""Collects one trace row per drafted token (the schema in `specray.schema`) while a batch decodes."""

from collections import defaultdict

import numpy as np
import pyarrow as pa
import torch

from specray.engine.proposals import Proposals, Verdicts
from specray.schema import HIDDEN_FIELD, TRACE_ORIGINS, TRACE_SCHEMA, trace_schema


class TraceBuffer:
    """Trace rows of the sequences in a `Decoding`, kept until their sequences leave (`take`)."""

    def __init__(self, run_id: str, origin: str = "generate", record_hidden: bool = False):
        if origin not in TRACE_ORIGINS:
            raise ValueError(f"trace origin {origin!r} is not one of {', '.join(TRACE_ORIGINS)}")
        self.constant = {"run_id": run_id, "source": origin}
        self.domains: list[str] = []  # per sequence row
        self.policies: list[tuple[str, str]] = []  # per sequence row: name and version of its stop policy
        self.record_hidden, self.schema = record_hidden, trace_schema(record_hidden)
        self.columns: dict[str, list] = defaultdict(list)
        self.row: list[int] = []  # per trace row: its sequence's row
        self.hidden: list[np.ndarray] = []  # (k, H) per round, when recorded

    def assign(self, row: int, domain: str, policy: tuple[str, str]) -> None:
        """The sequence now on `row` has `domain` and is stopped by `policy` (name, version)."""
        missing = row + 1 - len(self.domains)
        self.domains += [""] * missing
        self.policies += [("", "")] * missing
        self.domains[row], self.policies[row] = domain, policy

    def add_round(self, state, proposals: Proposals, verdicts: Verdicts, draft_ms: float, verify_ms: float) -> None:
        """One round of the whole batch, before it is committed: every proposed token becomes a row."""
        n = len(proposals.token_ids)
        if n == 0:
            return
        rows = proposals.row_of_token()  # [N]
        depth = proposals.depth_of_token()  # [N] 0-based
        k = proposals.num_draft[rows]
        accepted = verdicts.num_accepted[rows]
        seqs = [state.active[b] for b in rows.tolist()]
        q, p = proposals.token_prob, verdicts.target_prob
        cols = self.columns
        self.row += [s.index for s in seqs]
        cols["prompt_id"] += [s.prompt_id for s in seqs]
        cols["domain"] += [self.domains[s.index] for s in seqs]
        cols["policy"] += [self.policies[s.index][0] for s in seqs]
        cols["policy_version"] += [self.policies[s.index][1] for s in seqs]
        cols["iteration"] += [s.iterations for s in seqs]
        cols["depth"] += (depth + 1).tolist()
        cols["gen_position"] += (torch.tensor([s.generated for s in seqs]) + depth).tolist()
        cols["draft_token"] += proposals.token_ids.tolist()
        cols["draft_prob"] += q.tolist()
        cols["target_prob"] += p.tolist()
        cols["accept_prob"] += torch.where(q > 0, (p / q.clamp_min(1e-30)).clamp(max=1.0), 0.0).tolist()
        cols["accepted"] += (depth < accepted).tolist()
        cols["evaluated"] += (depth <= accepted).tolist()
        cols["entropy"] += proposals.entropy.tolist()
        cols["topk_probs"] += proposals.topk_probs.tolist()
        cols["lookahead"] += k.tolist()
        cols["stop_reason"] += [proposals.stop_reason[b] for b in rows.tolist()]
        cols["draft_ms"] += [draft_ms] * n
        cols["verify_ms"] += [verify_ms] * n
        if self.record_hidden:
            if proposals.hidden is None:
                raise ValueError(f"{n} drafted tokens need their hidden states, and the proposals carry none")
            self.hidden.append(proposals.hidden.float().numpy())

    def take(self, rows: set[int] | None = None) -> pa.Table:
        """The trace rows of the sequences on `rows` (None: every sequence), which leave the buffer."""
        row = np.asarray(self.row, dtype=np.int64)
        mine = np.ones(len(row), dtype=bool) if rows is None else np.isin(row, list(rows))
        keep = np.flatnonzero(~mine).tolist()
        picked = np.flatnonzero(mine).tolist()
        columns = {name: [self.constant[name]] * len(picked) if name in self.constant else _pick(self.columns.get(name, []), picked)
                   for name in TRACE_SCHEMA.names}
        hidden = np.concatenate(self.hidden) if self.hidden else None
        if self.record_hidden:
            columns[HIDDEN_FIELD.name] = _list_column(hidden[picked] if hidden is not None else None)
        self.columns = defaultdict(list, {name: _pick(values, keep) for name, values in self.columns.items()})
        self.row = _pick(self.row, keep)
        self.hidden = [hidden[keep]] if hidden is not None and keep else []
        return pa.Table.from_pydict(columns, schema=self.schema)


def _pick(values: list, indices: list[int]) -> list:
    return [values[i] for i in indices]


def _list_column(flat: np.ndarray | None) -> pa.Array:
    """(N, H) states as one list<float32> column, built from a flat buffer rather than Python lists."""
    if flat is None or not len(flat):
        return pa.array([], HIDDEN_FIELD.type)
    offsets = np.arange(0, flat.size + 1, flat.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1)))
