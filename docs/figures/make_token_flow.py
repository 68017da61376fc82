"""Draw docs/figures/token_flow.png: how a window flows through MaskedSignalModel.

Run: ``python docs/figures/make_token_flow.py`` (matplotlib only; deterministic).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

OUT = Path(__file__).with_name("token_flow.png")
S, P, K = 8, 6, 3  # sensors, time patches, latents drawn


def grid(ax, x0, y0, rows, cols, colors, cell=0.32, label=None):
    for r in range(rows):
        for c in range(cols):
            ax.add_patch(Rectangle((x0 + c * cell, y0 + (rows - 1 - r) * cell), cell * 0.92,
                                   cell * 0.92, color=colors[r][c], lw=0))
    if label:
        ax.text(x0 + cols * cell / 2, y0 - 0.25, label, ha="center", va="top", fontsize=9)


def arrow(ax, a, b, text=None, dy=0.15):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, color="0.3"))
    if text:
        ax.text((a[0] + b[0]) / 2, max(a[1], b[1]) + dy, text, ha="center", fontsize=8,
                color="0.2")


def main() -> None:
    rng = np.random.default_rng(0)
    hidden = rng.random((S, P)) < 0.5
    hidden[:, 3] = True  # a whole time block hidden
    blue, grey, orange, green = "#4C72B0", "#DDDDDD", "#DD8452", "#55A868"
    fig, ax = plt.subplots(figsize=(13, 4.2))
    ax.set_xlim(0, 17.5)
    ax.set_ylim(-1.2, 3.6)
    ax.axis("off")
    # 1. sensor-patch tokens and mask
    grid(ax, 0.2, 0.4, S, P, [[grey if h else blue for h in row] for row in hidden],
         label="sensor-patches (S x P)\nblue visible, grey hidden")
    # 2. visible tokens per time patch (dropped hidden ones, padded)
    n_vis = (~hidden).sum(0)
    x0 = 3.4
    for p in range(P):
        for j in range(n_vis.max()):
            color = blue if j < n_vis[p] else "white"
            ax.add_patch(Rectangle((x0 + p * 0.32, 0.4 + (S - 1 - j) * 0.32), 0.29, 0.29,
                                   color=color, ec="0.8", lw=0.4))
    ax.text(x0 + P * 0.16, 0.15, "visible tokens only\n+ geometry embedding\n(key padding)",
            ha="center", va="top", fontsize=9)
    arrow(ax, (2.3, 1.7), (3.3, 1.7), "drop hidden")
    # 3. latents per time patch
    x1 = 6.8
    lat = [["#F3C9A8" if n_vis[p] == 0 else orange for p in range(P)] for _ in range(K)]
    grid(ax, x1, 1.2, K, P, lat, label="K latents per time patch\n(cross-attention, cost O(S))")
    empty = int(np.argmin(n_vis))
    ax.text(x1 + (empty + 0.5) * 0.32, 2.3, "learned 'empty'\nlatents", ha="center",
            fontsize=7, color="0.3")
    arrow(ax, (5.4, 1.7), (6.7, 1.7), "K queries attend\nover sensors", dy=0.35)
    # 4. temporal transformer
    x2 = 10.0
    grid(ax, x2, 1.2, K, P, [[green] * P for _ in range(K)],
         label="transformer over\nP x K latent tokens")
    arrow(ax, (8.8, 1.7), (9.9, 1.7), "self-attention")
    # 5. decoder
    x3 = 13.6
    colors = [[orange if h else "white" for h in row] for row in hidden]
    grid(ax, x3, 0.4, S, P, colors,
         label="hidden sensor-patches predicted\n(query = geometry + time)")
    arrow(ax, (12.1, 1.7), (13.5, 1.7), "light decoder", dy=0.15)
    ax.text(8.7, 3.4, "MaskedSignalModel: x (B, S, T) -> patches (B, S, P, L) -> latents "
            "(B, P, K, D) -> pred (B, S, P, L); loss on hidden patches only",
            ha="center", fontsize=10)
    fig.tight_layout()
    tmp = OUT.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(OUT)


if __name__ == "__main__":
    main()
