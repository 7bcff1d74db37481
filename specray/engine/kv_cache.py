"""A batched, position-indexed KV cache: row b holds its tokens in slots 0..lengths[b]-1.

Sequences in one batch accept different numbers of draft tokens, so one shared cache length cannot
describe them. Each row keeps its own length, and a forward writes each row's new tokens into the
slots right after its own (gpt-fast's `KVCache` with a position per row): a row that feeds fewer tokens
than the widest row leaves no hole behind, and rolling a row back only lowers its length, so the
rejected slots are written over by the next round. Nothing accepted is ever recomputed or moved. Before
(slots appended in step across the batch, masked holes where a row fed fewer tokens or rejected drafts),
holes piled up and were reclaimed by copying every layer's cache, and every forward attended over them
until then: on the embedded pair in bf16 at batch 16, retiring rows and compacting took 1.7-1.8 ms a drafting
round, retiring them alone 0.65 ms.

Slots past a row's length hold what was written there before (rejected drafts) or zeros, never
uninitialised memory, since attention multiplies them by a weight of 0 and 0 * NaN would spread.

Each layer keeps spare room after its slots (`SlotLayer`), so a forward writes its keys and values in
place instead of concatenating the whole cache each step, as transformers' `DynamicLayer` does: measured
on the embedded target in bf16, a decoding step at batch 16 over 160 slots takes 47 ms instead of 52
(batch 1: 37 instead of 39).
"""

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from specray.engine import packing

GROWTH = 2  # a full buffer is reallocated to GROWTH times what it must hold (amortised O(1) per slot)
MIN_ROOM = 64  # slots of room at least


@dataclass(frozen=True)
class Writes:
    """Where one forward's tokens go: the real tokens of its [B, width] chunk, row after row."""

    index: torch.Tensor  # [T] each token's place in the chunk flattened, row * width + slot
    rows: torch.Tensor  # [T] its row
    slots: torch.Tensor  # [T] its cache slot: its position (the row's length before it, plus its place among the row's new tokens)
    batch: int  # B
    end: int  # slots the forward's keys and values span: the longest row after it


class SlotLayer(DynamicLayer):
    """A `DynamicLayer` whose `keys` and `values` are [B, H, end, D] views of zero-initialised buffers with room
    to write in place. What replaces them (selected rows, admitted rows) is `store`d over the start of the same
    buffers when it fits, so the room stays: a new buffer is allocated, and the cache copied into it, only when
    it outgrows the old one (at batch 32, reallocating after every row that left cost ~10 ms a round)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.buffers: dict[str, torch.Tensor] = {}  # "keys" / "values" -> [B, H, room, D]

    def write(self, key_states: torch.Tensor, value_states: torch.Tensor, writes: Writes):
        """This forward's keys and values, packed [1, H, T, D] or padded [B, H, width, D], each real token into
        its row's slot; returns the layer's keys and values over the slots the forward spans."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys = self._write("keys", self.keys, key_states, writes)
        self.values = self._write("values", self.values, value_states, writes)
        return self.keys, self.values

    def _write(self, name: str, held: torch.Tensor, new: torch.Tensor, writes: Writes) -> torch.Tensor:
        heads, dim = new.shape[1], new.shape[3]
        if packing.current() is not None:
            tokens = new[0].transpose(0, 1)  # [T, H, D]
        else:
            tokens = new.transpose(1, 2).reshape(-1, heads, dim).index_select(0, writes.index)
        buffer = self.buffers.get(name)
        if not (_is_view_of(held, buffer) and writes.batch <= buffer.shape[0] and writes.end <= buffer.shape[2]):
            room = max(GROWTH * writes.end, writes.end + MIN_ROOM)
            buffer = new.new_zeros(writes.batch, heads, room, dim)
            if held.dim() == 4:
                buffer[: held.shape[0], :, : held.shape[2]] = held
            self.buffers[name] = buffer
        buffer.transpose(1, 2)[writes.rows, writes.slots] = tokens
        return buffer[: writes.batch, :, : writes.end]

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Hold rows `rows` of this layer as its rows 0..n-1, in place: only a row whose index changes is copied
        (a copy of the whole cache per leaving row was ~6 ms a round at batch 16 when drafting scattered the
        rounds rows finish in)."""
        moved = (rows != torch.arange(len(rows), device=rows.device)).nonzero().squeeze(-1)
        for name in ("keys", "values"):
            held = getattr(self, name)
            if len(moved):
                held[moved] = held[rows[moved]]  # the right side is gathered before anything is written
            setattr(self, name, held[: len(rows)])

    def store(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Hold `keys` and `values` [n, H, S, D], new tensors that replace the cache's: written over the start
        of this layer's buffers when they fit there, else held as they are (the next write makes room)."""
        for name, tensor in (("keys", keys), ("values", values)):
            buffer = self.buffers.get(name)
            if buffer is not None and tensor.shape[0] <= buffer.shape[0] and tensor.shape[2] <= buffer.shape[2] \
                    and (tensor.shape[1], tensor.shape[3], tensor.dtype) == (buffer.shape[1], buffer.shape[3], buffer.dtype):
                view = buffer[: tensor.shape[0], :, : tensor.shape[2]]
                view.copy_(tensor)
                tensor = view
            setattr(self, name, tensor)


