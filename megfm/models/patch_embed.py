"""Patch embedding: each visible sensor-patch becomes one token of width ``token_width``.

A token is ``(W x + c_s) * g_s + e_s``, then a residual MLP:

* ``x`` the normalised patch (``L`` samples) and ``W`` the patch projection;
* ``c_s = b + w r_s``: the projection's bias plus, with ``config.scale_feature``, the
  sensor's log relative scale ``r_s`` as one more input column;
* ``g_s = 1 + G e_s``: a gain from the sensor's geometry (``config.geometry_gain``), so
  pooling over sensors can form signed spatial filters; 1 otherwise;
* ``e_s`` the sensor's geometry embedding (:class:`megfm.tokenize.GeometryEmbedding`).

Every term but ``W x`` depends on the sensor only: :func:`sensor_terms` computes them once
per sensor, and :func:`embed_patches` gathers them for the packed sensor-patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["embed_patches", "patch_log_amplitude", "sensor_terms"]


def sensor_terms(
    geometry: torch.Tensor,
    patch_embed: nn.Linear,
    *,
    log_scale: torch.Tensor | None = None,
    token_gain: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The per-sensor terms of a token: offset ``c_s * g_s + e_s`` and gain ``g_s``.

    Parameters
    ----------
    geometry : Tensor, shape (B, S, tw)
        Geometry embedding ``e_s`` of each sensor.
    patch_embed : nn.Linear
        The patch projection (``L`` inputs, ``L + 1`` when ``log_scale`` is fed).
    log_scale : Tensor, shape (B, S) | None
        Log relative scale ``r_s`` of each sensor, the projection's last input column.
    token_gain : nn.Module | None
        ``G``: geometry -> gain; no gain when None.

    Returns
    -------
    offset : Tensor, shape (B, S, tw)
    gain : Tensor, shape (B, S, tw) | None
    """
    b, s, tw = geometry.shape
    weight = patch_embed.weight
    bias = patch_embed.bias.expand(b, s, tw)
    if log_scale is not None:
        bias = bias + log_scale[..., None].to(weight.dtype) * weight[:, -1]
    if token_gain is None:
        return bias + geometry, None
    gain = 1.0 + token_gain(geometry)
    offset = bias * gain + geometry
    return offset, gain.to(offset.dtype)


def embed_patches(
    patches: torch.Tensor,
    offset: torch.Tensor,
    gain: torch.Tensor | None,
    patch_embed: nn.Linear,
    *,
    token_norm: nn.Module | None = None,
    token_mlp: nn.Module | None = None,
) -> torch.Tensor:
    """Tokens ``(N, tw)`` of packed sensor-patches.

    Parameters
    ----------
    patches : Tensor, shape (N, L)
        Normalised sensor-patches.
    offset, gain : Tensor, shape (N, tw)
        :func:`sensor_terms` of each patch's sensor (``gain`` None: no gain).
    patch_embed : nn.Linear
        The patch projection ``W`` (its first ``L`` input columns are used).
    token_norm, token_mlp : nn.Module | None
        The residual token MLP ``t + mlp(norm(t))``; none when ``token_mlp`` is None.

    Returns
    -------
    tokens : Tensor, shape (N, tw)
    """
    tokens = F.linear(patches, patch_embed.weight[:, :patches.shape[-1]])
    if gain is not None:
        tokens = tokens * gain
    tokens = tokens + offset
    if token_mlp is not None:
        tokens = tokens + token_mlp(token_norm(tokens))
    return tokens


def patch_log_amplitude(patches: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Log amplitude ``(N,)`` of each sensor-patch relative to the median sensor of its type.

    The sensor's log relative scale plus the log rms of its normalised patch; the spatial
    attention adds ``beta_h`` times it to its logits (``config.scale_attention_bias``).
    """
    amp = 0.5 * torch.log(patches.float().square().mean(-1) + 1e-3)
    return log_scale + amp.to(log_scale.dtype)
