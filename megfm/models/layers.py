"""Attention and transformer blocks.

:class:`Attention` has two paths that compute the same thing: the fused
:func:`torch.nn.functional.scaled_dot_product_attention` (fast, no weights) and a manual
softmax path that also returns the attention weights (for maps). ``need_weights=True``
selects the manual path, so attention maps come from the very same module and parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .packing import to_grid

__all__ = ["Attention", "CrossBlock", "Mlp", "SelfBlock", "sinusoidal_positions"]


def sinusoidal_positions(n: int, dim: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fixed sine/cosine position codes ``(n, dim)`` (any length, nothing learned)."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=device) / max(half, 1))
    angles = pos * freq[None, :]
    out = torch.zeros(n, dim, device=device)
    out[:, 0 : 2 * half : 2] = angles.sin()
    out[:, 1 : 2 * half : 2] = angles.cos()
    return out.to(dtype)


class Attention(nn.Module):
    """Multi-head attention (self- or cross-) with a fused and a weight-returning path.

    Parameters
    ----------
    dim : int
        Width of the queries and of the output.
    n_heads : int
        Number of heads; ``dim`` must be a multiple of it.
    kv_dim : int | None
        Width of keys/values input (cross-attention); ``dim`` when None.
    qkv_bias : bool
        Bias in the input projections.
    dropout : float
        Dropout on attention weights and on the output.
    token_space : bool
        Attend in the (narrow) space of the context instead of projecting every context
        token to keys and values (cross-attention over many narrow tokens, e.g. sensors).
        Exact same result: the key projection is folded into the queries
        (``q . (W_k c + b_k) = (W_k^T q) . c + const``, the constant cancels in the softmax)
        and the value projection is applied after the weighted sum
        (``sum_s a_s (W_v c_s + b_v) = W_v sum_s a_s c_s + b_v``), so the cost per context
        token is ``n_heads * n_queries * kv_dim`` instead of ``2 * dim * kv_dim``. The heads
        share the context, so they are folded into the query rows of one attention call.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        *,
        kv_dim: int | None = None,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        token_space: bool = False,
    ) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim={dim} must be a multiple of n_heads={n_heads}.")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = float(dropout)
        self.proj_drop = nn.Dropout(dropout)
        #: use the fused kernel when weights are not requested (set False to always go manual)
        self.fused = True
        #: attend in the context's own space (same result, see the class notes)
        self.token_space = bool(token_space)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        key_mask: torch.Tensor | None = None,
        key_bias: tuple[torch.Tensor, torch.Tensor] | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``x`` to ``context`` (or to ``x`` itself).

        Parameters
        ----------
        x : Tensor, shape (B, Nq, dim)
            Queries.
        context : Tensor, shape (B, Nk, kv_dim) | None
            Keys/values; ``x`` when None (self-attention).
        key_mask : Tensor of bool, shape (B, Nk) | None
            True = this key takes part. Every row must have at least one True.
        key_bias : tuple of Tensor (coef (H,), values (B, Nk)) | None
            A rank-one logit bias ``coef[h] * values[b, k]`` (the same for every query),
            added to the logits after the ``1 / sqrt(head_dim)`` scaling. It is an additive
            float mask of the attention call, so the query/key width stays the context width
            (a multiple of 8 for the presets), which the memory-efficient SDPA kernels need.
        need_weights : bool
            Return the attention weights ``(B, H, Nq, Nk)`` (manual path).

        Returns
        -------
        out : Tensor, shape (B, Nq, dim)
        weights : Tensor, shape (B, H, Nq, Nk) | None
        """
        b, nq, _ = x.shape
        ctx = x if context is None else context
        nk = ctx.shape[1]
        q = self.q(x).reshape(b, nq, self.n_heads, self.head_dim).transpose(1, 2)
        if self.token_space:
            return self._token_space(q, ctx, key_mask, key_bias, need_weights)
        bias = None
        if key_bias is not None:
            coef, values = key_bias
            bias = coef[None, :, None, None] * values[:, None, None, :]  # (B, H, 1, Nk)
        k, v = (
            self.kv(ctx).reshape(b, nk, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )  # each (B, H, Nk, hd)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, Nk)
        p_drop = self.attn_drop if self.training else 0.0
        weights = None
        if self.fused and not need_weights:
            attn_mask = mask
            if bias is not None:
                attn_mask = bias.to(q.dtype)
                if mask is not None:
                    attn_mask = attn_mask.masked_fill(~mask, float("-inf"))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p_drop)
        else:
            scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, H, Nq, Nk)
            if bias is not None:
                scores = scores + bias
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, p_drop, self.training) @ v
        out = out.transpose(1, 2).reshape(b, nq, self.n_heads * self.head_dim)
        return self.proj_drop(self.proj(out)), weights

    def _token_space(
        self,
        q: torch.Tensor,
        ctx: torch.Tensor,
        key_mask: torch.Tensor | None,
        key_bias: tuple[torch.Tensor, torch.Tensor] | None,
        need_weights: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention computed in the context's space (see the class notes); same result."""
        b, h, nq, hd = q.shape
        dim, width = h * hd, ctx.shape[-1]
        w_k = self.kv.weight[:dim].reshape(h, hd, width)
        w_v = self.kv.weight[dim:].reshape(h, hd, width)
        # keys folded into the queries; the key bias only shifts each row, so it cancels
        q_ctx = torch.einsum("bhqd,hdw->bhqw", q, w_k.to(q.dtype))  # (B, H, Nq, W)
        keys = ctx[:, None]  # (B, 1, Nk, W): one context shared by every head
        rows = q_ctx.reshape(b, 1, h * nq, width)  # heads folded into query rows
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, Nk)
        logit_bias = None
        if key_bias is not None:
            # the rank-one bias coef[h] * values[b, k] as an additive float mask over the
            # folded rows (B, 1, H * Nq, Nk), not as one more q/k coordinate: a width of W + 1
            # would rule out the memory-efficient SDPA kernels
            coef, key_values = key_bias
            row_coef = coef.to(q.dtype).repeat_interleave(nq)  # (H * Nq,), head-major rows
            logit_bias = row_coef[None, None, :, None] * key_values.to(q.dtype)[:, None, None, :]
            if mask is not None:
                logit_bias = logit_bias.masked_fill(~mask, float("-inf"))
        p_drop = self.attn_drop if self.training else 0.0
        values = keys  # (B, 1, Nk, W): values come from the same context as the keys
        # after dropout the weights no longer sum to 1: a column of ones carries their sum,
        # which scales the value bias as the weighted sum of projected values would
        with_mass = p_drop > 0 and self.kv.bias is not None
        if with_mass:
            values = torch.cat([values, values.new_ones(*values.shape[:-1], 1)], dim=-1)
        weights = None
        if self.fused and not need_weights:
            mixed = F.scaled_dot_product_attention(
                rows, keys, values, attn_mask=mask if logit_bias is None else logit_bias,
                dropout_p=p_drop, scale=self.scale,
            )  # (B, 1, H * Nq, W (+ 1))
        else:
            scores = (rows * self.scale) @ keys.transpose(-2, -1)  # (B, 1, H * Nq, Nk)
            if logit_bias is not None:
                scores = scores + logit_bias
            elif mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = scores.softmax(dim=-1)
            weights = probs.reshape(b, h, nq, -1)
            mixed = F.dropout(probs, p_drop, self.training) @ values
        mixed = mixed.reshape(b, h, nq, -1)
        # the value projection after the weighted sum; its bias times the weights' sum
        out = torch.einsum("bhqw,hdw->bqhd", mixed[..., :width], w_v.to(q.dtype))
        if self.kv.bias is not None:
            bias_v = self.kv.bias[dim:].reshape(h, hd).to(out.dtype)
            mass = mixed[..., width:].transpose(1, 2) if with_mass else 1.0  # (B, Nq, H, 1)
            out = out + mass * bias_v
        out = out.reshape(b, nq, dim)
        return self.proj_drop(self.proj(out)), weights


