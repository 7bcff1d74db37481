"""`static:K`: always draft K tokens (Leviathan et al.); the baseline every engine ships."""

from specray.policies.base import StopPolicy


class StaticPolicy(StopPolicy):
    cost_aware = False  # the fixed-K reference point; adaptive policies are measured against it

    def __init__(self, k: int = 4):
        super().__init__(k_max=k)
        self.name = f"static:{k}"
