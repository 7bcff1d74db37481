"""Precision per role: the target and the draft each run in the dtype that is faster for their own work.

The two models do different work. The target verifies a few tokens per row in one forward, at the
batch size the run decodes at; the draft takes one-token steps. On a GPU bf16 wins both. On a CPU it
depends on the shape: with bf16 matrix units (AMX) wide bf16 products are cheap, while narrow bf16
products can be slower than fp32 — and no formula predicts where the line falls on a given machine.
So `dtype="auto"` times both dtypes on each role's own work at the run's batch size, once at load, and
keeps the faster per role. The batch size matters: on a Sapphire Rapids Xeon (AMX-BF16, 2 threads),
over a 128-token cache, the embedded target took 36 / 39 ms in float32 against 43 / 41 in bf16 at
batch 1 (one token a row / three), and 54 / 76 against 43 / 44 at batch 4; its feature-level draft's
step 1.9 against 2.3 ms at batch 1, 3.6 against 2.9 at batch 8. A draft that shares weights with its
target gets its own copy of them when the two end up in different dtypes.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

AUTO = "auto"
CANDIDATES = (torch.float32, torch.bfloat16)  # what `auto` chooses between on a CPU
LOW_PRECISION_MARGIN = 0.9  # bf16 is chosen only when at least 10% faster than float32


@dataclass
class Precision:
    """The dtype each role runs in, and the timings (ms per forward) the choice rests on."""

    target: torch.dtype
    draft: torch.dtype
    timings_ms: dict = field(default_factory=dict)  # {"target": {"float32": ms, ...}, "draft": {...}}

    def describe(self) -> dict:
        return {"target": dtype_name(self.target), "draft": dtype_name(self.draft), "timings_ms": self.timings_ms}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_dtype_runs(dtype: torch.dtype, device: str | torch.device) -> None:
    """Refuse a dtype the device cannot compute in, naming both (a tiny product and softmax as the trial)."""
    try:
        x = torch.ones(4, 8, dtype=dtype, device=device)
        (x @ x.T).softmax(-1).float().sum().item()
    except (RuntimeError, TypeError, AssertionError) as error:  # a CPU-only build asserts on cuda
        raise ValueError(f"dtype {dtype_name(dtype)} cannot run on device {device}: {error}") from None


def target_work(batch: int) -> tuple[tuple[int, int], ...]:
    """(batch, tokens per row) of the target's typical forwards: a plain round and one verifying two drafted tokens."""
    return (batch, 1), (batch, 3)


def draft_work(batch: int) -> tuple[tuple[int, int], ...]:
    """A one-token draft step."""
    return ((batch, 1),)


def work_ms(model, work) -> float:
    """Summed forward time over a role's typical shapes."""
    from specray.engine.calibration import forward_ms  # the engine's own forward path, timed

    return sum(forward_ms(model, batch, (width,))[width] for batch, width in work)


def choose(role: str, model, work, timings: dict) -> torch.dtype:
    """Time `model` in each candidate dtype (copies for the ones it is not in); the faster wins."""
    own = next(model.parameters()).dtype
    measured = {}
    for dtype in CANDIDATES:
        candidate = model if dtype == own else copy.deepcopy(model).to(dtype)
        measured[dtype] = work_ms(candidate, work)
        del candidate
    timings[role] = {dtype_name(d): round(ms, 2) for d, ms in measured.items()}
    fastest = min(measured, key=measured.get)
    # low precision trades exactness for speed (greedy may split at numerical ties), so it must clearly pay
    return fastest if measured[fastest] < LOW_PRECISION_MARGIN * measured[torch.float32] else torch.float32


def auto_precision(target, draft, device: str | torch.device, batch_size: int = 1) -> Precision:
    """bf16 for both roles on CUDA; on CPU the faster dtype per role, measured on that role's work at `batch_size`."""
    if torch.device(device).type == "cuda":
        return Precision(torch.bfloat16, torch.bfloat16)
    timings: dict = {}
    start = time.perf_counter()
    precision = Precision(choose("target", target, target_work(batch_size), timings),
                          choose("draft", draft, draft_work(batch_size), timings), timings)
    log.info("dtype auto at batch %d: target %s, draft %s (calibrated in %.1f s: %s)", batch_size,
             dtype_name(precision.target), dtype_name(precision.draft), time.perf_counter() - start, timings)
    return precision
