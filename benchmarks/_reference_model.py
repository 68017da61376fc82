"""Reference model for ``bench_pretrain.py``: BERT-style masked modelling of sensor-patches.

This is the LaBraM / CBraMod design reduced to its cost-defining parts: one token per
sensor-patch (``S * P`` tokens), hidden patches replaced by a learned mask token (so the
encoder processes every token), and full self-attention over all of them (cost quadratic in
``S * P``). Same width, depth, heads, tokenizer, geometry embedding and loss as the megfm
config it is built from, so the benchmark compares architectures, not hyper-parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from megfm.models import ModelConfig
from megfm.models.layers import SelfBlock, sinusoidal_positions
from megfm.tokenize import GeometryEmbedding, patchify, robust_normalize


class ReferenceBERT(nn.Module):
    """One token per sensor-patch, mask tokens, full attention over all ``S * P`` tokens."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = self.config = config
        self.geometry = GeometryEmbedding(
            c.dim, n_sensor_types=c.n_sensor_types, n_frequencies=c.n_frequencies,
            position_scale=c.position_scale,
        )
        self.patch_embed = nn.Linear(c.patch_samples, c.dim)
        self.mask_token = nn.Parameter(torch.zeros(c.dim))
        self.blocks = nn.ModuleList(
            SelfBlock(c.dim, c.n_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias)
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim)
        self.pred = nn.Linear(c.dim, c.patch_samples)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, x, pos, ori, sensor_type, sensor_mask, *, mask):
        """Masked-patch MSE loss and predictions ``(B, S, P, L)``."""
        valid = sensor_mask.to(torch.bool)
        x_norm, _ = robust_normalize(x, valid, method=self.config.norm_method)
        target = patchify(x_norm, self.config.patch_samples)  # (B, S, P, L)
        b, s, p, _ = target.shape
        tok = self.patch_embed(target)  # (B, S, P, D)
        tok = torch.where(mask[..., None], self.mask_token.to(tok.dtype), tok)
        time = sinusoidal_positions(p, self.config.dim, device=x.device, dtype=tok.dtype)
        tok = tok + self.geometry(pos, ori, sensor_type, valid)[:, :, None] + time
        z = tok.reshape(b, s * p, -1)  # (B, S * P, D): every sensor-patch is a token
        # a key mask forces the slow attention kernel: only pass one when there is padding
        key_mask = None if bool(valid.all()) else valid[:, :, None].expand(b, s, p).reshape(b, -1)
        for blk in self.blocks:
            z, _ = blk(z, key_mask=key_mask)
        pred = self.pred(self.norm(z)).reshape(b, s, p, -1)
        err = ((pred - target) ** 2).mean(-1)
        loss = (err * mask).sum() / mask.sum().clamp_min(1)
        return {"loss": loss, "pred": pred, "target": target, "mask": mask}
