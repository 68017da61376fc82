"""A/B of model settings on the same data, batches, masks and seeds (learning speed).

Trains one model per variant (a preset with some :class:`megfm.ModelConfig` fields and the
peak learning rate overridden) with a plain AdamW loop on the pretraining store of a
``bench_targets.py --work`` folder, then scores masked reconstruction on windows of its study
store, and the alignment of the event-related attention change
(:meth:`megfm.explain.AttentionMaps.event_related`) with the simulator's expected sensors.
With ``--downstream`` it also embeds every window of the study store (mean pooling) and
scores what the features carry: the subject-level migraine-vs-HC AUROC (logistic regression,
5 subject-level folds, :func:`megfm.run_study`) and a window-level probe, the cross-validated
R^2 (ridge, folds grouped by subject) of each rest window's relative theta power per
sensor type and region (:func:`megfm.spectral_features`), the simulator's main planted effect.
The reconstruction score is the NMSE of the hidden samples in per-sensor robust units, so
variants are comparable.

Run::

    python benchmarks/bench_targets.py --work WORK --skip recon,oracle,attention,study,null,cross
    python benchmarks/bench_ablation.py --work WORK --steps 300 \\
        --variant 'small={}' --variant 'latents8={"n_latents": 8}' \\
        --variant 'lr3e-3={"lr": 3e-3}' --variant 'no-bias={"scale_attention_bias": null}'
    python benchmarks/bench_ablation.py --work WORK --probe RUN1/model --probe RUN2/model

Writes ``--out`` (default ``benchmarks/scratch/ablation[_quick].json``, ``probe.json`` with
``--probe``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import megfm
from megfm.data import iter_batches
from megfm.explain import alignment_score, attention_maps
from megfm.masking import SINGLE_MASK_MODES
from megfm.models import PRESETS, MaskedSignalModel, ModelConfig
from megfm.tokenize import denormalize, robust_normalize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import parse_args, write_json  # noqa: E402
from bench_learning import to_torch  # noqa: E402  (batch dict -> model tensors)

HERE = Path(__file__).resolve().parent
MODES = SINGLE_MASK_MODES


def score(model: MaskedSignalModel, batches: list[dict]) -> dict[str, float]:
    """NMSE of hidden samples in per-sensor robust units, per masking mode (same masks)."""
    model.eval()
    out = {}
    with torch.no_grad():
        for j, mode in enumerate(MODES):
            sse = sst = 0.0
            for i, b in enumerate(batches):
                o = model(**b, mask_mode=mode, mask_ratio=0.5,
                          generator=torch.Generator().manual_seed(1000 * j + i))
                phys = denormalize(o["pred"], o["stats"])  # (B, S, P, L), physical units
                n, s, p, length = phys.shape
                x_norm, stats = robust_normalize(b["x"][..., :p * length], b["sensor_mask"])
                pred = ((phys.reshape(n, s, -1) - stats.center) / stats.scale).reshape(phys.shape)
                true = x_norm.reshape(phys.shape)
                hidden = o["mask"][..., None].expand_as(true)
                sse += float(((pred - true)[hidden] ** 2).sum())
                sst += float((true[hidden] ** 2).sum())
            out[mode] = sse / sst
    model.train()
    return out


def event_related_alignment(model, windows, truth: dict, *, tmin: float = -0.2,
                            max_windows: int = 200) -> dict[str, float]:
    """Alignment of the event-related attention change with the expected sensors, per state."""
    out = {}
    rng = np.random.default_rng(0)
    for state in ("auditory", "somatosensory"):
        idx = np.flatnonzero(windows.metadata["state"] == state)
        idx = np.sort(rng.choice(idx, min(max_windows, len(idx)), replace=False))
        maps = attention_maps(model, windows[idx], rollout=False, batch_size=50, verbose=False)
        out[state] = alignment_score(maps.event_related(state, tmin=tmin),
                                     truth["expected_sensors"][state], names=maps.names)
    return out


def theta_targets(windows) -> np.ndarray:
    """Relative theta power per sensor type and region of every window (the probe's targets)."""
    spec, names = megfm.spectral_features(windows, evoked=False)
    return spec[:, [i for i, n in enumerate(names) if n.startswith("relpow_theta_")]]


def downstream(model: MaskedSignalModel, windows, *, seed: int = 0,
               theta: np.ndarray | None = None) -> dict[str, float]:
    """Migraine-vs-HC AUROC and the relative-theta probe R^2 of mean-pooled embeddings.

    ``theta``: :func:`theta_targets` of ``windows``, computed here when None (pass it to
    score several models on the same windows without recomputing it).
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats, _ = megfm.embed(model, windows, pooling="mean", batch_size=64, progress=False)
    meta = windows.metadata
    subjects = np.asarray(meta["subject"])
    groups = {lab: np.unique(subjects[np.asarray(meta["label"]) == lab])
              for lab in ("migraine", "HC")}
    n_splits = min(5, *(len(g) for g in groups.values()))
    out = {"auroc": float("nan"), "auroc_ci": [float("nan")] * 2}
    if n_splits >= 2:  # the --quick cohort has too few subjects for a study
        study = megfm.run_study({"megfm": feats}, meta, classifiers=["logreg"],
                                n_splits=n_splits, n_permutations=0, n_bootstrap=200,
                                reference=None, seed=seed, progress=False)
        auroc = study.metrics["megfm/logreg"]["auroc"]
        out = {"auroc": auroc["value"], "auroc_ci": [auroc["ci_low"], auroc["ci_high"]]}
    if theta is None:
        theta = theta_targets(windows)
    rest = np.flatnonzero(np.asarray(meta["state"]) == "rest")
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    y = theta[rest]
    pred = cross_val_predict(probe, feats[rest], y, groups=subjects[rest],
                             cv=GroupKFold(min(5, len(np.unique(subjects[rest])))))
    r2 = 1.0 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    return {**out, "theta_probe_r2": float(np.mean(r2))}


def run_variant(preset: str, overrides: dict, train, eval_batches, *, steps: int,
                batch_size: int, seed: int, test=None, truth=None,
                with_downstream: bool = False, theta: np.ndarray | None = None) -> dict:
    overrides = dict(overrides)
    lr = float(overrides.pop("lr", 1e-3))
    config = ModelConfig.preset(preset, **overrides)
    torch.manual_seed(seed)
    model = MaskedSignalModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    before = score(model, eval_batches)
    warmup = max(1, steps // 20)
    t0 = time.perf_counter()
    losses = []
    for step in range(steps):
        idx = np.sort(rng.choice(train.n_windows, batch_size, replace=False))
        b = next(iter_batches(train, batch_size=batch_size, indices=idx))
        loss = model(**to_torch(b), generator=gen)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for g in opt.param_groups:  # same warm-up + cosine as megfm.pretrain
            g["lr"] = lr * (min(1.0, (step + 1) / warmup) if step < warmup else
                            0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, steps - warmup))))
        opt.step()
        losses.append(float(loss.detach()))
    result = {"config": config.to_dict(), "lr": lr, "before": before,
              "after": score(model, eval_batches), "train_seconds": time.perf_counter() - t0,
              "train_loss_last10": float(np.mean(losses[-10:]))}
    if truth is not None:
        result["event_related_alignment"] = event_related_alignment(model.eval(), test, truth)
    if with_downstream:
        result["downstream"] = downstream(model.eval(), test, seed=seed, theta=theta)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=None, help="a bench_targets.py --work folder")
    ap.add_argument("--quick", action="store_true", help="smoke run (run_all.py --quick): "
                    "a tiny cohort in a temporary folder, tiny preset, 20 steps")
    ap.add_argument("--preset", default="small", choices=tuple(PRESETS))
    ap.add_argument("--variant", action="append", default=None,
                    help="NAME=JSON of ModelConfig overrides (plus optional 'lr'); repeatable "
                    "(default: the preset alone)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-windows", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--downstream", action="store_true",
                    help="also embed the study store: migraine-vs-HC AUROC and theta-probe R^2")
    ap.add_argument("--probe", action="append", default=None, metavar="MODEL_DIR",
                    help="train nothing: score these exported models (megfm.load_pretrained "
                    "folders) with the --downstream measures on the study store; repeatable")
    ap.add_argument("--seed", type=int, default=0)
    args = parse_args(ap, argv, lambda a: "probe" if a.probe else "ablation")
    torch.set_num_threads(args.threads)
    args.variant = args.variant or ["preset={}"]
    tmp = None
    if args.quick:
        import tempfile

        from bench_targets import simulate_and_prepare

        args.preset, args.steps, args.eval_windows = "tiny", min(args.steps, 20), 16
        if args.work is None:
            tmp = tempfile.TemporaryDirectory()
            args.work = tmp.name
            for name, seed in (("pretrain", 101), ("study", 202)):
                simulate_and_prepare(Path(args.work), name, n_subjects=2, duration=20.0,
                                     seed=seed)
    if args.work is None:
        sys.exit("Give --work (a bench_targets.py --work folder) or --quick.")
    work = Path(args.work)
    test = megfm.read_store(work / "study_store")
    theta = theta_targets(test) if args.probe or args.downstream else None
    if args.probe:
        results = {}
        for folder in args.probe:
            model = megfm.load_pretrained(folder).eval()
            results[folder] = downstream(model, test, seed=args.seed, theta=theta)
            print("{}: AUROC {auroc:.2f} theta-probe R2 {theta_probe_r2:.3f}".format(
                folder, **results[folder]), flush=True)
        out = Path(args.out)
        write_json(out, {"args": vars(args), "results": results})
        print(f"wrote {out}")
        return 0
    train = megfm.read_store(work / "pretrain_store")
    truth_file = work / "study_cohort" / "ground_truth.json"
    truth = json.loads(truth_file.read_text()) if truth_file.exists() else None
    rng = np.random.default_rng(1)
    eidx = np.sort(rng.choice(test.n_windows, min(args.eval_windows, test.n_windows),
                              replace=False))
    eval_batches = [to_torch(b) for b in iter_batches(test, batch_size=16, indices=eidx)]
    results = {}
    for spec in args.variant:
        name, _, text = spec.partition("=")
        if not name or not text:
            sys.exit(f"Invalid --variant {spec!r}: expected NAME=JSON, e.g. 'latents8={{\"n_latents\": "
                     "8}}'.")
        r = run_variant(args.preset, json.loads(text), train, eval_batches, steps=args.steps,
                        batch_size=args.batch_size, seed=args.seed, test=test, truth=truth,
                        with_downstream=args.downstream, theta=theta)
        results[name] = r
        align = r.get("event_related_alignment", {})
        print(f"{name:12s} NMSE after {args.steps} steps: " + "  ".join(
            f"{m} {r['before'][m]:.3f}->{r['after'][m]:.3f}" for m in MODES)
            + "  event-related attention alignment " + " / ".join(
                f"{k} {v:.2f}x" for k, v in align.items())
            + ("  AUROC {auroc:.2f} theta-probe R2 {theta_probe_r2:.3f}".format(
                **r["downstream"]) if "downstream" in r else "")
            + f"  ({r['train_seconds']:.0f} s)", flush=True)
    out = Path(args.out)
    write_json(out, {"args": vars(args), "results": results})
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
