"""Training a feature-level (EAGLE) draft on the target's own hidden states.

The teacher signal is free once the target has read a sequence: one forward over prompt + response
gives its final hidden state at every position, and its next-token distribution is that state through
its LM head. The draft learns both (EAGLE's recipe): at position j it reads token j and the target's
state at j-1, and is trained to (1) regress the target's state at j and (2) match the target's
distribution at j (KL over the tokens its head can emit). Drafting a second token ahead it reads its
own predicted state, not the target's; a second, unrolled pass that reads the first pass's predictions
trains for that too (EAGLE-3's "training-time test"). Noise on the input states makes the draft robust
to its own errors. The states are computed once (in the precision the target runs in) and reused for
every epoch. A draft that reads several target layers (`FeatureDraft.target_layers`) is given the
target's states at all of them and learns their fusion; what it regresses is the final state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specray.engine.forward import forward_keywords, forward_with_states
from specray.models.draft import own_columns
from specray.models.feature_draft import FeatureDraft
from specray.training.distill_data import TeacherData, padded
from specray.training.distill_eval import teacher_forced_matches
from specray.training.distill_loop import fit

STATE_NOISE = 0.05  # input-state noise, relative to the states' RMS
REGRESSION_WEIGHT = 1.0
UNROLLED_WEIGHT = 0.5  # the second pass, which reads the draft's own predicted states


@torch.no_grad()
def target_states(target, data: TeacherData, layers: tuple[int, ...] | None = None,
                  batch_size: int = 16) -> list[torch.Tensor]:
    """The target's hidden states at every position of every prompt + response after each of `layers`
    (default: the final state alone), (len, L*H) each, the final state last, kept in bfloat16 (they are
    inputs and regression targets, not logits)."""
    seqs = data.sequences()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # similar lengths share a batch
    out: list[torch.Tensor | None] = [None] * len(seqs)
    one_logit = {"logits_to_keep": 1} if forward_keywords(type(target))[0] else {}  # states are what is read
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = padded([seqs[i] for i in chunk])
        _, hidden = forward_with_states(target, layers, input_ids=ids, attention_mask=mask, **one_logit)
        for row, i in enumerate(chunk):
            out[i] = hidden[row, : len(seqs[i])].to(torch.bfloat16)
    return out


def shifted(states: torch.Tensor) -> torch.Tensor:
    """[B, T, H] → the state behind each position's token: zeros at 0, then states[:, :-1]."""
    return F.pad(states[:, :-1], (0, 0, 1, 0))


def feature_loss(draft: FeatureDraft, ids: torch.Tensor, mask: torch.Tensor, scored: torch.Tensor,
                 states: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Regression to the target's final states plus KL to its distribution at the `scored` positions (those
    whose next token is a response token), for the teacher-forced pass and for the pass that reads the first
    pass's predictions. The prompt's positions are read (attention needs them) but not scored: the head
    over 8k columns is most of a step's cost, and the draft only ever drafts responses. `states` [B, T, L*H]
    hold the target layers the draft reads; the noise on each is relative to that layer's RMS."""
    hidden = draft.config.hidden_size
    final = states[..., -hidden:]
    teacher = F.log_softmax(own_columns(draft.lm_head, final[scored]).float(), -1)
    inputs = shifted(states)
    rms = states[mask.bool()].unflatten(-1, (-1, hidden)).pow(2).mean((0, 2)).sqrt()  # [L]
    noise = torch.randn(inputs.shape, generator=generator) * STATE_NOISE * rms.repeat_interleave(hidden)
    total = 0.0
    for weight in (1.0, UNROLLED_WEIGHT):
        predicted = draft.predict_hidden(ids, inputs + noise, attention_mask=mask)
        guess = F.log_softmax(own_columns(draft.lm_head, predicted[scored]).float(), -1)
        kl = F.kl_div(guess, teacher, log_target=True, reduction="batchmean")
        regression = F.smooth_l1_loss(predicted[scored].float(), final[scored])
        total = total + weight * (kl + REGRESSION_WEIGHT * regression)
        inputs, noise = shifted(predicted.detach().float()), 0.0
    return total


def train_feature_draft(draft: FeatureDraft, data: TeacherData, states: list[torch.Tensor], minutes: float,
                        lr: float = 2e-3, batch_size: int = 8, seed: int = 0, max_steps: int | None = None,
                        autocast: torch.dtype | None = None) -> dict:
    """AdamW on the draft's own (float32) weights within a wall-clock budget; with `autocast` (bfloat16)
    the products run in that precision, which is much faster where the CPU has bf16 matrix units."""
    seqs, generator = data.sequences(), torch.Generator().manual_seed(seed)

    def loss_of(indices: list[int]) -> torch.Tensor:
        ids, mask = padded([seqs[i] for i in indices])
        scored = torch.zeros_like(mask, dtype=torch.bool)
        for row, i in enumerate(indices):
            scored[row, len(data.prompts[i]) - 1 : len(seqs[i]) - 1] = True
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            return feature_loss(draft, ids, mask, scored, stacked([states[i] for i in indices], ids.shape[1]), generator)

    draft.train()
    stats = fit(list(draft.own_parameters().values()), loss_of, len(seqs), minutes, lr, batch_size, seed, max_steps)
    draft.eval()
    return stats


def stacked(states: list[torch.Tensor], width: int) -> torch.Tensor:
    """[B, width, H] float32 from per-sequence (len, H) states, right-padded with zeros."""
    out = torch.zeros(len(states), width, states[0].shape[-1])
    for row, s in enumerate(states):
        out[row, : len(s)] = s.float()
    return out


def feature_matches(draft: FeatureDraft, data: TeacherData, states: list[torch.Tensor],
                    batch_size: int = 16) -> list[list[bool]]:
    """`teacher_forced_matches` of a feature-level draft reading the target's true states (as at a row's
    first draft token)."""
    def predict(indices: list[int], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        behind = shifted(stacked([states[i] for i in indices], ids.shape[1]))
        return draft(input_ids=ids, attention_mask=mask, target_hidden=behind).logits.argmax(-1)

    return teacher_forced_matches(data, predict, batch_size)
