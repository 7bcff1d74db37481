"""The stop-policy seam: after every draft token, per sequence, "stop drafting now?".

The engine hands a policy what the draft just produced (`DraftStep`) and, after verification, what the
target accepted (`Outcome`). Everything that varies between strategies lives behind this interface,
as transformers' `CandidateGenerator` does for candidate strategies.

Rows are indices into the batch the policy was `reset` for; they stay fixed while sequences finish,
so per-sequence state is a plain tensor indexed by row.
"""

from dataclasses import dataclass
from enum import IntEnum

import torch

from specray.averages import ema
from specray.policies.spec import NGRAM_MAX


class Decision(IntEnum):
    CONTINUE = 0  # keep this token and draft another
    STOP = 1  # keep this token and verify now
    DROP = 2  # discard this token and verify what came before


@dataclass(frozen=True)
class DraftStep:
    seqs: torch.Tensor  # (n,) the sequences still drafting (their index among the `generate` call's prompts)
    depth: int  # 1-based position of this token within the current draft
    position: torch.Tensor  # (n,) 0-based index of this token among generated tokens
    token: torch.Tensor  # (n,)
    token_prob: torch.Tensor  # (n,) the draft's probability of its own token
    entropy: torch.Tensor  # (n,)
    topk_probs: torch.Tensor  # (n, TOPK)
    hidden: torch.Tensor  # (n, H) the draft's last hidden state that produced this token (zeros for n-gram tokens)
    from_ngram: torch.Tensor | None = None  # (n,) bool: token proposed by n-gram lookup, not by the draft model


@dataclass(frozen=True)
class Outcome:
    seqs: torch.Tensor  # (n,) the sequences that took part in this verification
    drafted: torch.Tensor  # (n,) tokens proposed
    accepted: torch.Tensor  # (n,) leading proposed tokens the target accepted
    from_ngram: torch.Tensor | None = None  # (n,) bool: this round's proposal came from n-gram lookup