class Mlp(nn.Module):
    """Two-layer perceptron with GELU."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class SelfBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(
        self, dim: int, n_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_heads, qkv_bias=qkv_bias, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(
        self, x: torch.Tensor, *, key_mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, w = self.attn(self.norm1(x), key_mask=key_mask, need_weights=need_weights)
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return x, w


class CrossBlock(nn.Module):
    """Pre-norm cross-attention block: queries attend to a context, then an MLP."""

    def __init__(
        self, dim: int, n_heads: int, *, kv_dim: int | None = None, mlp_ratio: float = 4.0,
        qkv_bias: bool = True, dropout: float = 0.0, token_space: bool = False,
    ) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(kv_dim or dim)
        self.attn = Attention(dim, n_heads, kv_dim=kv_dim, qkv_bias=qkv_bias, dropout=dropout,
                              token_space=token_space)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        *,
        key_mask: torch.Tensor | None = None,
        key_bias: tuple[torch.Tensor, torch.Tensor] | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, w = self.attn(
            self.norm_q(x), self.norm_kv(context), key_mask=key_mask, key_bias=key_bias,
            need_weights=need_weights,
        )
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return x, w

    def forward_packed(
        self, x: torch.Tensor, context: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor,
        n_slots: int,
    ) -> torch.Tensor:
        """The block on packed queries, each attending to one row of ``context``.

        Only the attention needs the queries grouped by context row; the norms and the MLP
        (most of the work) run on the ``N`` real queries, not on a padded grid.

        Parameters
        ----------
        x : Tensor, shape (N, dim)
            Packed queries.
        context : Tensor, shape (R, Nk, kv_dim)
            Keys/values of every row.
        rows, slots : Tensor of int64, shape (N,)
            Row of ``context`` each query attends to, and its slot in that row (the pairs are
            unique, ``slots < n_slots``).
        n_slots : int
            Width of the padded grid of the attention (the most queries of one row).

        Returns
        -------
        x : Tensor, shape (N, dim)
        """
        # empty slots attend too; their output is dropped
        grid = to_grid(self.norm_q(x), rows, slots, context.shape[0], n_slots)
        a, _ = self.attn(grid, self.norm_kv(context))
        x = x + a[rows, slots]
        return x + self.mlp(self.norm2(x))
