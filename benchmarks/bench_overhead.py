"""What ``megfm pretrain`` delivers of the bare training step (windows/s), in one run.

The bare step is the model's own work as ``megfm pretrain`` sets it up: the
``PretrainModule`` forward (masks of the default mode, drawn as in training), the loss,
backward, gradient clipping at 1.0 and the fused AdamW of ``configure_optimizers``, on
batches already in memory. The pipeline is :func:`megfm.pretrain` on a store of the same
windows, with its defaults (Lightning, the store loader, logging, checkpoints, the
rank-agreed checks) except that no subject is held out for validation (validation is not
part of the step): a callback records the time at the start of every training batch.

Reported: windows/s of both, from the median step interval (steady state) and from the
whole span of the timed steps (every overhead included), and their ratio. Target (issue 18):
the pipeline delivers >= 0.95 of the bare step.

Run::

    python benchmarks/bench_overhead.py [--quick] [--threads 2] [--out ...]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import parse_args, write_json

TARGET = 0.95


def _store(path: Path, n_sensors: int, n_times: int, n_recordings: int, per_recording: int):
    """A store of 1/f-like noise windows in subjects of one recording each (train only)."""
    from megfm.data import SensorGeometry, Windows
    from megfm.data.store import write_store

    rng = np.random.default_rng(0)
    theta = np.linspace(0, 2 * np.pi, n_sensors, endpoint=False)
    pos = np.c_[0.09 * np.cos(theta), 0.09 * np.sin(theta), np.full(n_sensors, 0.05)]
    geom = SensorGeometry(names=[f"MEG{i:04d}" for i in range(n_sensors)], positions=pos,
                          orientations=pos / np.linalg.norm(pos, axis=1, keepdims=True),
                          types=np.zeros(n_sensors, int))
    for r in range(n_recordings):
        data = np.cumsum(rng.standard_normal((per_recording, n_sensors, n_times)), -1)
        write_store(Windows(data=(1e-13 * data).astype(np.float32), sfreq=200.0,
                            geometries=[geom],
                            metadata={"subject": np.full(per_recording, f"{r:03d}"),
                                      "label": np.full(per_recording, "HC"),
                                      "state": np.full(per_recording, "rest")}), path)
    return path


def _bare(store: Path, batch_size: int, steps: int, warmup: int) -> list[float]:
    """Step intervals of the bare step (forward, loss, backward, clipping, AdamW)."""
    from megfm.data.batch import iter_batches
    from megfm.models import ModelConfig
    from megfm.training.module import PretrainModule

    torch.manual_seed(0)
    module = PretrainModule(ModelConfig.preset("small"), max_steps=steps + warmup)
    optimizer = module.configure_optimizers()["optimizer"]
    batches = [b for b, _ in zip(iter_batches(str(store), batch_size=batch_size),
                                 range(8), strict=False)]
    generator = torch.Generator().manual_seed(0)
    stamps = []
    for i in range(warmup + steps + 1):
        stamps.append(time.perf_counter())
        loss = module(batches[i % len(batches)], generator=generator)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
    return np.diff(stamps[warmup:]).tolist()


def _pipeline(store: Path, out: Path, batch_size: int, steps: int, warmup: int,
              progress: bool) -> list[float]:
    """Intervals between the starts of consecutive training batches of megfm.pretrain."""
    import lightning.pytorch as pl

    from megfm.training import pretrain

    stamps: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            stamps.append(time.perf_counter())

    # one step more than timed: intervals run from one batch start to the next
    pretrain(store, out, model="small", batch_size=batch_size, max_steps=warmup + steps + 1,
             val_fraction=0.0, progress=progress, seed=0, callbacks=[Clock()])
    return np.diff(stamps[warmup:]).tolist()


def run(quick: bool, threads: int, batch_size: int) -> dict:
    torch.set_num_threads(threads)
    steps, warmup = (6, 2) if quick else (30, 5)
    tmp = Path(tempfile.mkdtemp(prefix="megfm-bench-overhead-"))
    try:
        # 306 sensors x 4 s at 200 Hz, one epoch longer than the timed steps
        store = _store(tmp / "store", 306, 800, 12, 4 if quick else 16)
        intervals = {"bare step": _bare(store, batch_size, steps, warmup)}
        for progress in (False, True):
            name = f"megfm pretrain ({'progress bar' if progress else 'no progress bar'})"
            intervals[name] = _pipeline(store, tmp / f"run{int(progress)}", batch_size, steps,
                                        warmup, progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    bare = intervals["bare step"]
    for name, dt in intervals.items():
        median = batch_size / float(np.median(dt))
        whole = batch_size * len(dt) / float(np.sum(dt))
        rows.append({"case": name, "steps": len(dt), "windows_per_s_median": median,
                     "windows_per_s_whole": whole,
                     "of_bare_median": median / (batch_size / float(np.median(bare))),
                     "of_bare_whole": whole / (batch_size * len(bare) / float(np.sum(bare)))})
    return {"quick": quick, "threads": threads, "batch_size": batch_size, "target": TARGET,
            "rows": rows, "intervals_s": intervals}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 timed steps (about a minute)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parse_args(parser, argv, "overhead")
    result = run(args.quick, args.threads, args.batch_size)
    print(f"{'case':<40} {'windows/s (median)':>19} {'of bare':>8} {'windows/s (all)':>16} "
          f"{'of bare':>8}")
    for r in result["rows"]:
        print(f"{r['case']:<40} {r['windows_per_s_median']:>19.2f} {r['of_bare_median']:>8.3f} "
              f"{r['windows_per_s_whole']:>16.2f} {r['of_bare_whole']:>8.3f}")
    print(f"target: megfm pretrain >= {TARGET:.2f} of the bare step")
    print(f"wrote {write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