def _is_view_of(held: torch.Tensor, buffer: torch.Tensor | None) -> bool:
    """Whether `held` is a leading [:n, :, :S] view of `buffer` (so a write may go to it in place)."""
    return (buffer is not None and held.dim() == 4 and held.data_ptr() == buffer.data_ptr()
            and held.stride() == buffer.stride() and held.shape[1] == buffer.shape[1])


class SlotKV(DynamicCache):
    """transformers' cache interface over `SlotLayer`s: each layer writes the forward's tokens where `writes`
    (set by `SlotCache.extend` before the forward) puts them."""

    def __init__(self):
        super().__init__()
        self.layer_class_to_replicate = SlotLayer
        self.writes: Writes | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        while len(self.layers) <= layer_idx:
            self.layers.append(self.layer_class_to_replicate())
        return self.layers[layer_idx].write(key_states, value_states, self.writes)


class SlotCache:
    def __init__(self, batch_size: int, dtype: torch.dtype, device: torch.device):
        self.kv = SlotKV()
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # [B] tokens each row holds: its next position
        self.dtype = dtype

    @classmethod
    def for_model(cls, model, batch_size: int) -> "SlotCache":
        """An empty cache in `model`'s own dtype and on its device (each model runs in its own precision)."""
        param = next(model.parameters())
        return cls(batch_size, param.dtype, param.device)

    def extend(self, chunk_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reserve slots for a [B, width] chunk (its real tokens right-aligned, holes on the left) and return its
        [B, 1, width, end] additive mask and [B, width] position ids.

        A token sees the slots of its own row up to its own position: the row's cached tokens and its new ones up
        to itself. Holes see slot 0 only, which keeps their (discarded) attention finite.
        """
        batch, width = chunk_valid.shape
        positions = (self.lengths[:, None] + chunk_valid.cumsum(-1) - 1).clamp_min(0)
        lengths = self.lengths + chunk_valid.sum(-1)
        end = int(lengths.max()) if batch else 0
        index = chunk_valid.flatten().nonzero().squeeze(-1)
        self.kv.writes = Writes(index, index // width, positions.flatten()[index], batch, end)
        self.lengths = lengths
        slots = torch.arange(end, device=chunk_valid.device)
        visible = torch.where(chunk_valid[:, :, None], slots <= positions[:, :, None], slots == 0)  # [B, width, end]
        mask = torch.zeros(visible.shape, dtype=self.dtype, device=visible.device)
        mask.masked_fill_(~visible, torch.finfo(self.dtype).min)
        return mask[:, None], positions

    def truncate(self, lengths: torch.Tensor) -> None:
        """Keep only the first `lengths[b]` tokens of each row (its rejected drafts are written over later).
        `lengths` may live on the CPU, where the engine keeps its bookkeeping, while the cache is on the model's device."""
        self.lengths = torch.minimum(self.lengths, lengths.to(self.lengths.device))

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only these rows, in this order (finished sequences leave the batch)."""
        rows = rows.to(self.lengths.device)
        self.lengths = self.lengths[rows]
        for layer in self.kv.layers:
            if layer.is_initialized:
                layer.keep_rows(rows)

    def append_rows(self, other: "SlotCache") -> None:
        """Take `other`'s rows after this cache's (sequences admitted mid-batch, prefilled on their own); the
        narrower of the two spans is padded on the right with zeros. A cache whose model never ran (a 1-token
        prompt has nothing to prefill) contributes empty rows."""
        if len(self.lengths) == 0:
            self.kv, self.lengths = other.kv, other.lengths
            return
        kv = self.kv if self.kv.layers else other.kv
        for i, layer in enumerate(kv.layers):
            joined = []
            for name in ("keys", "values"):
                like = getattr(layer, name)
                parts = [
                    getattr(cache.kv.layers[i], name) if cache.kv.layers else like.new_zeros(len(cache.lengths), like.shape[1], 0, like.shape[3])
                    for cache in (self, other)
                ]
                span = max(part.shape[2] for part in parts)
                joined.append(torch.cat([torch.nn.functional.pad(part, (0, 0, 0, span - part.shape[2])) for part in parts]))
            layer.store(*joined)
        self.kv = kv
        self.lengths = torch.cat([self.lengths, other.lengths])