class StopPolicy:
    """Base: a running acceptance estimate per row and per draft source, no lookahead limit beyond `k_max`.

    `draft_source` says what proposes tokens for this policy to stop: the draft `model`, `ngram` lookup
    in the prompt and output (free, and a point mass), or `ngram+model` (n-gram where a match exists,
    the model elsewhere). N-gram tokens carry no draft confidence, so their acceptance estimate is the
    row's running n-gram acceptance rate, kept apart from the model's.

    The running estimates are exponential averages over rounds with `ema_decay` 0.9. At 0.8 a few
    rejections in a row took a row below the cost gate's bar (four, at batch 1), and it then waited for a
    probe, which the exploration credit pays for every few dozen idle rounds at batch 1: `confidence` and
    `heuristic` ran about half their rounds plain. Measured in process (12 held-out prompts, batch 1, bf16,
    each variant in turn, three times): `confidence` 1.09x target-only at 0.8, 1.17-1.18x at 0.9 (1.14x at
    0.95), `heuristic` 1.00x at 0.8, 1.07x at 0.9; `static:3` 1.14x.
    """

    name = "policy"
    version = "builtin"
    cost_aware = False  # whether the engine's cost gate may cut this policy's drafts
    draft_source = "model"
    ngram_max = NGRAM_MAX  # longest n-gram matched when drafting by lookup
    ngram_min = 1  # shortest (`shortest_ngram`)
    prior_acceptance = 0.6  # per-token acceptance assumed before any verification
    prior_ngram_acceptance = 0.5
    ema_decay = 0.9

    def __init__(self, k_max: int = 8, cost_aware: bool | None = None, version: str | None = None):
        if k_max < 1:
            raise ValueError(f"k_max must be >= 1, got {k_max}")
        self.k_max = k_max
        self.cost_aware = self.cost_aware if cost_aware is None else cost_aware
        self.version = self.version if version is None else version
        self.acceptance = torch.zeros(0)
        self.ngram_acceptance = torch.zeros(0)
        # what this policy has seen so far, per source: where rows start before their own first verification
        self.typical = {"model": self.prior_acceptance, "ngram": self.prior_ngram_acceptance}
        self.verified = False  # whether any of its drafted tokens was verified yet
        self.observed = {source: torch.zeros(0, dtype=torch.bool) for source in self.typical}

    @property
    def drafts_by_model(self) -> bool:
        """Whether the draft model proposes some of this policy's tokens (`model`, `ngram+model`)."""
        return "model" in self.draft_source.split("+")

    @property
    def drafts_by_lookup(self) -> bool:
        """Whether n-gram lookup proposes some of them (`ngram`, `ngram+model`)."""
        return "ngram" in self.draft_source.split("+")

    def reset(self, batch_size: int) -> None:
        """A new batch of `batch_size` sequences begins, on rows 0..batch_size-1."""
        self.acceptance, self.ngram_acceptance = torch.zeros(0), torch.zeros(0)
        self.observed = {source: torch.zeros(0, dtype=torch.bool) for source in self.typical}
        self.start(torch.arange(batch_size))

    def start(self, rows: torch.Tensor) -> None:
        """New sequences take `rows` (fresh ones, or ones finished sequences left: a stream of batches reuses
        them). They start from the policy's running acceptance over the rows and batches it has already
        seen (a domain's policy learns its domain), or from the prior before anything was verified,
        instead of from a fixed guess every batch. Subclasses with state of their own per row extend this."""
        size = int(rows.max()) + 1 if len(rows) else 0
        self.acceptance = grown(self.acceptance, size)
        self.ngram_acceptance = grown(self.ngram_acceptance, size)
        self.observed = {source: grown(seen, size) for source, seen in self.observed.items()}
        self.acceptance[rows] = self.typical["model"]
        self.ngram_acceptance[rows] = self.typical["ngram"]
        for seen in self.observed.values():
            seen[rows] = False

    def expect(self, acceptance: float) -> None:
        """Rows start from `acceptance`, what the draft model was measured to accept in their domain, instead
        of the generic prior, until this policy has verified tokens of its own. The cost gate asks before a
        batch's first round whether drafting pays, and at batch 32 on the embedded pair (bf16, AVX-512 without
        AMX) a drafting round cost 1.6x a plain one: the prior 0.6 drafted every policy's first round, and the
        feature-level draft's recorded held-out agreement (0.39-0.56 by domain, 0.45 overall) does not."""
        if not self.verified:
            self.typical["model"] = acceptance

    def stopped_by(self, seq: int) -> tuple[str, str]:
        """Name and version of the policy that stops sequence `seq`: this one (see `PerRowPolicy`)."""
        return self.name, self.version

    def budget(self, seqs: torch.Tensor) -> torch.Tensor:
        """Most tokens each row may draft this round (0 = do not draft)."""
        return torch.full((len(seqs),), self.k_max, dtype=torch.long)

    def accept_prob(self, step: DraftStep) -> torch.Tensor:
        """Estimated probability that the target accepts this token, given the ones before were."""
        return self.acceptance[step.seqs]

    def ngram_accept_prob(self, step: DraftStep) -> torch.Tensor:
        """Estimated acceptance of an n-gram token: the row's running n-gram acceptance rate."""
        return self.ngram_acceptance[step.seqs]

    def decide(self, step: DraftStep, accept_prob: torch.Tensor) -> torch.Tensor:
        """Decision per row (a `Decision` code); the base never stops early."""
        return torch.full((len(step.seqs),), Decision.CONTINUE, dtype=torch.long)

    def observe(self, outcome: Outcome) -> None:
        """Verification results; updates the per-row acceptance estimate of the source each row drafted with,
        and the policy's typical acceptance, which rows not yet verified take."""
        drafted = outcome.drafted
        evaluated = torch.minimum(outcome.accepted + 1, drafted).clamp_min(1)
        rate = outcome.accepted.float() / evaluated
        ngram = outcome.from_ngram if outcome.from_ngram is not None else torch.zeros(len(drafted), dtype=torch.bool)
        for source, estimate, mine in (("model", self.acceptance, ~ngram), ("ngram", self.ngram_acceptance, ngram)):
            has = (drafted > 0) & mine
            if not has.any():
                continue
            seqs = outcome.seqs[has]
            estimate[seqs] = ema(estimate[seqs], rate[has], self.ema_decay)
            self.typical[source] = ema(self.typical[source], float(rate[has].mean()), self.ema_decay)
            self.observed[source][seqs] = True
            self.verified = True
            estimate[~self.observed[source]] = self.typical[source]


class LearnedPolicy(StopPolicy):
    """Base of the learned kinds: P(accept) comes from `model` (a small network giving a logit), loaded from a
    versioned artifact, and drafting stops by comparing it with `threshold` (each kind names it after its
    paper); the cost gate may cut its drafts unless the spec says `cost=off`."""

    cost_aware = True

    def __init__(self, model: torch.nn.Module, threshold: float, k_max: int = 10, version: str = "unversioned",
                 cost_aware: bool = True):
        super().__init__(k_max=k_max, cost_aware=cost_aware, version=version)
        self.model, self.threshold = model, threshold

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """P(accept) per row of `inputs`."""
        with torch.no_grad():
            return torch.sigmoid(self.model(inputs))


def grown(per_row: torch.Tensor, size: int) -> torch.Tensor:
    """`per_row` with room for `size` rows (the new ones zero), or as it is when it has that room."""
    if len(per_row) >= size:
        return per_row
    return torch.cat([per_row, per_row.new_zeros(size - len(per_row), *per_row.shape[1:])])
