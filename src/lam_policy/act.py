"""Action-chunking Transformer (ACT, Zhao et al. 2023) on joint-space observations.

Tokens: one per observation key per history step (a linear projection per key plus learned
type and time embeddings) and one latent token. A Transformer encoder reads them; a decoder with
K learned queries cross-attends to the encoder's memory; a linear head gives K x A normalised
joint targets. With ``use_vae`` a small Transformer encoder over [CLS, current state, action
chunk] gives the posterior mu/logvar of a latent z during training (loss L1 + kl_weight * KL);
at inference z is the prior mean, zero. Without the VAE the latent token is a learned constant.

The default sizes (d_model 64, 2 encoder layers + 1 decoder layer, chunk 20) are the ones measured
on the sim tasks; one ``select_action`` with temporal ensembling takes about 1 ms (p50) on one CPU
thread (see ``lam_policy.bench_act``), and training runs ~1000 samples/s on one core.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lam_policy.frames import ACTION, STATE
from lam_policy.policy_base import BasePolicy, PolicyConfig, masked_l1


@dataclass
class ACTConfig(PolicyConfig):
    """ACT sizes and loss weights (the observation/chunk/ensembling fields come from PolicyConfig)."""

    d_model: int = 64
    heads: int = 4
    encoder_layers: int = 2
    # One decoder layer as ACT effectively had (its 7-layer decoder only used the first: see
    # lerobot's configuration_act.py); it is most of the inference time (K query tokens).
    decoder_layers: int = 1
    ff_dim: int = 256
    use_vae: bool = True
    latent_dim: int = 32
    vae_layers: int = 2
    kl_weight: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._positive_ints("ACTConfig", ("d_model", "heads", "encoder_layers", "decoder_layers", "ff_dim",
                                          "latent_dim", "vae_layers"))
        if self.d_model % self.heads:
            raise ValueError(f"ACTConfig.d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if not isinstance(self.use_vae, bool):
            raise ValueError(f"ACTConfig.use_vae must be true or false, got {self.use_vae!r}")
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ValueError(f"ACTConfig.kl_weight must be finite and >= 0, got {self.kl_weight!r}")


def _encoder(c: ACTConfig, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(c.d_model, c.heads, c.ff_dim, c.dropout, batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(c.d_model), enable_nested_tensor=False)


def _embedding(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * 0.02)


class ACTPolicy(BasePolicy):
    """ACT policy; see the module docstring and ``BasePolicy`` for the surface."""

    policy_type = "act"
    config_class = ACTConfig

    def _build(self) -> None:
        c, d = self.config, self.config.d_model
        keys = c.observation_keys
        self.obs_proj = nn.ModuleList(nn.Linear(self.features[k], d) for k in keys)
        self.type_embed = _embedding(len(keys), d)  # which observation key
        self.time_embed = _embedding(c.history, d)  # which history step
        self.latent_embed = _embedding(1, d)
        self.latent_proj = nn.Linear(c.latent_dim, d)
        self.encoder = _encoder(c, c.encoder_layers)
        dec_layer = nn.TransformerDecoderLayer(d, c.heads, c.ff_dim, c.dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(dec_layer, c.decoder_layers, norm=nn.LayerNorm(d))
        self.queries = _embedding(c.chunk, d)
        self.head = nn.Linear(d, self.features[ACTION])
        if c.use_vae:
            self.vae_cls = _embedding(1, d)
            self.vae_state_proj = nn.Linear(self.features[STATE], d)
            self.vae_action_proj = nn.Linear(self.features[ACTION], d)
            self.vae_pos = _embedding(c.chunk + 2, d)
            self.vae_encoder = _encoder(c, c.vae_layers)
            self.vae_out = nn.Linear(d, 2 * c.latent_dim)

    def _decode(self, obs: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """Normalised windows {key: (B, H, D)} and latent z (B, L) -> normalised chunk (B, K, A)."""
        tokens = [(self.latent_proj(z) + self.latent_embed)[:, None]]  # (B, 1, d)
        for i, key in enumerate(self.config.observation_keys):
            tokens.append(self.obs_proj[i](obs[key]) + self.type_embed[i] + self.time_embed)  # (B, H, d)
        memory = self.encoder(torch.cat(tokens, dim=1))  # (B, 1 + n_keys * H, d)
        queries = self.queries.expand(memory.shape[0], -1, -1)  # (B, K, d)
        return self.head(self.decoder(queries, memory))  # (B, K, A)

    def _chunk(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = obs[STATE].shape[0]
        z = torch.zeros(batch, self.config.latent_dim, device=obs[STATE].device)
        return self._decode(obs, z)

    def _posterior(self, state: torch.Tensor, actions: torch.Tensor, pad: torch.Tensor):
        """Current state (B, S), actions (B, K, A), pad (B, K) -> mu, logvar (B, L)."""
        batch = state.shape[0]
        tokens = torch.cat([self.vae_cls.expand(batch, -1)[:, None], self.vae_state_proj(state)[:, None],
                            self.vae_action_proj(actions)], dim=1) + self.vae_pos  # (B, K + 2, d)
        key_pad = torch.cat([torch.zeros(batch, 2, dtype=torch.bool, device=pad.device), pad], dim=1)
        cls_out = self.vae_encoder(tokens, src_key_padding_mask=key_pad)[:, 0]  # (B, d)
        mu, logvar = self.vae_out(cls_out).chunk(2, dim=-1)
        return mu, logvar

    def _loss(self, obs: dict[str, torch.Tensor], actions: torch.Tensor, pad: torch.Tensor):
        batch = actions.shape[0]
        kl = torch.zeros((), device=actions.device)
        z = torch.zeros(batch, self.config.latent_dim, device=actions.device)
        if self.config.use_vae:
            mu, logvar = self._posterior(obs[STATE][:, -1], actions, pad)
            kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(-1).mean()
            if self.training:  # evaluation decodes from the prior mean, as inference does
                z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        pred = self._decode(obs, z)
        l1 = masked_l1(pred, actions, pad)
        loss = l1 + self.config.kl_weight * kl
        return loss, {"loss": float(loss.detach()), "l1": float(l1.detach()), "kl": float(kl.detach())}
