"""The sequences in flight and their two KV caches: admitted, committed to and retired only here.

Continuous batching: up to `max_batch` sequences decode together; when some finish, waiting prompts
take their slots, so a batch never drains to a few long stragglers. Newcomers are prefilled apart from
the running rows (every token of each prompt but the last, in the target's cache and, while the batch
drafts with the draft model beside running rows, in the draft's) and then join the next round with their last prompt token pending,
like every running row — prefilling inside the running rows' verification would pad all of them to the
prompt's width. A prefill has a fixed cost, so newcomers are not admitted one by one as rows finish
(drafting scatters the rounds rows finish in): free slots wait until the slots left empty since the last
admission add up to one round of the full batch, or no row runs: a rent-or-buy rule, which pays at most
about twice the cheaper of waiting and prefilling alone while a prefill's fixed cost is about a round.
Measured on the embedded target in bf16 (AMX CPU, 150-token prompts): a prompt prefilled alone took
272-284 ms, one of 16-32 prefilled together 117-141 ms each; target-only at batch 16 over 64 prompts of
mixed output length refilled with 38 prefills taking 5.9-7.3 s one by one, with 19 taking 4.5-4.9 s
under this rule (docs/benchmarks.md, seventh session).

`commit` is the only code that changes a sequence: it appends the round's accepted tokens, applies the
stop conditions and truncates both caches from one length tensor (each cache keeps a row's tokens up to
its last accepted draft token; the new token is pending).

A feature-level draft reads with each token the target's hidden state at the token before it. Those
states come out of verification; the batch keeps, per row, the ones of the tokens the draft has not read
yet. Drafted tokens were read with the draft's own predicted states, so its cache keeps only the tokens
committed before the round, and the next round re-reads the accepted ones with the target's true states.
"""

import time
from collections import deque
from dataclasses import dataclass

import torch

from specray.engine.kv_cache import SlotCache
from specray.engine.proposals import Proposals, Verdicts
from specray.policies.cost import GainCalibration


# A row's unread target states are joined once they come in more pieces than this: counting a piece per
# round a row did not draft cost ~1 ms a round (under a profiler) at batch 16 once rows had idled for a
# hundred rounds.
MAX_PIECES = 8


@dataclass
class Sequence:
    index: int  # the row policies and traces know it by (`Decoding`: a `generate` call's prompt position)
    prompt_id: str
    tokens: list[int]
    prompt_len: int
    admitted: float = 0.0  # perf_counter() when it left the queue for a slot; its wall time counts from there
    iterations: int = 0
    drafted: int = 0
    accepted: int = 0
    stop_reason: str | None = None  # eos | max_new_tokens | stop_string | error
    error: str | None = None
    wall_ms: float = 0.0
    last_commit: int = 1  # tokens the last round appended (a newcomer's: its pending prompt token)

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_len


