"""Behaviour-cloning baseline: an MLP from the flattened observation history to a K-step chunk.

Same observations, normalisation, chunking, temporal ensembling and checkpoint format as ACT
(policy type ``mlp``); set ``chunk=1`` for plain single-step behaviour cloning.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lam_policy.frames import ACTION
from lam_policy.policy_base import BasePolicy, PolicyConfig, masked_l1


@dataclass
class MLPConfig(PolicyConfig):
    """Hidden layer widths of the MLP (the other fields come from PolicyConfig)."""

    hidden_dims: tuple[int, ...] = (256, 256)

    def __post_init__(self) -> None:
        super().__post_init__()
        dims = self.hidden_dims
        if isinstance(dims, (str, int)) or not dims or not all(isinstance(h, int) and not isinstance(h, bool)
                                                               and h >= 1 for h in dims):
            raise ValueError(f"MLPConfig.hidden_dims must be a non-empty list of integers >= 1, got {dims!r}")
        self.hidden_dims = tuple(dims)


class MLPPolicy(BasePolicy):
    """MLP policy; see the module docstring and ``BasePolicy`` for the surface."""

    policy_type = "mlp"
    config_class = MLPConfig

    def _build(self) -> None:
        c = self.config
        width = c.history * sum(self.features[k] for k in c.observation_keys)
        layers: list[nn.Module] = []
        for hidden in c.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(c.dropout)]
            width = hidden
        layers.append(nn.Linear(width, c.chunk * self.features[ACTION]))
        self.net = nn.Sequential(*layers)

    def _chunk(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([obs[k].flatten(1) for k in self.config.observation_keys], dim=1)  # (B, H * sum D)
        return self.net(x).view(x.shape[0], self.config.chunk, self.features[ACTION])  # (B, K, A)

    def _loss(self, obs: dict[str, torch.Tensor], actions: torch.Tensor, pad: torch.Tensor):
        pred = self._chunk(obs)
        l1 = masked_l1(pred, actions, pad)
        return l1, {"loss": float(l1.detach()), "l1": float(l1.detach())}
