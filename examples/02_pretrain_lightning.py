"""Pretrain a megfm model with Lightning options, then resume the same run for more steps.

What it shows
-------------
1. ``megfm.pretrain`` runs on Lightning: ``devices``, ``accelerator``, ``precision``
   (``"bf16-mixed"`` on GPUs), ``accumulate`` (gradient accumulation), ``strategy``
   (``"ddp"`` for several GPUs or nodes) are passed straight to the ``Trainer``.
2. A run folder holds ``run.json``, ``checkpoints/last.ckpt``, ``logs/`` (CSV) and the
   exported ``model/``. ``resume=True`` with a larger ``max_steps`` continues the same run:
   optimiser, schedule, step counter and mask seeds carry on where they stopped.
3. ``megfm.training.load_metrics`` joins the logs of both pieces; the loss curve is saved
   as a PNG, with the resume point marked.
4. ``megfm.load_pretrained`` loads the exported model (``model.safetensors``, no pickle).

Run
---
    python examples/02_pretrain_lightning.py --quick --out /tmp/ex02
    python examples/02_pretrain_lightning.py --devices 2 --precision bf16-mixed   # 2 GPUs

Writes ``cohort/``, ``store/``, ``pretrain_lightning/`` (the run) and ``loss_curve.png``
in ``--out`` (default: a new temporary folder). The cohort and store are shared with
examples 03-05 when they are given the same ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write PNGs, no window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick_data import default_out, get_quick_data  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny cohort and 10 + 10 steps, for a fast check")
    parser.add_argument("--out", default=None,
                        help="output folder (default: a new temporary folder)")
    parser.add_argument("--devices", default="1",
                        help="Lightning devices: a count, 'auto' or a list such as '0,1' "
                        "(default 1)")
    parser.add_argument("--accelerator", default="auto",
                        help="Lightning accelerator: auto, cpu, gpu (default auto)")
    parser.add_argument("--precision", default=None,
                        help="Lightning precision, e.g. 32-true or bf16-mixed (default: "
                        "bf16-mixed on a GPU, 32-true on CPU)")
    parser.add_argument("--accumulate", type=int, default=2,
                        help="batches per optimiser step (gradient accumulation, default 2)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else default_out("02")

    import torch

    import megfm
    from megfm.training import load_metrics

    data = get_quick_data(out, quick=args.quick, pretrain_model=False)
    sizes = data["sizes"]
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    precision = args.precision or ("bf16-mixed" if torch.cuda.is_available() else "32-true")
    first, total = (10, 20) if args.quick else (200, 400)

    # --- 1. a first piece of the run ------------------------------------------------------
    # batch_size is per device and per forward pass: one optimiser step sees
    # batch_size * accumulate * n_devices windows.
    run = out / "pretrain_lightning"
    common = {"model": sizes["preset"], "batch_size": sizes["batch_size"],
              "devices": devices, "accelerator": args.accelerator, "precision": precision,
              "accumulate": args.accumulate, "log_every_n_steps": 1 if args.quick else 10,
              "checkpoint_every": first // 2, "seed": 0, "progress": not args.quick,
              "verbose": False}
    megfm.pretrain(data["store"], run, max_steps=first, overwrite=True, **common)
    print(f"pretrained {first} steps ({precision}, devices={devices}, "
          f"accumulate={args.accumulate}) -> {run}")

    # --- 2. resume the same run up to `total` steps ------------------------------------------
    # Same folder, resume=True: the model config comes from run.json, the optimiser state
    # and step counter from checkpoints/last.ckpt.
    megfm.pretrain(data["store"], run, max_steps=total, resume=True, **common)
    print(f"resumed to {total} steps")

    # --- 3. the loss curve of both pieces -------------------------------------------------------
    metrics = load_metrics(run)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, style in (("train/loss_step", "-o"), ("val/loss", "s")):
        if key in metrics:
            ok = np.isfinite(metrics[key])
            if ok.any():
                ax.plot(metrics["step"][ok], metrics[key][ok], style, ms=3, label=key)
    ax.axvline(first, color="grey", ls="--", lw=1, label="resume")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("masked reconstruction loss")
    ax.set_title("Pretraining, resumed once")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png", dpi=100)
    plt.close(fig)

    # --- 4. the exported model --------------------------------------------------------------------
    model = megfm.load_pretrained(run / "model")
    n_params = sum(p.numel() for p in model.parameters())
    train = metrics.get("train/loss_step", np.array([np.nan]))
    train = train[np.isfinite(train)]
    print(f"model: {n_params} parameters, config dim={model.config.dim}, "
          f"sfreq={model.config.sfreq:g} Hz")
    if train.size:
        print(f"train loss: first {train[0]:.3f} -> last {train[-1]:.3f} "
              f"over {int(np.nanmax(metrics['step'])) + 1} logged steps")
    print(f"figure: {out / 'loss_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
