"""One CPU-budget pretraining run, scored against the quality targets of issues 4-7.

1. Simulate a pretraining cohort (HC and migraine, rest / auditory / somatosensory, no labels
   used) and, with another seed, a separate labelled study cohort (default 60 subjects).
2. Pretrain a preset (default ``small``) with :func:`megfm.pretrain` for a wall-clock budget
   (default 20 minutes; Lightning's ``Timer`` callback stops it).
3. Reconstruction on study subjects (never seen in pretraining):
   :func:`megfm.evaluate_reconstruction` masked-sensor NMSE against MNE's field
   interpolation, masked-time-block NMSE against cubic-spline interpolation (targets <= 0.8x).
4. Attention: per-state maps on the study cohort; alignment with the simulator's expected
   sensors as a whole, per sensor type, and for the event-related attention change
   (:meth:`megfm.explain.AttentionMaps.event_related`), with the same scores for the
   signal-power map as a reference.
5. Downstream: :func:`megfm.embed` + :func:`megfm.run_study` migraine vs HC, megfm features
   against raw and spectral baselines on the same subject-level folds; and the same on a
   null cohort (effect scale 0).
6. Cross-device: the model (trained on Vectorview) reconstructs simulated CTF-275, KIT-160
   and OPM recordings without retraining; NMSE ratio to the same-device NMSE.

Run::

    python benchmarks/bench_targets.py                 # ~45 min on 2 CPU cores
    python benchmarks/bench_targets.py --quick         # ~3 min, tiny model, small cohorts

Writes ``--out`` (default ``benchmarks/scratch/targets[_quick].json``; the recorded result is
``--out benchmarks/results/targets.json``) and prints the tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from _results import parse_args, write_json

import megfm
from megfm.explain import alignment_score, attention_maps
from megfm.explain.attention import increase_over_baseline
from megfm.models import PRESETS, ModelConfig

HERE = Path(__file__).resolve().parent
STATES = ["rest", "auditory", "somatosensory"]


def simulate_and_prepare(work: Path, name: str, *, n_subjects: int, duration: float, seed: int,
                         array: str = "vectorview", states=STATES, effect_scale: float = 1.0,
                         ) -> tuple[Path, dict]:
    cohort = work / f"{name}_cohort"
    store = work / f"{name}_store"
    sim = megfm.simulate_cohort(cohort, n_subjects=n_subjects, groups=("HC", "migraine"),
                                states=list(states), array=array, duration=duration,
                                sfreq=400.0, block_size=10, effect_scale=effect_scale,
                                seed=seed, verbose=False)
    if not store.exists():
        megfm.prepare([cohort], store, window_seconds=1.0, progress=False, verbose=False)
    return store, sim["ground_truth"]


def per_type_alignment(sensor_map: np.ndarray, expected: list[str], names: list[str],
                       types: np.ndarray) -> dict[str, float]:
    """Alignment within each sensor type that has expected sensors (mass renormalised)."""
    out = {}
    wanted = set(expected)
    for t in np.unique(types):
        sel = types == t
        sub = [n for n, s in zip(names, sel, strict=True) if s and n in wanted]
        if sub:
            out[str(t)] = alignment_score(sensor_map[sel], sub,
                                          names=[n for n, s in zip(names, sel, strict=True) if s])
    return out


def signal_power_maps(windows, patch_samples: int) -> dict[str, np.ndarray]:
    """Per state, mean power of each sensor-patch, (n_patches, n_sensors), scaled per type."""
    types = np.asarray(windows.geometries[0].types)
    out = {}
    for state in STATES:
        sel = np.flatnonzero(windows.metadata["state"] == state)
        acc = None
        for start in range(0, len(sel), 256):
            x = np.asarray(windows.data[sel[start:start + 256]], np.float64)
            n, s, t = x.shape
            p = t // patch_samples
            pw = (x[..., :p * patch_samples].reshape(n, s, p, patch_samples) ** 2).mean(-1)
            acc = pw.sum(0) if acc is None else acc + pw.sum(0)
        pw = (acc / len(sel)).T  # (P, S)
        for tp in np.unique(types):  # units differ between types: scale each to sum 1
            pw[:, types == tp] /= pw[:, types == tp].sum(1, keepdims=True)
        out[state] = pw / pw.sum(1, keepdims=True)
    return out


def attention_scores(model, store, truth, *, tmin: float) -> dict:
    windows = megfm.read_store(store)
    maps = attention_maps(model, windows, rollout=False, batch_size=64, verbose=False)
    names = maps.names
    types = np.asarray(windows.geometries[0].types)
    patch_samples = model.config.patch_samples
    power = signal_power_maps(windows, patch_samples)
    out = {}
    for state in ("auditory", "somatosensory"):
        expected = truth["expected_sensors"][state]
        er = maps.event_related(state, tmin=tmin)
        pw = power[state]
        n_pre = int(round(-tmin / maps.patch_seconds))
        p_er = increase_over_baseline(pw, n_pre=n_pre, patch=n_pre)
        out[state] = {
            "n_expected": len(expected), "n_sensors": len(names),
            "attention": alignment_score(maps.get(state), expected, names=names),
            "attention_per_type": per_type_alignment(maps.get(state), expected, names, types),
            "attention_event_related": alignment_score(er, expected, names=names),
            "power": alignment_score(pw.mean(0), expected, names=names),
            "power_event_related": alignment_score(p_er, expected, names=names),
        }
    beta = getattr(model, "scale_bias", None)
    out["scale_bias"] = None if beta is None else beta.detach().cpu().numpy().round(3).tolist()
    return out


def linear_oracle(train_store, test_store, *, n_train: int = 1500, n_test: int = 200,
                  ratio: float = 0.5, seed: int = 0) -> dict[str, float]:
    """Masked-sensor NMSE of a data-driven linear interpolator (a reference, not a baseline
    of the library): the conditional mean of the hidden sensors given the visible ones under
    the sensor covariance of the *training* windows (ridge 1e-3), scored like
    :func:`megfm.evaluate_reconstruction` (per-sensor robust units, pooled; per type too).
    """
    from megfm.tokenize import robust_normalize

    rng = np.random.default_rng(seed)
    train, test = megfm.read_store(train_store), megfm.read_store(test_store)
    if [tuple(g.names) for g in train.geometries] != [tuple(train.geometries[0].names)] * len(
            train.geometries) or tuple(train.geometries[0].names) != tuple(
            test.geometries[0].names):
        raise ValueError("The linear oracle needs one sensor layout in both stores.")
    idx = np.sort(rng.choice(train.n_windows, min(n_train, train.n_windows), replace=False))
    cov = 0.0
    for start in range(0, len(idx), 250):
        x = np.asarray(train.data[idx[start:start + 250]], np.float64)
        x = x - x.mean(-1, keepdims=True)
        cov = cov + np.einsum("nst,nut->su", x, x)
    cov = cov / (len(idx) * train.n_times)
    types = np.asarray(test.geometries[0].types)
    sse, sst = {}, {}
    for i in np.sort(rng.choice(test.n_windows, min(n_test, test.n_windows), replace=False)):
        x = np.asarray(test.data[i], np.float64)
        xn, stats = robust_normalize(torch.as_tensor(x)[None])
        center, scale = stats.center[0].numpy(), stats.scale[0].numpy()
        hid = rng.random(len(x)) < ratio
        vis = ~hid
        cvv = cov[np.ix_(vis, vis)]
        ridge = 1e-3 * np.trace(cvv) / vis.sum()
        pred = cov[np.ix_(hid, vis)] @ np.linalg.solve(cvv + ridge * np.eye(vis.sum()),
                                                       x[vis] - center[vis])
        err = ((pred / scale[hid] - xn[0].numpy()[hid]) ** 2).sum(1)
        true = (xn[0].numpy()[hid] ** 2).sum(1)
        for key, sel in [("all", np.ones(hid.sum(), bool))] + [
                (test.geometries[0].type_names[int(np.flatnonzero(types == t)[0])],
                 types[hid] == t) for t in np.unique(types)]:
            sse[key] = sse.get(key, 0.0) + err[sel].sum()
            sst[key] = sst.get(key, 0.0) + true[sel].sum()
    return {k: float(sse[k] / sst[k]) for k in sse}


def study(model, store, *, n_splits: int, n_permutations: int, seed: int,
          finetune_steps: int = 0) -> dict:
    windows = megfm.read_store(store)
    out = {}
    extra = {}
    if finetune_steps:
        # the encoder fine-tuned end to end and a linear probe of the frozen encoder, trained
        # on the training windows of each of the study's own folds
        method = megfm.evaluate.make_finetune_method
        kw = dict(max_steps=finetune_steps, seed=seed, accelerator="cpu")
        extra = {"finetune": method(model, store, **kw),
                 "linear_probe": method(model, store, linear_probe=True, **kw)}
    # run_study averages each subject's windows per state and concatenates the states
    features = {"megfm": megfm.embed(model, store, progress=False)[0]}
    features["raw"] = megfm.raw_features(windows)[0]
    features["spectral"] = megfm.spectral_features(windows)[0]
    res = megfm.run_study(features, windows.metadata, task="migraine-vs-HC",
                          classifiers=["logreg"], n_splits=n_splits,
                          n_permutations=n_permutations, seed=seed, extra_methods=extra,
                          # and the question: does fine-tuning beat the linear probe?
                          reference=["megfm", ("finetune", "linear_probe")] if extra
                          else "megfm", progress=False)
    summary = res.summary()
    out["methods"] = summary["methods"]
    out["comparisons"] = summary["comparisons"]
    out["n_subjects"] = summary["n_subjects"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model, small cohorts (~3 min)")
    ap.add_argument("--preset", default="small", choices=tuple(PRESETS))
    ap.add_argument("--minutes", type=float, default=20.0, help="pretraining wall-clock budget")
    ap.add_argument("--max-steps", type=int, default=1000,
                    help="steps of the learning-rate schedule (warm-up + cosine); the run "
                    "stops at the budget or here, whichever comes first: set it to about what "
                    "the budget allows (1,000 small-preset steps of 32 windows ~ 20 min on 2 "
                    "cores), or the schedule never leaves its warm-up")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--finetune-steps", type=int, default=0,
                    help="also fine-tune the encoder end to end and train a linear probe of "
                    "it for this many steps in each study fold (0: skip; each fold costs two "
                    "fine-tuning runs)")
    ap.add_argument("--pretrain-subjects", type=int, default=24)
    ap.add_argument("--study-subjects", type=int, default=60)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per state, pretraining")
    ap.add_argument("--study-duration", type=float, default=40.0)
    ap.add_argument("--recon-windows", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: "
                    "recon,oracle,attention,study,null,cross")
    ap.add_argument("--work", default=None, help="folder kept for cohorts, stores and model")
    args = parse_args(ap, argv, "targets")
    if args.quick:
        args.preset, args.minutes, args.max_steps = "tiny", 1.0, 60
        args.pretrain_subjects, args.study_subjects = 4, 12
        args.duration, args.study_duration, args.recon_windows = 20.0, 20.0, 60
    out_path = Path(args.out)
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(args.threads)
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory()
        work = Path(tmp.name)
    else:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    report: dict = {"args": vars(args), "device": "cpu", "torch_threads": args.threads,
                    "timings": {}}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        report["timings"][name] = round(time.perf_counter() - t0, 1)
        print(f"[{report['timings'][name]:7.1f} s] {name}", flush=True)

    pre_store, _ = simulate_and_prepare(work, "pretrain", n_subjects=args.pretrain_subjects,
                                        duration=args.duration, seed=101)
    study_store, truth = simulate_and_prepare(work, "study", n_subjects=args.study_subjects,
                                              duration=args.study_duration, seed=202)
    lap("simulate + prepare")

    from lightning.pytorch.callbacks import Timer

    run = work / "model"
    exported = next(iter(sorted(run.glob("**/config.json"))), None)
    if exported is not None:  # reuse the model of an earlier run in --work
        exported = exported.parent
    else:
        exported = megfm.pretrain(pre_store, run, model=ModelConfig.preset(args.preset),
                       max_steps=args.max_steps, batch_size=args.batch_size, seed=0,
                       callbacks=[Timer(duration=timedelta(minutes=args.minutes))],
                       progress=False, overwrite=True)
    model = megfm.load_pretrained(exported)
    model.eval()
    lap("pretrain")
    # the newest log: a run extended with --resume logs each extension in its own version
    metrics = max(run.glob("**/metrics.csv"), key=lambda f: f.stat().st_mtime,
                  default=run / "metrics.csv")
    report["pretrain"] = {"preset": args.preset, "n_params": model.num_parameters(),
                          "minutes_budget": args.minutes}
    if metrics.exists():
        import csv

        rows = list(csv.DictReader(metrics.open()))
        steps = [int(r["step"]) for r in rows if r.get("step")]
        train = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
        val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
        report["pretrain"].update(steps=max(steps) if steps else None,
                                  train_loss_first=train[0] if train else None,
                                  train_loss_last=train[-1] if train else None,
                                  val_loss=val)
    print("pretrain:", report["pretrain"], flush=True)

    if "recon" not in skip:
        rec = megfm.evaluate_reconstruction(model, study_store, max_windows=args.recon_windows,
                                            evoked=False)
        report["reconstruction"] = {m: {k: v for k, v in d.items() if k != "per_state"}
                                    for m, d in rec["modes"].items()}
        s, t = rec["modes"]["sensor"], rec["modes"]["time"]
        print(f"recon: sensor NMSE model {s['model']['nmse']:.3f} vs MNE {s['mne']['nmse']:.3f} "
              f"({s['model']['nmse'] / s['mne']['nmse']:.2f}x, target <= 0.8x); time NMSE model "
              f"{t['model']['nmse']:.3f} vs cubic {t['spline']['nmse']:.3f} "
              f"({t['model']['nmse'] / t['spline']['nmse']:.3g}x)", flush=True)
        lap("reconstruction")

    if "oracle" not in skip:
        report["linear_oracle"] = linear_oracle(pre_store, study_store)
        print(f"linear oracle (sensor masking, covariance of the pretraining windows): NMSE "
              f"{ {k: round(v, 3) for k, v in report['linear_oracle'].items()} }", flush=True)
        lap("linear oracle")

    if "attention" not in skip:
        report["attention"] = attention_scores(model, study_store, truth, tmin=-0.2)
        for state in ("auditory", "somatosensory"):
            a = report["attention"][state]
            print(f"attention {state}: whole {a['attention']:.2f}x, per type "
                  f"{ {k: round(v, 2) for k, v in a['attention_per_type'].items()} }, event-related "
                  f"{a['attention_event_related']:.2f}x | power {a['power']:.2f}x, power "
                  f"event-related {a['power_event_related']:.2f}x", flush=True)
        lap("attention")

    if "study" not in skip:
        report["study"] = study(model, study_store, n_splits=5, n_permutations=200, seed=0,
                                finetune_steps=args.finetune_steps)
        _print_study("study", report["study"])
        lap("study")

    if "null" not in skip:
        null_store, _ = simulate_and_prepare(work, "null", n_subjects=args.study_subjects,
                                             duration=args.study_duration, seed=303,
                                             effect_scale=0.0)
        report["null_study"] = study(model, null_store, n_splits=5, n_permutations=200, seed=0)
        _print_study("null", report["null_study"])
        lap("null study")

    if "cross" not in skip:
        cross = {}
        same = report.get("reconstruction") or {
            m: d for m, d in megfm.evaluate_reconstruction(
                model, study_store, max_windows=args.recon_windows, evoked=False,
                modes=("random", "sensor"))["modes"].items()}
        cross["vectorview"] = {m: same[m]["model"]["nmse"] for m in ("random", "sensor")}
        for array in ("ctf275", "kit160", "opm"):
            store, _ = simulate_and_prepare(work, f"cross_{array}", n_subjects=3,
                                            duration=args.study_duration, seed=404,
                                            array=array, states=["rest", "auditory"])
            # no baselines: MNE interpolation of each window costs ~1 s
            rec = megfm.evaluate_reconstruction(model, store, max_windows=args.recon_windows // 2,
                                                evoked=False, modes=("random", "sensor"),
                                                baselines=False)
            cross[array] = {m: rec["modes"][m]["model"]["nmse"] for m in ("random", "sensor")}
            print(f"cross-device {array}: NMSE random {cross[array]['random']:.3f} sensor "
                  f"{cross[array]['sensor']:.3f} (vectorview {cross['vectorview']['random']:.3f}"
                  f" / {cross['vectorview']['sensor']:.3f})", flush=True)
        report["cross_device"] = cross
        lap("cross-device")

    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out_path, report, default=float)
    print(f"wrote {out_path}")
    if tmp is not None:
        tmp.cleanup()
    return 0


def _print_study(name: str, res: dict) -> None:
    for method, m in res["methods"].items():
        a = m["auroc"]
        print(f"{name}: {method:20s} AUROC {a['value']:.3f} [{a['ci_low']:.3f}, "
              f"{a['ci_high']:.3f}]", flush=True)
    for c in res["comparisons"]:
        print(f"{name}: {c['reference']} - {c['other']}: {c['difference']:+.3f}, "
              f"p = {c['p_value']}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
