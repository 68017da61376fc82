"""``megfm pretrain STORE --out DIR``: masked-signal pretraining on a store."""

from __future__ import annotations

import argparse
import dataclasses
import json

from ._choices import registry


def _states(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--set``: VALUE read as JSON (numbers, true/false, null), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE (a ModelConfig field), e.g. band_power_weight=0.3; got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``pretrain`` subcommand."""
    p = subparsers.add_parser(
        "pretrain", help="pretrain a masked-signal model on a store",
        description="Pretrain a megfm masked-signal-reconstruction model on a store written by "
        "`megfm prepare`. Writes OUT/run.json, OUT/checkpoints (last.ckpt, best-*.ckpt), "
        "OUT/logs (CSV) and the exported model in OUT/model.",
    )
    p.add_argument("store", help="store folder written by `megfm prepare`")
    p.add_argument("--out", required=True, help="run folder (created; never overwritten "
                   "without --resume or --overwrite)")
    p.add_argument("--preset", default="tiny", choices=registry("megfm.models.config", "PRESETS"),
                   metavar="PRESET", help="model preset, one of %(choices)s (tiny for tests, "
                   "small on a CPU, base on a GPU; default tiny)")
    p.add_argument("--set", dest="settings", type=_setting, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override one megfm.ModelConfig field of the preset, e.g. "
                   "--set band_power_weight=0.3 (repeatable; VALUE is read as JSON)")
    p.add_argument("--max-steps", type=int, default=1000,
                   help="total optimiser steps, including those before a resume (default 1000)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per device and step (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default 1e-3)")
    p.add_argument("--mask-mode", default=None, choices=registry("megfm.masking", "MASK_MODES"),
                   metavar="MODE", help="masking mode, one of %(choices)s; default: the model's")
    p.add_argument("--mask-ratio", type=float, default=None,
                   help="fraction of sensor-patches hidden; default: the model's")
    p.add_argument("--devices", default="1",
                   help="number of devices (GPUs or CPU processes), or 'auto' (default 1)")
    p.add_argument("--num-nodes", type=int, default=1,
                   help="number of machines, --devices processes on each (default 1)")
    p.add_argument("--accelerator", default="auto",
                   help="cpu, gpu, cuda, mps or auto (default auto)")
    p.add_argument("--strategy", default="auto",
                   help="Lightning strategy, e.g. ddp for several processes (default auto)")
    p.add_argument("--precision", default="auto",
                   help="numeric precision: auto (bf16-mixed on CUDA, 32-true elsewhere), "
                   "32-true, bf16-mixed, 16-mixed (default auto)")
    p.add_argument("--accumulate", type=int, default=1,
                   help="gradient accumulation: batches per optimiser step (default 1)")
    p.add_argument("--num-workers", type=int, default=0,
                   help="data-loading worker processes per device (default 0)")
    p.add_argument("--states", type=_states, default=None,
                   help="comma-separated states to train on, e.g. rest,auditory (default all)")
    p.add_argument("--subjects", type=_states, default=None,
                   help="comma-separated subjects to pretrain on (default all), e.g. to hold "
                   "others out for evaluation")
    p.add_argument("--balance-states", action="store_true",
                   help="sample the states equally often")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="fraction of subjects held out for validation (default 0.2)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="save last.ckpt every N steps (default max-steps / 10)")
    p.add_argument("--checkpoint-minutes", type=float, default=None,
                   help="also save last.ckpt at the first step MINUTES after the previous save "
                   "(default: by step only)")
    p.add_argument("--keep-checkpoints", type=int, default=3, metavar="K",
                   help="training checkpoints kept: last.ckpt and the K-1 before it (default 3)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint that loads "
                   "(last.ckpt, else an older one)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an existing run in --out and start again")
    p.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``megfm pretrain``."""
    from ..models import ModelConfig
    from ..training import pretrain

    devices = args.devices if args.devices == "auto" else int(args.devices)
    settings = dict(args.settings)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"--set: unknown ModelConfig field(s) {unknown}; the fields are "
                         f"{', '.join(sorted(known))}.")
    model = ModelConfig.preset(args.preset, **settings) if settings else args.preset
    model_dir = pretrain(
        args.store, args.out, model=model, max_steps=args.max_steps,
        batch_size=args.batch_size, lr=args.lr, mask_mode=args.mask_mode,
        mask_ratio=args.mask_ratio, devices=devices, num_nodes=args.num_nodes,
        accelerator=args.accelerator,
        strategy=args.strategy, precision=args.precision, accumulate=args.accumulate,
        num_workers=args.num_workers, states=args.states, subjects=args.subjects, balance_states=args.balance_states,
        val_fraction=args.val_fraction, checkpoint_every=args.checkpoint_every,
        checkpoint_minutes=args.checkpoint_minutes,
        keep_checkpoints=args.keep_checkpoints,
        resume=args.resume, overwrite=args.overwrite, seed=args.seed,
        progress=not args.no_progress,
    )
    print(f"Pretrained model: {model_dir}")
    print(f"Checkpoints:      {model_dir.parent / 'checkpoints'}")
    print(f"Logs:             {model_dir.parent / 'logs'}")
    return 0
