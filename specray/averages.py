"""The one exponential moving average: `decay` of the past, `1 - decay` of the new value.

Policies' acceptance estimates, the cost table's live timings and the policy actors' per-batch stats
all follow drift this way; each picks its own decay. Works on floats and on tensors alike. No torch.
"""

from __future__ import annotations


def ema(old, new, decay: float):
    """The average moved toward `new`; `new` when there is no past (`old` None), the past when there is no new value."""
    if new is None:
        return old
    return new if old is None else decay * old + (1 - decay) * new
