"""Precision per role: the target and the draft each run in the dtype that is faster for their own work.

The two models do different work. The target verifies several tokens per row in one forward (wide
matrix products); the draft takes one-token steps (single-row products). On a GPU bf16 wins both. On a
CPU it depends on the shape: with bf16 matrix units (AMX) wide bf16 products are cheap, while
single-row bf16 products can be slower than fp32 — and no formula predicts where the line falls on a
given machine. So `dtype="auto"` times both dtypes on each role's own work at load, once, and keeps
the faster per role. A draft that shares weights with its target gets its own copy of them when the
two end up in different dtypes.
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
TARGET_WORK = ((1, 4), (8, 4))  # (batch, tokens per row): verifying a few drafted tokens
DRAFT_WORK = ((1, 1), (8, 1))  # one-token draft steps
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


def auto_precision(target, draft, device: str | torch.device) -> Precision:
    """bf16 for both roles on CUDA; on CPU the faster dtype per role, measured on that role's work."""
    if torch.device(device).type == "cuda":
        return Precision(torch.bfloat16, torch.bfloat16)
    timings: dict = {}
    start = time.perf_counter()
    precision = Precision(choose("target", target, TARGET_WORK, timings), choose("draft", draft, DRAFT_WORK, timings), timings)
    log.info("dtype auto: target %s, draft %s (calibrated in %.1f s: %s)", dtype_name(precision.target),
             dtype_name(precision.draft), time.perf_counter() - start, timings)
    return precision
