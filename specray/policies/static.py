"""`static:K`: always draft K tokens (Leviathan et al.); the baseline every engine ships."""

from specray.policies.base import StopPolicy
from specray.policies.kinds import PolicyKind, lookahead, register


class StaticPolicy(StopPolicy):
    cost_aware = False  # the fixed-K reference point; adaptive policies are measured against it

    def __init__(self, k: int = 4):
        super().__init__(k_max=k)
        self.name = f"static:{k}"


KIND = register(PolicyKind("static", (lookahead("k", 4),), build=lambda knobs, references: StaticPolicy(**knobs), main="k", k_knob="k"))
