"""What crosses from drafting to verification, and back to the batch state: flat tensors for a ragged batch.

Row b of a batch of B proposes `num_draft[b]` tokens: `token_ids[offsets[b]:offsets[b+1]]`. The target
verifies each row's tokens plus one more position (the bonus, or the correction at a rejection), so its
verified positions are laid out the same way with `k + 1` per row (`verify_offsets`). Nothing here keeps
state between rounds; the layout follows vLLM's `SpecDecodeMetadata` (draft_token_ids [N],
cu_num_draft_tokens [B]).
"""

from dataclasses import dataclass

import torch


def token_rows(offsets: torch.Tensor) -> torch.Tensor:
    """[N] the row each flat entry belongs to, from a ragged layout's [B+1] offsets."""
    return torch.repeat_interleave(torch.arange(len(offsets) - 1), offsets.diff())


@dataclass(frozen=True)
class Proposals:
    token_ids: torch.Tensor  # [N] long: every row's draft tokens, row after row
    offsets: torch.Tensor  # [B+1] long: row b's tokens are token_ids[offsets[b]:offsets[b+1]]
    draft_probs: torch.Tensor | None  # [N, V] the distribution each token was drawn from; None when greedy
    token_prob: torch.Tensor  # [N] the draft's (soft) probability of its own token, as traces record it
    entropy: torch.Tensor  # [N]
    topk_probs: torch.Tensor  # [N, TOPK]
    accept_prob: torch.Tensor  # [N] the policy's estimate that each token is accepted, given the ones before were
    hidden: torch.Tensor | None  # [N, H] the draft's hidden state behind each token, when recorded
    from_ngram: torch.Tensor  # [B] bool: the row's tokens came from n-gram lookup, not the draft model
    stop_reason: list[str]  # [B] why each row stopped drafting (none | policy | cost | eos | k_max)
    catch_up_ms: float = 0.0  # of the round's time, the draft forward that read tokens rows skipped while idle

    @property
    def num_draft(self) -> torch.Tensor:
        """[B] tokens each row proposes."""
        return self.offsets.diff()

    @property
    def verify_offsets(self) -> torch.Tensor:
        """[B+1] offsets of each row's k + 1 verified positions."""
        return self.offsets + torch.arange(len(self.offsets))

    def row_of_token(self) -> torch.Tensor:
        """[N] the row each draft token belongs to."""
        return token_rows(self.offsets)

    def expected_accepted(self) -> float:
        """The accepted tokens the policy's estimates expect: per row, the sum over its tokens of the product
        of the estimates up to each (a running product of logs, restarted at each row's first token)."""
        if not len(self.token_ids):
            return 0.0
        logs = self.accept_prob.double().clamp_min(1e-12).log().cumsum(0)
        starts = self.offsets[:-1][self.row_of_token()]
        before = torch.where(starts > 0, logs[(starts - 1).clamp_min(0)], torch.zeros_like(logs))
        return float((logs - before).exp().sum())

    def depth_of_token(self) -> torch.Tensor:
        """[N] 0-based position of each token within its row's proposal."""
        return torch.arange(len(self.token_ids)) - self.offsets[:-1][self.row_of_token()]


@dataclass(frozen=True)
class Verdicts:
    num_accepted: torch.Tensor  # [B] leading draft tokens each row accepted
    next_token: torch.Tensor  # [B] the target's correction at the first rejection, or its bonus token
    target_prob: torch.Tensor  # [N] the target's (soft) probability of each draft token, as traces record it
    target_states: torch.Tensor | None = None  # [N+B, L*H] its hidden states at each verified position, at the
    # layers a feature-level draft reads (laid out like the verified positions: `Proposals.verify_offsets`)