class BatchState:
    def __init__(self, waiting: list[Sequence], max_batch: int, target, draft, eos: set[int], tokenizer,
                 draft_reads_states: bool = False):
        self.waiting = deque(waiting)
        self.max_batch, self.eos, self.tokenizer = max_batch, eos, tokenizer
        self.active: list[Sequence] = []
        self.empty_slot_rounds = 0  # free slots summed over the rounds waiting prompts were held back
        self.tcache, self.dcache = SlotCache.for_model(target, 0), SlotCache.for_model(draft, 0)
        self.idle_rounds = 0  # rounds since the budget last let the batch draft
        self.drafting_rounds = 0  # rounds drafted since the batch last idled
        self.rounds_per_read: float | None = None  # drafting rounds a run of them lasted, on average (None: none ended)
        self.exploration_ms = 0.0  # the budget's credit for probes, in predicted round milliseconds
        self.calibration = GainCalibration()  # how far the gate trusts the policy's estimates of drafted tokens
        self.opening = GainCalibration()  # how far it trusts rows' running acceptance rates, asked before drafting
        # per row, the target's states behind the tokens the draft has not read ((len(tokens) - dcache length, L*H)
        # in all), in the pieces they came in: joined only when the draft reads them, so rows that do not draft
        # for a while append a piece per round instead of copying all of them every round
        self.target_states: list[list[torch.Tensor]] | None = [] if draft_reads_states else None

    def __len__(self) -> int:
        return len(self.active)

    @property
    def busy(self) -> bool:
        return bool(self.active or self.waiting)

    @property
    def seqs(self) -> torch.Tensor:
        """[B] each active sequence's row (`Sequence.index`), in cache row order."""
        return torch.tensor([s.index for s in self.active], dtype=torch.long)

    def newcomers(self) -> list[Sequence]:
        """Waiting sequences that fit the free slots, in prompt order (taken off the queue), once the slots left
        empty since the last admission add up to one round of the full batch (at once when no row runs)."""
        empty = self.max_batch - len(self.active)
        if not (empty and self.waiting):
            return []
        self.empty_slot_rounds += empty
        if self.active and self.empty_slot_rounds < self.max_batch:
            return []  # not yet worth a prefill's fixed cost: let more slots free up
        self.empty_slot_rounds = 0
        taken, now = [self.waiting.popleft() for _ in range(min(empty, len(self.waiting)))], time.perf_counter()
        for seq in taken:
            seq.admitted = now
        return taken

    def admit(self, seqs: list[Sequence], tcache: SlotCache, dcache: SlotCache, states: list[torch.Tensor] | None) -> None:
        """Prefilled sequences join the batch after the running rows (with the target states their draft
        has yet to read, when it reads them)."""
        self.active += seqs
        self.tcache.append_rows(tcache)
        self.dcache.append_rows(dcache)
        if self.target_states is not None:
            self.target_states += [[s] for s in states]

    def target_chunks(self, proposals: Proposals) -> list[list[int]]:
        """What verification feeds each row: its pending token(s) and its proposal."""
        lengths, offsets, tokens = self.tcache.lengths.tolist(), proposals.offsets.tolist(), proposals.token_ids.tolist()
        return [s.tokens[n:] + tokens[offsets[b] : offsets[b + 1]] for b, (s, n) in enumerate(zip(self.active, lengths))]

    def draft_unread(self) -> list[int]:
        """[B] how many of each row's tokens the draft has not read: a steady row's, what the last round appended
        (its pending token and, for a feature-level draft, the accepted ones it re-reads with the target's
        states); a row that skipped rounds (the batch did not draft, or the row drafted by n-gram), more; a row
        admitted while the batch did not draft, its whole prompt."""
        return [len(s.tokens) - n for s, n in zip(self.active, self.dcache.lengths.tolist())]

    def draft_chunks(self, rows: torch.Tensor) -> list[list[int]]:
        """What the draft must read before its next token, for the marked rows (those behind catch up)."""
        return [s.tokens[len(s.tokens) - n :] if on else [] for s, n, on in zip(self.active, self.draft_unread(), rows.tolist())]

    def draft_lag(self, rows: torch.Tensor | None = None) -> int:
        """How wide a catch-up the draft's next read of `rows` (a [B] mask; default: every row) would be: the
        most tokens such a row holds unread, when some such row holds more than the last round appended to it
        (it skipped rounds, and the step reading them is a catch-up); 0 when every such row is steady."""
        marked = rows.tolist() if rows is not None else [True] * len(self)
        read = [(n, seq) for n, seq, on in zip(self.draft_unread(), self.active, marked) if on]
        behind = any(n > seq.last_commit for n, seq in read)
        return max(n for n, _ in read) if behind else 0

    def draft_states(self, rows: torch.Tensor) -> list[torch.Tensor] | None:
        """The target states behind `draft_chunks(rows)`, token for token; None when the draft reads none."""
        if self.target_states is None:
            return None
        return [torch.cat(pieces) if on else pieces[0][:0] for pieces, on in zip(self.target_states, rows.tolist())]

    def commit(self, proposals: Proposals, verdicts: Verdicts, now: float, max_new_tokens: int, stops: tuple[str, ...]) -> None:
        """Append each row's accepted tokens and its next token, apply stop conditions, roll both caches back;
        `now`: perf_counter() at the end of the round."""
        offsets, tokens = proposals.offsets.tolist(), proposals.token_ids.tolist()
        accepted, following = verdicts.num_accepted.tolist(), verdicts.next_token.tolist()
        before = torch.tensor([len(s.tokens) for s in self.active], dtype=torch.long)
        for b, seq in enumerate(self.active):
            start = offsets[b]
            new = tokens[start : start + accepted[b]] + [following[b]]
            seq.iterations += 1
            seq.drafted += offsets[b + 1] - start
            seq.accepted += accepted[b]
            self._extend(seq, new, max_new_tokens, stops)
            seq.last_commit = len(seq.tokens) - int(before[b])
            seq.wall_ms = (now - seq.admitted) * 1e3
        kept = torch.tensor([len(s.tokens) - 1 for s in self.active], dtype=torch.long)
        self.tcache.truncate(kept)
        if self.target_states is None:
            self.dcache.truncate(kept)
            return
        self.dcache.truncate(torch.minimum(kept, before))  # drafted tokens were read with predicted states
        unread = (kept + 1 - self.dcache.lengths.cpu()).tolist()
        starts = proposals.verify_offsets.tolist()
        for b, pieces in enumerate(self.target_states):
            pieces.append(verdicts.target_states[starts[b] : starts[b] + 1 + accepted[b]])
            if len(pieces) > MAX_PIECES:  # so counting them stays cheap while a row does not draft for long
                pieces[:] = [torch.cat(pieces)]
            if sum(map(len, pieces)) > unread[b]:  # the draft read some: keep only what it has not
                self.target_states[b] = [torch.cat(pieces)[-unread[b]:]]

    def _extend(self, seq: Sequence, new: list[int], max_new_tokens: int, stops: tuple[str, ...]) -> None:
        for token in new:
            seq.tokens.append(token)
            if token in self.eos:
                seq.stop_reason = "eos"
                break
            if seq.generated >= max_new_tokens:
                seq.stop_reason = "max_new_tokens"
                break
        if stops and seq.stop_reason is None:
            self._cut_at_stop_string(seq, stops, len(new))

    def _cut_at_stop_string(self, seq: Sequence, stops: tuple[str, ...], new: int) -> None:
        """End at the first token whose text completes a stop string (the same cut target-only makes)."""
        output = seq.tokens[seq.prompt_len :]
        for end in range(max(1, len(output) - new + 1), len(output) + 1):
            text = self.tokenizer.decode(output[:end], skip_special_tokens=True)
            if any(s in text for s in stops):
                del seq.tokens[seq.prompt_len + end :]
                seq.stop_reason = "stop_string"
                return

    def retire(self) -> None:
        """Finished sequences leave the batch so they cost nothing, their places taken by the last rows
        (`fill_order`)."""
        keep = [i for i, s in enumerate(self.active) if s.stop_reason is None]
        if len(keep) < len(self.active):
            order = fill_order(keep)
            rows = torch.tensor(order, dtype=torch.long)
            self.tcache.select_rows(rows)
            self.dcache.select_rows(rows)
            self.active = [self.active[i] for i in order]
            if self.target_states is not None:
                self.target_states = [self.target_states[i] for i in order]


def fill_order(keep: list[int]) -> list[int]:
    """The rows `keep` (ascending) in the order they are held after the others leave: a kept row stays where it
    is, and each place a row leaves among the first len(keep) is filled by a kept row from beyond them, so
    only those rows' caches are copied."""
    held = len(keep)
    order = list(range(held))
    kept, beyond = set(keep), iter(i for i in keep if i >= held)
    for place in range(held):
        if place not in kept:
            order[place] = next(beyond)
    return order
