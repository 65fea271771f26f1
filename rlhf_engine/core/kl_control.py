"""The KL coefficient β of a run: fixed, or adapted towards a target KL (Ziegler et al. 2019).

Every trainer holds one (``PolicyTrainer.kl_ctl``), reads β from it and saves it in its checkpoints; PPO's
``adaptive_kl`` makes it adaptive.
"""

from __future__ import annotations


class FixedKLController:
    """beta stays as set."""

    def __init__(self, beta: float):
        self.value = beta

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Ziegler et al. 2019: e = clip(KL / target - 1, -0.2, 0.2); beta <- beta * (1 + e * n_steps / horizon)."""

    def __init__(self, beta: float, target: float, horizon: int):
        self.value = beta
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
