"""One batch, several stop policies: each sequence answers to the policy it joined with.

Continuous batching keeps one engine full whatever the domain mix, and a model worker streams every
batch it is given through one engine, so the rows in flight may come from several domains and batches,
each with its own policy (budgets, learned artifact, version, running acceptance). The engine speaks to
one `PerRowPolicy`; sequences `join` it on their rows with their own policy, and every call's rows are
handed to the policies that own them, their answers put back in row order. A policy starts only the
rows that join with it and only ever sees its own. What the engine decides for the batch as a whole
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
        return self._by_owner(seqs, lambda p, mine: p.budget(_rows(seqs, mine)), torch.long)

    def accept_prob(self, step: DraftStep) -> torch.Tensor:
        return self._by_owner(step.seqs, lambda p, mine: p.accept_prob(_rows(step, mine)), torch.float)

    def ngram_accept_prob(self, step: DraftStep) -> torch.Tensor:
        return self._by_owner(step.seqs, lambda p, mine: p.ngram_accept_prob(_rows(step, mine)), torch.float)

    def decide(self, step: DraftStep, accept_prob: torch.Tensor) -> torch.Tensor:
        return self._by_owner(step.seqs, lambda p, mine: p.decide(_rows(step, mine), _rows(accept_prob, mine)), torch.long)

    def observe(self, outcome: Outcome) -> None:
        if len(self.policies) == 1:
            return self.policies[0].observe(outcome)
        owners = self.owner[outcome.seqs]
        for index, policy in enumerate(self.policies):
            mine = owners == index
            if mine.any():
                policy.observe(_rows(outcome, mine))

    def _by_owner(self, seqs: torch.Tensor, answer, dtype: torch.dtype) -> torch.Tensor:
        """Each policy's `answer(policy, mine)` for its own rows of `seqs`, in row order (`mine` None: all rows)."""
        if len(self.policies) == 1:
            return answer(self.policies[0], None).to(dtype)
        out = torch.zeros(len(seqs), dtype=dtype)
        owners = self.owner[seqs]
        for index, policy in enumerate(self.policies):
            mine = owners == index
            if mine.any():
                out[mine] = answer(policy, mine).to(dtype)
        return out

    def _merged(self, per_sequence) -> torch.Tensor:
        """A per-row tensor of the policies' own, each row's value from its owner."""
        out = torch.zeros(len(self.owner))
        for index, policy in enumerate(self.policies):
            mine = (self.owner == index).nonzero().squeeze(-1)
            out[mine] = per_sequence(policy)[mine].float()
        return out


def _rows(record, mine: torch.Tensor | None):
    """A tensor, `DraftStep` or `Outcome` cut to the rows marked in `mine` (tensors per row; the rest as is)."""
    if mine is None:
        return record
    if isinstance(record, torch.Tensor):
        return record[mine]
    return dataclasses.replace(record, **{
        f.name: getattr(record, f.name)[mine] for f in dataclasses.fields(record)
        if isinstance(getattr(record, f.name), torch.Tensor)
    })
