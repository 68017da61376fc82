"""Directions on the helmet that tie each latent query to a region (``latent_anchor_kappa``).

Sensor directions are taken from the centre of the window's valid sensors, and compared with
``K`` fixed unit vectors spread evenly over the part of the sphere a helmet covers (a
Fibonacci lattice on the cap ``z >= -0.3``: MNE head coordinates, z up). The logit bias
``kappa * (cos - 1)`` is 0 at the anchor and ``-2 kappa`` opposite it: a von Mises-Fisher
weighting of the sensors, so latent ``k`` pools the sensors around direction ``k`` unless the
data pull it elsewhere.
"""

from __future__ import annotations

import math

import torch

__all__ = ["anchor_bias", "helmet_directions"]


def helmet_directions(n: int, *, z_min: float = -0.3) -> torch.Tensor:
    """``n`` unit vectors spread evenly over the spherical cap ``z >= z_min``, shape (n, 3)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - (1.0 - z_min) * i / n  # equal-area steps in z
    golden = math.pi * (3.0 - math.sqrt(5.0))
    r = torch.sqrt(torch.clamp(1.0 - z * z, min=0.0))
    phi = golden * i
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=1).float()


def anchor_bias(pos: torch.Tensor, valid: torch.Tensor, anchors: torch.Tensor,
                kappa: float) -> torch.Tensor:
    """Logit bias of each (sensor, anchor) pair, shape (B, S, K).

    Parameters
    ----------
    pos : Tensor, shape (B, S, 3)
        Sensor positions (metres, head coordinates).
    valid : Tensor of bool, shape (B, S)
        Sensors that take part; the centre is the mean of these.
    anchors : Tensor, shape (K, 3)
        Unit vectors (:func:`helmet_directions`).
    kappa : float
        Concentration: the bias is ``kappa * (cos - 1)``.
    """
    w = valid.to(pos.dtype)[..., None]
    centre = (pos * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1.0)
    directions = torch.nn.functional.normalize(pos - centre, dim=-1)
    return kappa * (directions @ anchors.to(pos.dtype).T - 1.0)
