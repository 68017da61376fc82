"""Do the explanation maps point at the planted ground truth? (issue 6 targets)

Part A, attention alignment: simulate a multi-state cohort (rest, auditory,
somatosensory), pretrain a tiny MaskedSignalModel by masked reconstruction, and score the
per-state spatial attention (and rollout) against the simulator's ``expected_sensors``
(alignment = mass share / uniform share; target >= 2 for auditory and somatosensory).
Side by side: the same architecture untrained, and the raw-signal baseline (per-sensor
signal power of the state, scaled per sensor type).

Part B, attribution regions: for each seed, a resting cohort whose migraine group has a
planted theta-power increase in ONE region; a logistic regression on the model's
embeddings (migraine vs HC) becomes a LinearHead, integrated gradients attribute it, the
theta-band attribution is projected to sources (minimum norm, sphere model) and the
simulator's regions are ranked. Target: the planted region in the top 3 in >= 4 of 5 seeds;
with effect scale 0, the spread of the top score shows that no region stands out.

Run: ``python benchmarks/bench_explain.py [--quick] [--figures docs/figures]``; writes
``benchmarks/results/explain.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import mne
import numpy as np
import torch
from _results import write_json

from megfm.data.epochs import make_windows
from megfm.data.preprocess import PreprocessConfig, preprocess
from megfm.data.windows import Windows
from megfm.explain import (
    EncoderClassifier,
    LinearHead,
    alignment_score,
    attention_maps,
    format_region_table,
    integrated_gradients,
    plot_state_topomaps,
    rank_regions,
)
from megfm.explain._common import _iter_batches
from megfm.models import MaskedSignalModel, ModelConfig
from megfm.simulate import sensor_array, simulate_cohort

SFREQ = 200.0
PLANTED = ["precuneus", "parietal_lh", "rostral_middle_frontal_rh", "occipital_rh",
           "supramarginal_lh"]


def load_windows(cohort: dict, window_seconds: float = 1.0) -> Windows:
    config = PreprocessConfig(line_freq=None, sfreq=SFREQ, h_freq=80.0)
    parts = []
    for rec in cohort["recordings"]:
        raw = mne.io.read_raw_fif(rec["path"], preload=True, verbose=False)
        parts.append(make_windows(preprocess(raw, config, verbose=False), state=rec["state"],
                                  window_seconds=window_seconds, subject=rec["subject"],
                                  label=rec["group"], verbose=False))
    return Windows.concatenate(parts)


def batches(windows: Windows, idx: np.ndarray, batch_size: int):
    for sel, batch in _iter_batches(windows, batch_size, idx):
        yield sel, {k: torch.as_tensor(v) for k, v in batch.items()}


def pretrain(windows: Windows, steps: int, seed: int) -> tuple[MaskedSignalModel, list]:
    torch.manual_seed(seed)
    model = MaskedSignalModel(ModelConfig.preset("tiny", sfreq=SFREQ, patch_samples=20))
    untrained = MaskedSignalModel(ModelConfig.preset("tiny", sfreq=SFREQ, patch_samples=20))
    untrained.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        idx = rng.choice(windows.n_windows, size=16, replace=False)
        _, b = next(batches(windows, idx, 16))
        out = model(b["x"], b["pos"], b["ori"], b["sensor_type"], b["sensor_mask"],
                    generator=gen, sfreq=SFREQ)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    model.eval()
    return model, untrained, losses


def power_map(windows: Windows, state: str) -> np.ndarray:
    """Raw-signal baseline: per-sensor signal power of the state, scaled per sensor type."""
    sel = windows.metadata["state"] == state
    geom = windows.geometries[0]
    power = (windows.data[sel, :geom.n_sensors] ** 2).mean(axis=(0, 2))
    for t in np.unique(geom.types):
        power[geom.types == t] /= power[geom.types == t].mean()
    return power


def part_a(args, work: Path) -> dict:
    t0 = time.perf_counter()
    cohort = simulate_cohort(work / "cohort_a", n_subjects=args.subjects,
                             states=["rest", "auditory", "somatosensory"], array="vectorview",
                             duration=args.duration, block_size=10, sfreq=SFREQ, seed=0,
                             verbose=False)
    windows = load_windows(cohort)
    truth = cohort["ground_truth"]
    model, untrained, losses = pretrain(windows, args.steps, seed=0)
    t_train = time.perf_counter() - t0
    maps = attention_maps(model, windows, batch_size=32, verbose=False)
    maps0 = attention_maps(untrained, windows, batch_size=32, verbose=False)
    rows = {}
    for state in ("auditory", "somatosensory"):
        expected = truth["expected_sensors"][state]
        rows[state] = {
            "n_expected": len(expected), "n_sensors": len(maps.names),
            "pretrained_spatial": maps.alignment(expected, state),
            "pretrained_rollout": maps.alignment(expected, state, kind="rollout"),
            "untrained_spatial": maps0.alignment(expected, state),
            "signal_power_baseline": alignment_score(power_map(windows, state), expected,
                                                     names=windows.geometries[0].names),
        }
    if args.figures:
        plot_state_topomaps(maps, args.figures, prefix="attention")
    return {"seconds": round(time.perf_counter() - t0, 1), "train_seconds": round(t_train, 1),
            "steps": args.steps, "loss_first": float(np.mean(losses[:10])),
            "loss_last": float(np.mean(losses[-10:])), "n_windows": windows.n_windows,
            "alignment": rows}, model


def embed(model, windows: Windows) -> np.ndarray:
    feats = []
    with torch.no_grad():
        for _, b in batches(windows, np.arange(windows.n_windows), 64):
            f = model.forward_features(b["x"], b["pos"], b["ori"], b["sensor_type"],
                                       b["sensor_mask"])
            feats.append(model.forward_head(f).numpy())
    return np.concatenate(feats)


def part_b_seed(args, work: Path, model, seed: int, effect_scale: float) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    region = PLANTED[seed % len(PLANTED)]
    groups = {"HC": {}, "migraine": {"habituation_slope": -0.10, "gating_ratio": 0.73,
                                     "theta_power": {region: 1.0 + 2.0 * effect_scale}}}
    cohort = simulate_cohort(work / f"cohort_b{seed}_{effect_scale}", n_subjects=args.subjects,
                             groups=groups, states=["rest"], array="vectorview",
                             duration=args.duration, sfreq=SFREQ, seed=100 + seed,
                             verbose=False)
    windows = load_windows(cohort)
    y = (windows.metadata["label"] == "migraine").astype(int)
    emb = embed(model, windows)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    subjects = windows.metadata["subject"]
    acc = float(np.mean(cross_val_score(clf, emb, y, cv=_subject_folds(subjects))))
    clf.fit(emb, y)
    classifier = EncoderClassifier(model, LinearHead.from_sklearn(clf))
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.choice(np.flatnonzero(y == c), size=min(args.ig_windows,
                                                                       int((y == c).sum())),
                                      replace=False) for c in (0, 1)])
    attr = integrated_gradients(classifier, windows[pick], target=1, n_steps=args.ig_steps)
    theta = np.abs(attr.to_bands({"theta": (4.0, 8.0)})["theta"])  # (n, S)
    geom = windows.geometries[0]
    sensor = theta.mean(axis=0)[:geom.n_sensors]
    for t in np.unique(geom.types):
        sensor[geom.types == t] /= sensor[geom.types == t].mean()
    dev_head_t = sensor_array("vectorview")["dev_head_t"]
    table = rank_regions(sensor, geom, cohort["ground_truth"]["regions"], dev_head_t=dev_head_t)
    rank = next(r["rank"] for r in table if r["region"] == region)
    scores = np.array([r["score"] for r in table])
    return {"seed": seed, "region": region, "effect_scale": effect_scale, "rank": rank,
            "top": table[0]["region"], "top_score": float(scores[0]),
            "top_over_median": float(scores[0] / np.median(scores)),
            "cv_accuracy": acc, "table": table}


def _subject_folds(subjects: np.ndarray, n_folds: int = 4):
    uniq = np.unique(subjects)
    folds = np.arange(len(uniq)) % n_folds
    for f in range(n_folds):
        test = np.isin(subjects, uniq[folds == f])
        yield np.flatnonzero(~test), np.flatnonzero(test)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small cohort, few steps, 2 seeds (minutes on 2 busy CPU cores)")
    parser.add_argument("--figures", default=None, help="folder for the topomap PNGs")
    parser.add_argument("--out", default="benchmarks/results/explain.json",
                        help="JSON results file")
    parser.add_argument("--steps", type=int, default=None,
                        help="pretraining steps (default 30 quick, 300 full)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds of the attribution part; 0 skips it (default 2 quick, 5 full)")
    parser.add_argument("--checkpoint", default=None,
                        help="a pretrained model folder (e.g. from bench_targets.py --work): "
                        "part A is skipped and part B attributes this model's embeddings")
    args = parser.parse_args()
    steps, seeds = args.steps, args.seeds
    args.subjects = 4 if args.quick else 8
    args.duration = 24.0 if args.quick else 40.0
    args.steps = 30 if args.quick else 300
    args.seeds = 2 if args.quick else 5
    args.steps = args.steps if steps is None else steps
    args.seeds = args.seeds if seeds is None else seeds
    args.ig_windows = 4 if args.quick else 20
    args.ig_steps = 4 if args.quick else 16
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.checkpoint:
            from megfm import load_pretrained

            model = load_pretrained(args.checkpoint).eval()
            a = {"skipped": f"model from {args.checkpoint}"}
        else:
            a, model = part_a(args, work)
        if "alignment" in a:
            print_part_a(a)
        b = []
        for scale in (1.0, 0.0):
            for seed in range(args.seeds):
                b.append(part_b_seed(args, work, model, seed, scale))
        print_part_b(b, args.seeds)
        hits = sum(r["rank"] <= 3 for r in b if r["effect_scale"] == 1.0)
    result = {"quick": args.quick, "checkpoint": args.checkpoint,
              "seconds": round(time.perf_counter() - t0, 1),
              "attention": a, "attribution": b, "top3_hits": hits, "n_seeds": args.seeds}
    out = Path(args.out)
    write_json(out, result, indent=1)
    print(f"\nwrote {out} in {result['seconds']} s")
    return 0


def print_part_a(a: dict) -> None:
    print(f"Part A: attention alignment with expected sensors (x uniform), "
          f"{a['n_windows']} windows, {a['steps']} pretraining steps "
          f"(loss {a['loss_first']:.3f} -> {a['loss_last']:.3f})")
    print("| state | pretrained spatial | pretrained rollout | untrained spatial | "
          "signal power (baseline) |")
    print("|---|---:|---:|---:|---:|")
    for state, r in a["alignment"].items():
        print(f"| {state} | {r['pretrained_spatial']:.2f} | {r['pretrained_rollout']:.2f} | "
              f"{r['untrained_spatial']:.2f} | {r['signal_power_baseline']:.2f} |")


def print_part_b(b: list, n_seeds: int) -> None:
    if not b:
        return
    print("\nPart B: rank of the planted region in the theta-band attribution table")
    print("| effect scale | seed | planted region | rank | top region | top score | "
          "top / median | CV accuracy |")
    print("|---:|---:|---|---:|---|---:|---:|---:|")
    for r in b:
        print(f"| {r['effect_scale']:g} | {r['seed']} | {r['region']} | {r['rank']} | "
              f"{r['top']} | {r['top_score']:.2f} | {r['top_over_median']:.2f} | "
              f"{r['cv_accuracy']:.2f} |")
    hits = sum(r["rank"] <= 3 for r in b if r["effect_scale"] == 1.0)
    print(f"planted region in the top 3: {hits} of {n_seeds} seeds (effect scale 1)")
    print("\nRegion table, seed 0, effect scale 1:")
    print(format_region_table(b[0]["table"], top=5))


if __name__ == "__main__":
    raise SystemExit(main())
