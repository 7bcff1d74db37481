"""One batch, several stop policies: each sequence answers to the policy of its own domain.

Continuous batching keeps one engine full whatever the domain mix, so the rows in flight may come from
several domains, each with its own policy (budgets, learned artifact, version, running acceptance). The
engine speaks to one `StopPolicy`; `PerRowPolicy` hands every call's rows to the policies that own them
and puts their answers back in row order. Every policy is reset for the whole call and indexes rows by
sequence index, as always; it only ever sees its own rows. What the engine decides for the batch as a
whole (what drafts, whether the cost gate may cut drafts, how long an n-gram it looks up) is one setting,
so the policies must agree on it; kinds, knobs, artifacts and versions may differ.
"""

import dataclasses

import torch

from specray.policies.base import DraftStep, Outcome, StopPolicy

BATCH_SETTINGS = ("draft_source", "cost_aware", "ngram_max")


class PerRowPolicy(StopPolicy):
    def __init__(self, policies: dict[str, StopPolicy], owners: list[str]):
        """`policies` by key (a domain); `owners[i]`: the key of sequence i's policy."""
        if not policies:
            raise ValueError("a PerRowPolicy needs at least one policy")
        missing = sorted(set(owners) - set(policies))
        if missing:
            raise ValueError(f"sequences belong to {', '.join(map(repr, missing))}, with no policy "
                             f"(policies: {', '.join(map(repr, sorted(policies)))})")
        for setting in BATCH_SETTINGS:
            values = {key: getattr(p, setting) for key, p in policies.items()}
            if len(set(values.values())) > 1:
                listed = ", ".join(f"{key}: {value!r}" for key, value in sorted(values.items()))
                raise ValueError(f"policies sharing a batch must agree on {setting} ({listed})")
        first = next(iter(policies.values()))
        for setting in BATCH_SETTINGS:
            setattr(self, setting, getattr(first, setting))
        self.policies, self.owners = policies, owners
        self.masks = {key: torch.tensor([o == key for o in owners], dtype=torch.bool) for key in policies}
        self.name = "+".join(sorted({p.name for p in policies.values()}))
        self.version = ",".join(sorted({p.version for p in policies.values()}))

    def stopped_by(self, seq: int) -> tuple[str, str]:
        return self.policies[self.owners[seq]].stopped_by(seq)

    def reset(self, batch_size: int) -> None:
        if batch_size != len(self.owners):
            raise ValueError(f"a batch of {batch_size} sequences, and owners for {len(self.owners)}")
        for policy in self.policies.values():
            policy.reset(batch_size)

    @property
    def acceptance(self) -> torch.Tensor:
        return self._merged(lambda p: p.acceptance)

    @property
    def ngram_acceptance(self) -> torch.Tensor:
        return self._merged(lambda p: p.ngram_acceptance)

    def budget(self, seqs: torch.Tensor) -> torch.Tensor:
        return self._by_owner(seqs, lambda p, mine: p.budget(seqs[mine]), torch.long)

    def accept_prob(self, step: DraftStep) -> torch.Tensor:
        return self._by_owner(step.seqs, lambda p, mine: p.accept_prob(_rows(step, mine)), torch.float)

    def ngram_accept_prob(self, step: DraftStep) -> torch.Tensor:
        return self._by_owner(step.seqs, lambda p, mine: p.ngram_accept_prob(_rows(step, mine)), torch.float)

    def decide(self, step: DraftStep, accept_prob: torch.Tensor) -> torch.Tensor:
        return self._by_owner(step.seqs, lambda p, mine: p.decide(_rows(step, mine), accept_prob[mine]), torch.long)

    def observe(self, outcome: Outcome) -> None:
        for key, policy in self.policies.items():
            mine = self.masks[key][outcome.seqs]
            if mine.any():
                policy.observe(_rows(outcome, mine))

    def _by_owner(self, seqs: torch.Tensor, answer, dtype: torch.dtype) -> torch.Tensor:
        """Each policy's `answer(policy, mine)` for its own rows of `seqs`, in row order."""
        out = torch.zeros(len(seqs), dtype=dtype)
        for key, policy in self.policies.items():
            mine = self.masks[key][seqs]
            if mine.any():
                out[mine] = answer(policy, mine).to(dtype)
        return out

    def _merged(self, per_sequence) -> torch.Tensor:
        """A per-sequence tensor of the policies' own, each sequence's value from its owner."""
        out = torch.zeros(len(self.owners))
        for key, policy in self.policies.items():
            out[self.masks[key]] = per_sequence(policy)[self.masks[key]].float()
        return out


def _rows(record, mine: torch.Tensor):
    """A `DraftStep` or `Outcome` cut to the rows marked in `mine` (tensors per row; the rest as is)."""
    return dataclasses.replace(record, **{
        f.name: getattr(record, f.name)[mine] for f in dataclasses.fields(record)
        if isinstance(getattr(record, f.name), torch.Tensor)
    })
