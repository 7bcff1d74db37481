"""A forward over ragged rows whose matrix products see only real tokens.

Rows of a batch feed a model different numbers of tokens in one forward: a verification where some rows
proposed 3 draft tokens and most none, a draft step for the few rows still drafting, a prefill of prompts
of different lengths. Padded to the widest row, every projection, MLP and LM head also runs over the
holes, so one row's long proposal made the whole batch's verification as dear as if every row had
proposed as much. Packed, the tokens of every row sit side by side in one sequence [1, T]: the matrix
products, which are most of a forward's cost, run over T real tokens, and only attention and the KV cache,
which are per row, see the rows again. Measured on the embedded target (bf16, AVX-512 CPU without AMX,
100-token contexts): batch 16 with 4 rows verifying 3 tokens and 12 verifying 1 took 77 ms packed and
100 ms padded (16 x 1 took 56-62 ms); batch 32 with 8 rows verifying 2 took 82 ms against 99 (32 x 1:
75 ms); batch 8 with 2 rows verifying 5 took 60 ms against 71. The logits are the same in both layouts.

`Packing` says where each packed token sits in the padded [B, width] layout (rows right-aligned, holes on
the left, as `SlotCache.extend` lays out a chunk). While a packed forward runs (`packed`), the engine's
attention (`specray.engine.attention`) spreads the queries back over the rows, attends, and packs the
result again, and the cache layers (`specray.engine.kv_cache.SlotLayer`) write each token's keys and
values into its row's next slot.
"""

import contextlib
import contextvars
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Packing:
    index: torch.Tensor  # [T] long: where each packed token sits in the padded layout flattened, row * width + slot
    batch: int  # B
    width: int  # the widest row's tokens

    @staticmethod
    def of(valid: torch.Tensor) -> "Packing":
        """From a chunk's [B, width] mask of real (non-hole) slots; tokens are packed row after row."""
        return Packing(valid.flatten().nonzero().squeeze(-1), valid.shape[0], valid.shape[1])

    def to_rows(self, packed: torch.Tensor) -> torch.Tensor:
        """[B, heads, width, d] from a packed [1, heads, T, d] (attention's layout); zeros in holes.
        One indexed copy along the flattened slots (a scatter over rows and slots took twice as long: 26 against
        13 us for a layer's queries at batch 16, in bf16)."""
        heads, dim = packed.shape[1], packed.shape[3]
        padded = packed.new_zeros(self.batch * self.width, heads, dim)
        padded.index_copy_(0, self.index, packed[0].transpose(0, 1))
        return padded.view(self.batch, self.width, heads, dim).transpose(1, 2)

    def to_tokens(self, padded: torch.Tensor) -> torch.Tensor:
        """[1, T, ...] from a padded [B, width, ...]: the real tokens, packed again."""
        return padded.reshape(self.batch * self.width, *padded.shape[2:]).index_select(0, self.index)[None]


_current: contextvars.ContextVar[Packing | None] = contextvars.ContextVar("specray_packing", default=None)


def current() -> Packing | None:
    """The packing of the forward in progress; None for a padded forward."""
    return _current.get()


@contextlib.contextmanager
def packed(packing: Packing):
    """Run a forward packed as `packing` says."""
    token = _current.set(packing)
    try:
        yield
    finally:
        _current.reset(token)
