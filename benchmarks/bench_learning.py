"""Learning speed and attention alignment of the masked-signal model, before vs after.

Simulates a small multi-state Vectorview cohort (rest, auditory, somatosensory) with
:func:`megfm.simulate_cohort`, prepares a store of 1 s windows with :func:`megfm.prepare`,
then trains several model configurations on the same windows, masks and seeds with a plain
AdamW loop (single thread) and reports, per configuration:

* the masked loss on a fixed evaluation set of windows, before and after training, per mask
  mode (``random``, ``sensor``, ``time``), and the training-loss curve (first/last 10 steps);
* the spatial attention alignment with the simulator's expected sensors
  (:func:`megfm.explain.attention_maps` ``.alignment``; 1 = uniform, target >= 2);
* the training step time (ms) and the parameter count.

``before`` is the pre-change architecture (full-width tokens, no scale input, small attention
init), rebuilt from the same code with the new options switched off.

Usage::

    python benchmarks/bench_learning.py --quick     # ~2 min on one core (~4 with --ablations)
    python benchmarks/bench_learning.py --steps 300

Writes ``--out`` (the recorded result: ``benchmarks/results/learning.json``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import parse_args, write_json

import megfm
from megfm.data import iter_batches
from megfm.data.batch import Batch
from megfm.data.preprocess import PreprocessConfig
from megfm.explain import attention_maps
from megfm.masking import SINGLE_MASK_MODES
from megfm.models import MaskedSignalModel, ModelConfig

HERE = Path(__file__).resolve().parent
SFREQ = 200.0
MODES = SINGLE_MASK_MODES
#: the architecture before the learning/speed changes, as overrides of the new fields
BEFORE = dict(token_dim=0, token_mlp_ratio=4.0, scale_feature=False, scale_attention_bias=None,
              qk_init="trunc_normal", geometry_gain=False)


def variants(presets: list[str], ablations: bool) -> dict[str, ModelConfig]:
    out = {}
    for name in presets:
        base = dict(sfreq=SFREQ, patch_samples=20)
        out[f"{name}/before"] = ModelConfig.preset(name, **base, **BEFORE)
        if ablations:  # the changes added one at a time
            steps = [("+scale", {"scale_feature": True}), ("+xavier", {"qk_init": "xavier"}),
                     ("+gain", {"geometry_gain": True})]
            over, label = dict(BEFORE), name + "/"
            for tag, change in steps:
                over.update(change)
                label += tag
                out[label] = ModelConfig.preset(name, **base, **over)
        out[f"{name}/after"] = ModelConfig.preset(name, **base)
    return out


def make_store(work: Path, n_subjects: int, duration: float) -> tuple[Path, dict]:
    store = work / "store"
    cohort = megfm.simulate_cohort(work / "cohort", n_subjects=n_subjects,
                                   states=["rest", "auditory", "somatosensory"],
                                   array="vectorview", duration=duration, sfreq=400.0,
                                   block_size=10, seed=0, verbose=False)
    if not store.exists():
        paths = {}
        for rec in cohort["recordings"]:
            paths.setdefault(rec["state"], []).append(rec["path"])
        config = PreprocessConfig(line_freq=None, sfreq=SFREQ, h_freq=80.0)
        for state, files in paths.items():
            megfm.prepare(files, store, state=state, window_seconds=1.0, config=config,
                          progress=False, verbose=False)
    return store, cohort["ground_truth"]


def to_torch(batch: Batch) -> dict:
    """The model's inputs of a batch, by name."""
    return batch.inputs()


def eval_loss(model, batches: list[dict]) -> dict[str, float]:
    model.eval()
    out = {}
    with torch.no_grad():
        for j, mode in enumerate(MODES):
            losses = [float(model(**b, mask_mode=mode, mask_ratio=0.5,
                                  generator=torch.Generator().manual_seed(100 + 10 * i + j))["loss"])
                      for i, b in enumerate(batches)]
            out[mode] = float(np.mean(losses))
    model.train()
    return out


