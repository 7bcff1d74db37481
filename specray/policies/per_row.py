"""One batch, several stop policies: each sequence answers to the policy it joined with.

Continuous batching keeps one engine full whatever the domain mix, and a model worker streams every
batch it is given through one engine, so the rows in flight may come from several domains and batches,
each with its own policy (budgets, learned artifact, version, running acceptance). The engine speaks to
one `PerRowPolicy`; sequences `join` it on their rows with their own policy, and every call's rows are
handed to the policies that own them, their answers put back in row order. A policy starts only the
rows that join with it and only ever sees its own. A draft step is cut into each policy's rows once, however
many calls ask about it (`accept_prob`, then `decide`), the batch's rows once while they stay the same, and
each policy's rows are listed once per join: with a policy per prompt (64 in a batch-16 loop), cutting on
every call cost ~1.5 ms a round; with one per domain, a few tenths. What the engine decides for the batch as a whole
(what drafts, whether the cost gate may cut drafts, which n-gram lengths it looks up) is one setting, so
the policies must agree on it; kinds, knobs, artifacts and versions may differ.
"""

import dataclasses

import torch

from specray.policies.base import DraftStep, Outcome, StopPolicy, grown

BATCH_SETTINGS = ("draft_source", "cost_aware", "ngram_max", "ngram_min")


def batch_settings(policy: StopPolicy | None) -> tuple | None:
    """What every policy sharing an engine loop must agree on; None for target-only decoding."""
    return None if policy is None else tuple(getattr(policy, setting) for setting in BATCH_SETTINGS)


class PerRowPolicy(StopPolicy):
    def __init__(self, first: StopPolicy):
        """Sequences join with `first` or with policies that agree with it on `BATCH_SETTINGS`."""
        for setting in BATCH_SETTINGS:
            setattr(self, setting, getattr(first, setting))
        self.policies: list[StopPolicy] = [first]  # each distinct policy once
        self.owner = torch.zeros(0, dtype=torch.long)  # [rows] index into `policies` of each row's policy
        self.members: list[tuple[StopPolicy, torch.Tensor]] | None = None  # each policy's rows (None: list them again)
        self.last_cut: tuple[object, list] | None = None  # the step or outcome `cut` was last asked about, and its cut
        self.last_rows: tuple[torch.Tensor, list] | None = None  # the rows `cut` was last asked about, and their cut

    def join(self, rows: torch.Tensor, policy: StopPolicy) -> None:
        """Sequences stopped by `policy` take `rows` (fresh ones, or ones finished sequences left)."""
        index = next((i for i, p in enumerate(self.policies) if p is policy), None)
        if index is None:
            theirs, ours = batch_settings(policy), batch_settings(self)
            if theirs != ours:
                setting = next(s for s, a, b in zip(BATCH_SETTINGS, theirs, ours) if a != b)
                raise ValueError(f"policies sharing a batch must agree on {setting} ({policy.name}: "
                                 f"{getattr(policy, setting)!r}, {self.policies[0].name}: {getattr(self, setting)!r})")
            index = len(self.policies)
            self.policies.append(policy)
        self.owner = grown(self.owner, int(rows.max()) + 1 if len(rows) else 0)
        self.owner[rows] = index
        self.members, self.last_cut, self.last_rows = None, None, None
        policy.start(rows)

    def stopped_by(self, seq: int) -> tuple[str, str]:
        return self.policies[int(self.owner[seq])].stopped_by(seq)

    @property
    def acceptance(self) -> torch.Tensor:
        return self._merged(lambda p: p.acceptance)

    @property
    def ngram_acceptance(self) -> torch.Tensor:
        return self._merged(lambda p: p.ngram_acceptance)

    def budget(self, seqs: torch.Tensor) -> torch.Tensor:
        return self._by_owner(seqs, lambda p, rows, _: p.budget(rows), torch.long)

    def accept_prob(self, step: DraftStep) -> torch.Tensor:
        return self._by_owner(step, lambda p, mine, _: p.accept_prob(mine), torch.float)

    def ngram_accept_prob(self, step: DraftStep) -> torch.Tensor:
        return self._by_owner(step, lambda p, mine, _: p.ngram_accept_prob(mine), torch.float)

    def decide(self, step: DraftStep, accept_prob: torch.Tensor) -> torch.Tensor:
        return self._by_owner(step, lambda p, mine, where: p.decide(mine, accept_prob[where]), torch.long)

    def observe(self, outcome: Outcome) -> None:
        for policy, mine, _ in self.cut(outcome):
            policy.observe(mine)

    def cut(self, record) -> list[tuple[StopPolicy, object, torch.Tensor | slice]]:
        """`record` (a [n] tensor of rows, a `DraftStep` or an `Outcome`) cut into each policy's part:
        (policy, its part of the record, where that part sits in the record), for the policies it has rows of.
        The last step or outcome is cut once, and so are the last rows (the batch's, asked for every round)."""
        if len(self.policies) == 1:
            return [(self.policies[0], record, slice(None))]
        rows = isinstance(record, torch.Tensor)
        last = self.last_rows if rows else self.last_cut
        if last is not None and (torch.equal(last[0], record) if rows else last[0] is record):
            return last[1]
        owners = self.owner[record if rows else record.seqs]
        parts = []
        for index, policy in enumerate(self.policies):
            where = (owners == index).nonzero().squeeze(-1)
            if len(where):
                parts.append((policy, _rows(record, where), where))
        if rows:
            self.last_rows = (record.clone(), parts)
        else:
            self.last_cut = (record, parts)
        return parts

    def _by_owner(self, record, answer, dtype: torch.dtype) -> torch.Tensor:
        """Each policy's `answer(policy, its part of record, where)` for its own rows, in the record's row order."""
        parts = self.cut(record)
        if len(self.policies) == 1:  # the whole record is its one part
            return answer(*parts[0]).to(dtype)
        seqs = record if isinstance(record, torch.Tensor) else record.seqs
        out = torch.zeros(len(seqs), dtype=dtype)
        for policy, mine, where in parts:
            out[where] = answer(policy, mine, where).to(dtype)
        return out

    def _merged(self, per_sequence) -> torch.Tensor:
        """A per-row tensor of the policies' own, each row's value from its owner."""
        if self.members is None:
            self.members = [(policy, (self.owner == index).nonzero().squeeze(-1)) for index, policy in enumerate(self.policies)]
        out = torch.zeros(len(self.owner))
        for policy, rows in self.members:
            out[rows] = per_sequence(policy)[rows].float()
        return out


def _rows(record, where: torch.Tensor):
    """A tensor, `DraftStep` or `Outcome` cut to the rows at `where` (tensors per row; the rest as is)."""
    if isinstance(record, torch.Tensor):
        return record[where]
    return dataclasses.replace(record, **{
        f.name: getattr(record, f.name)[where] for f in dataclasses.fields(record)
        if isinstance(getattr(record, f.name), torch.Tensor)
    })
