"""Training-step time with the packed decoder vs the padded decoder it replaced, side by side.

``MaskedSignalModel.forward_decoder`` runs its norms, MLP and read-outs on the hidden
sensor-patches only (packed). The decoder before it gathered, for every time patch of the
batch, a grid as wide as the most hidden sensors of any time patch, so a single window under
"time" masking (a whole time patch hidden) padded every row of the batch to all sensors.
The padded decoder is kept here, as the baseline, built from the same modules and weights;
both give the same predictions (checked on every case), so only the time differs.

One step = forward + backward + AdamW on a batch of the synthetic Vectorview-like array of
``bench_pretrain.py``; the two decoders alternate step by step so machine load hits both alike.

Usage::

    python benchmarks/bench_decoder.py           # small preset, pretraining and 4 s batches
    python benchmarks/bench_decoder.py --quick   # tiny preset, seconds
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_json
from bench_pretrain import _synthetic_batch

from megfm import MaskedSignalModel, ModelConfig
from megfm.models.layers import sinusoidal_positions

HERE = Path(__file__).resolve().parent


def _visible_first(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices along the last axis putting True first, cut to the largest count; and the flags."""
    m = max(int(flags.sum(-1).max()), 1) if flags.numel() else 1
    order = torch.argsort((~flags).to(torch.uint8), dim=-1, stable=True)[..., :m]
    return order, torch.gather(flags, -1, order)


def _gather_rows(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``values (B, S, C)`` per time patch at ``order (B, P, M)`` -> ``(B, P, M, C)``."""
    b, p, m = order.shape
    s, c = values.shape[1], values.shape[-1]
    return torch.gather(values[:, None].expand(b, p, s, c), 2, order[..., None].expand(b, p, m, c))


def padded_decoder(model, latents, geometry, hidden, *, return_spectrum=False):
    """The decoder before packing: every time patch padded to its batch's most hidden sensors."""
    b, p, k, _ = latents.shape
    s = geometry.shape[1]
    length, ddim = model.config.patch_samples, model.config.decoder_dim
    order, keep = _visible_first(hidden.transpose(1, 2))  # (B, P, M): hidden sensors first
    m = order.shape[-1]
    time_emb = sinusoidal_positions(p, ddim, device=latents.device, dtype=latents.dtype)
    q = _gather_rows(model.decoder_geometry(geometry), order) + model.mask_token
    q = (q + time_emb[None, :, None]).reshape(b * p, m, ddim)
    memory = model.decoder_embed(latents).reshape(b * p, k, ddim)
    for blk in model.decoder_blocks:
        q, _ = blk(q, memory)
    q = model.decoder_norm(q)
    if model.decoder_gain is not None:
        q = q * (1.0 + _gather_rows(model.decoder_gain(geometry), order)).reshape(b * p, m, ddim)
    out = model.decoder_pred(q).reshape(b, p, m, length)
    if model.leadfield is not None:
        gains = _gather_rows(model.leadfield(geometry), order)
        sources = model.source_readout(latents).reshape(b, p, -1, length)
        out = out + torch.einsum("bpmk,bpkl->bpml", gains, sources.to(gains.dtype))

    def scatter(values):
        f = values.shape[-1]
        values = values * keep[..., None].to(values.dtype)
        full = values.new_zeros(b, p, s, f).scatter(2, order[..., None].expand(b, p, m, f), values)
        return full.transpose(1, 2)

    pred = scatter(out)
    if not return_spectrum:
        return pred
    return pred, scatter(model.decoder_spectrum(q).reshape(b, p, m, -1))


def run_case(preset: str, n_sensors: int, n_times: int, batch_size: int, mode: str,
             steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    config = ModelConfig.preset(preset)
    models = {"packed": MaskedSignalModel(config), "padded": MaskedSignalModel(config)}
    models["padded"].load_state_dict(models["packed"].state_dict())
    models["padded"].forward_decoder = padded_decoder.__get__(models["padded"])
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    batch = _synthetic_batch(torch, n_sensors, n_times, batch_size)
    gens = {k: torch.Generator().manual_seed(1) for k in models}
    times: dict[str, list[float]] = {k: [] for k in models}
    losses: dict[str, list[float]] = {k: [] for k in models}
    for step in range(warmup + steps):
        for name, model in models.items():  # alternate, so load drift hits both
            t0 = time.perf_counter()
            loss = model(**batch, generator=gens[name], mask_mode=mode)["loss"]
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            if step >= warmup:
                times[name].append(time.perf_counter() - t0)
            losses[name].append(float(loss.detach()))
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    return {
        "preset": preset, "sensors": n_sensors, "samples": n_times, "batch": batch_size,
        "masking": mode, "packed_ms": round(ms["packed"], 1), "padded_ms": round(ms["padded"], 1),
        "speedup": round(ms["padded"] / ms["packed"], 2),
        "max_loss_diff": float(np.max(np.abs(np.subtract(losses["packed"], losses["padded"])))),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny preset, few steps (seconds)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per decoder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON path (default results/decoder[_quick].json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        preset, steps, warmup = "tiny", args.steps or 3, 1
        cases = [(102, 200, 8, "mixed"), (102, 200, 8, "random")]
    else:
        preset, steps, warmup = "small", args.steps or 10, 2
        # the pretraining batches of bench_targets.py (1 s windows, batch 32) and the 4 s
        # windows of bench_pretrain.py / bench_peers.py
        cases = [(306, 200, 32, "mixed"), (306, 200, 32, "random"), (306, 800, 4, "mixed")]
    rows = []
    print(f"{'preset':<7}{'sensors':>8}{'samples':>8}{'batch':>6}  {'masking':<8}"
          f"{'packed ms':>10}{'padded ms':>10}{'speed-up':>9}{'max |dloss|':>12}")
    for n_sensors, n_times, batch_size, mode in cases:
        row = run_case(preset, n_sensors, n_times, batch_size, mode, steps, warmup)
        rows.append(row)
        print(f"{preset:<7}{n_sensors:>8}{n_times:>8}{batch_size:>6}  {mode:<8}"
              f"{row['packed_ms']:>10.1f}{row['padded_ms']:>10.1f}{row['speedup']:>8.2f}x"
              f"{row['max_loss_diff']:>12.2e}", flush=True)
        if row["max_loss_diff"] > 1e-4:
            print("  the two decoders disagree: the baseline no longer matches the model",
                  file=sys.stderr)
            return 1
    out = Path(args.out) if args.out else HERE / "results" / (
        "decoder_quick.json" if args.quick else "decoder.json")
    write_json(out, {"device": platform.processor() or platform.machine(),
                     "torch_threads": args.threads, "steps": steps, "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