def run_one(config: ModelConfig, windows, eval_batches, truth, *, steps, lr, batch_size, seed):
    torch.manual_seed(seed)
    model = MaskedSignalModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    loss0 = eval_loss(model, eval_batches)
    losses, times = [], []
    model.train()
    for step in range(steps):
        idx = np.sort(rng.choice(windows.n_windows, size=batch_size, replace=False))
        b = next(iter_batches(windows, batch_size=batch_size, indices=idx))
        b = to_torch(b)
        t0 = time.perf_counter()
        out = model(**b, generator=gen)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for g in opt.param_groups:  # linear warm-up over the first 10% of steps
            g["lr"] = lr * min(1.0, (step + 1) / max(1, steps // 10))
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(float(out["loss"].detach()))
    loss1 = eval_loss(model, eval_batches)
    model.eval()
    maps = attention_maps(model, windows, rollout=False, batch_size=32, verbose=False)
    align = maps.alignment(truth["expected_sensors"])
    return {
        "n_params": model.num_parameters(),
        "step_ms": 1000 * float(np.median(times[1:] if len(times) > 1 else times)),
        "train_loss_first10": float(np.mean(losses[:10])),
        "train_loss_last10": float(np.mean(losses[-10:])),
        "eval_loss_before": loss0, "eval_loss_after": loss1,
        "alignment": {k: float(v) for k, v in align.items()},
    }


def speed(presets: list[str], *, n_sensors: int = 306, n_times: int = 800, batch_size: int = 2,
          steps: int = 3) -> dict:
    """CPU seconds per window of a training step at MEG size (306 x 800), before vs after.

    ``classify``: full window -> pooled latents -> linear head -> cross-entropy (the step
    bench_peers.py compares with braindecode's models); ``pretrain``: masked reconstruction.
    """
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("_bench_pretrain", HERE / "bench_pretrain.py")
    bp = importlib.util.module_from_spec(spec)
    sys.modules["_bench_pretrain"] = bp
    spec.loader.exec_module(bp)
    batch = bp._synthetic_batch(torch, n_sensors, n_times, batch_size)
    batch = {k: v for k, v in batch.items()}
    y = torch.zeros(batch_size, dtype=torch.long)
    out = {}
    for preset in presets:
        for tag, over in (("before", BEFORE), ("after", {})):
            config = ModelConfig.preset(preset, **over)
            torch.manual_seed(0)
            model = MaskedSignalModel(config)
            model.reset_head(2)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            row = {"n_params": model.num_parameters()}
            for mode in ("classify", "pretrain"):
                cpu = []
                for _ in range(steps + 1):
                    c0 = time.process_time()
                    if mode == "classify":
                        f = model.forward_features(**batch)
                        loss = torch.nn.functional.cross_entropy(
                            model.forward_head(f, pre_logits=False), y)
                    else:
                        loss = model(**batch, generator=torch.Generator().manual_seed(0))["loss"]
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    cpu.append(time.process_time() - c0)
                row[f"{mode}_cpu_s_per_window"] = min(cpu[1:]) / batch_size
            out[f"{preset}/{tag}"] = row
            print(f"speed {preset}/{tag:7s} params {row['n_params']:>8d}  CPU s/window at "
                  f"{n_sensors}x{n_times}: classify {row['classify_cpu_s_per_window']:.3f}  "
                  f"pretrain {row['pretrain_cpu_s_per_window']:.3f}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 subjects x 30 s, 120 steps, tiny only")
    ap.add_argument("--steps", type=int, default=200, help="training steps per configuration")
    ap.add_argument("--subjects", type=int, default=6, help="simulated subjects")
    ap.add_argument("--duration", type=float, default=40.0, help="seconds per recording")
    ap.add_argument("--presets", default="tiny,small", help="comma-separated presets")
    ap.add_argument("--lr", type=float, default=3e-3, help="AdamW peak learning rate")
    ap.add_argument("--batch-size", type=int, default=16, help="windows per step")
    ap.add_argument("--ablations", action="store_true", help="also run intermediate variants")
    ap.add_argument("--only", default=None, help="run only configurations whose name "
                    "contains this text, e.g. 'after'")
    ap.add_argument("--work", default=None, help="folder for the cohort and store (kept); "
                    "a temporary folder when omitted")
    args = parse_args(ap, argv, "learning")
    if args.quick:
        args.subjects, args.duration, args.steps = 4, 30.0, min(args.steps, 120)
        args.presets = "tiny"
    torch.set_num_threads(1)
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory()
        work = Path(tmp.name)
    else:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    store, truth = make_store(work, args.subjects, args.duration)
    windows = megfm.read_store(store)
    t_data = time.perf_counter() - t0
    erng = np.random.default_rng(123)
    eidx = np.sort(erng.choice(windows.n_windows, size=min(64, windows.n_windows), replace=False))
    eval_batches = [to_torch(b) for b in iter_batches(windows, batch_size=16, indices=eidx)]
    results = {}
    for name, config in variants(args.presets.split(","), args.ablations).items():
        if args.only and args.only not in name:
            continue
        r = run_one(config, windows, eval_batches, truth, steps=args.steps, lr=args.lr,
                    batch_size=args.batch_size, seed=0)
        results[name] = r
        a = r["alignment"]
        print(f"{name:22s} params {r['n_params']:>8d}  step {r['step_ms']:7.1f} ms  "
              f"train {r['train_loss_first10']:.3f}->{r['train_loss_last10']:.3f}  eval "
              + " ".join(f"{m} {r['eval_loss_before'][m]:.3f}->{r['eval_loss_after'][m]:.3f}"
                         for m in MODES)
              + f"  align aud {a.get('auditory', float('nan')):.2f}x"
              f" som {a.get('somatosensory', float('nan')):.2f}x", flush=True)
    speed_rows = speed(["small"] if not args.quick else ["tiny", "small"], steps=2)
    report = {"quick": args.quick, "steps": args.steps, "lr": args.lr,
              "batch_size": args.batch_size, "subjects": args.subjects,
              "duration": args.duration, "n_windows": int(windows.n_windows),
              "data_seconds": round(t_data, 1),
              "seconds": round(time.perf_counter() - t0, 1), "torch_threads": 1,
              "configs": {k: v.to_dict() for k, v in
                          variants(args.presets.split(","), args.ablations).items()},
              "results": results, "speed_306x800": speed_rows}
    out = Path(args.out)
    write_json(out, report)
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
