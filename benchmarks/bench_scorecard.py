"""Scorecard of one pretraining recipe on simulated cohorts it never saw (issue 17's targets).

1. Simulate a pretraining cohort (HC and migraine, rest / auditory / somatosensory; labels
   unused) and pretrain a preset for a wall-clock budget (or take ``--checkpoint``).
2. For each study seed, a separate labelled cohort (default 120 subjects):
   :func:`megfm.evaluate.scorecard` -- megfm features against raw signals,
   relative band power, Riemannian tangent-space covariances, megfm + band power and the
   same encoder with random weights (3 seeds), 5 subject folds, 200 label permutations; linear
   probes of relative band power per encoder block; subject-identity variance.
3. The same on an effect-0 cohort (every method's interval should cover 0.5, and no p vs
   chance fall below 0.05) and on a simulated CTF-275 cohort (another array, same model).

Run::

    python benchmarks/bench_scorecard.py --quick       # ~3 min
    python benchmarks/bench_scorecard.py --work WORK --out benchmarks/results/scorecard.json

Without ``--out`` the JSON goes to the git-ignored ``benchmarks/scratch/``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
from _results import parse_args, write_json

import megfm
from megfm.evaluate.card import scorecard
from megfm.models import ModelConfig

STATES = ["rest", "auditory", "somatosensory"]


def cohort_store(work: Path, name: str, *, n_subjects: int, duration: float, seed: int,
                 window: float, array: str = "vectorview", effect_scale: float = 1.0,
                 groups=("HC", "migraine")) -> Path:
    """Simulate a cohort and prepare it into a store (both reused when present)."""
    cohort = work / f"{name}_cohort"
    store = work / f"{name}_store_w{window:g}"
    if not (cohort / "ground_truth.json").is_file():
        megfm.simulate_cohort(cohort, n_subjects=n_subjects, groups=groups, states=STATES,
                              array=array, duration=duration, sfreq=400.0, block_size=10,
                              effect_scale=effect_scale, seed=seed, verbose=False)
    if not store.exists():
        megfm.prepare([cohort], store, window_seconds=window, progress=False, verbose=False)
    return store


def card_summary(card) -> dict:
    """The JSON part of a scorecard plus the headline numbers."""
    out = card.summary()
    out["headline"] = {
        "megfm": card.auroc("megfm"),
        "raw": card.auroc("raw") if "raw/logreg" in card.study.metrics else None,
        "spectral": card.auroc("spectral") if "spectral/logreg" in card.study.metrics else None,
        "planted_probe_r2": card.planted_probe() if card.planted_bands else None,
    }
    return out


def print_card(name: str, summary: dict) -> None:
    print(f"\n== {name} ({summary['n_subjects']} subjects)")
    for m, a in summary["methods"].items():
        p = summary["chance"].get(m)
        print(f"  {m:24s} AUROC {a['value']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]"
              + ("" if p is None else f"  p vs chance {p:.4f}"))
    for c in summary["comparisons"]:
        p = "n/a" if c["p_value"] is None else f"{c['p_value']:.4f}"
        print(f"  {c['reference']} - {c['other']}: {c['difference']:+.3f} (p = {p})")
    for layer, r2 in summary["probes"].items():
        print(f"  probe {layer:10s} " + " ".join(f"{b} {v:+.3f}" for b, v in r2.items()))
    print("  subject variance " + ", ".join(f"{k} {v:.3f}"
                                            for k, v in summary["subject_variance"].items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model, small cohorts (~3 min)")
    ap.add_argument("--checkpoint", default=None, help="score this model instead of pretraining")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a ModelConfig field of the preset (VALUE read as JSON)")
    ap.add_argument("--minutes", type=float, default=20.0, help="pretraining wall-clock budget")
    ap.add_argument("--max-steps", type=int, default=2000,
                    help="steps of the learning-rate schedule (stops at the budget first)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--window", type=float, default=4.0, help="window length in seconds")
    ap.add_argument("--pretrain-subjects", type=int, default=24)
    ap.add_argument("--study-subjects", type=int, default=120)
    ap.add_argument("--study-seeds", default="202,203")
    ap.add_argument("--random-seeds", default="0,1,2")
    ap.add_argument("--permutations", type=int, default=200,
                    help="label permutations refitted by the study (default: %(default)s)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: null,ctf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=1,
                    help="processes refitting the label permutations (default: %(default)s)")
    ap.add_argument("--work", default=None, help="folder kept for cohorts, stores and model")
    args = parse_args(ap, argv, "scorecard")
    if args.quick:
        args.preset, args.minutes, args.max_steps = "tiny", 1.0, 40
        args.pretrain_subjects, args.study_subjects, args.study_seeds = 4, 12, "202"
        args.random_seeds, args.permutations = "0", 20
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory() if args.work is None else None
    work = Path(tmp.name if tmp else args.work)
    work.mkdir(parents=True, exist_ok=True)
    duration = 20.0 if args.quick else 40.0
    random_seeds = tuple(int(s) for s in args.random_seeds.split(",") if s)
    report: dict = {"args": vars(args), "timings": {}}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        report["timings"][name] = round(time.perf_counter() - t0, 1)
        print(f"[{report['timings'][name]:7.1f} s] {name}", flush=True)

    if args.checkpoint:
        model_dir = Path(args.checkpoint)
    else:
        from lightning.pytorch.callbacks import Timer

        overrides = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
        pre = cohort_store(work, "pretrain", n_subjects=args.pretrain_subjects,
                           duration=20.0 if args.quick else 60.0, seed=101, window=args.window)
        lap("simulate + prepare (pretraining cohort)")
        model_dir = work / "model"
        if not (model_dir / "model" / "config.json").is_file():
            megfm.pretrain(pre, model_dir, model=ModelConfig.preset(args.preset, **overrides),
                           max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                           seed=0, callbacks=[Timer(duration=timedelta(minutes=args.minutes))],
                           progress=False, overwrite=True)
        lap("pretrain")
    model = megfm.load_pretrained(model_dir / "model" if (model_dir / "model").is_dir()
                                  else model_dir).eval()
    report["model"] = {"config": model.config.to_dict(), "n_params": model.num_parameters()}
    kw = dict(random_seeds=random_seeds, n_permutations=args.permutations, n_jobs=args.jobs,
              progress=False)
    report["studies"] = {}
    for seed in [int(s) for s in args.study_seeds.split(",") if s]:
        store = cohort_store(work, f"study{seed}_n{args.study_subjects}",
                             n_subjects=args.study_subjects, duration=duration, seed=seed,
                             window=args.window)
        summary = card_summary(scorecard(model, store, **kw))
        report["studies"][str(seed)] = summary
        print_card(f"study seed {seed}", summary)
        lap(f"scorecard seed {seed}")
    skip = set(filter(None, args.skip.split(",")))
    if "null" not in skip:
        store = cohort_store(work, f"null_n{args.study_subjects}", n_subjects=args.study_subjects,
                             duration=duration, seed=303, window=args.window, effect_scale=0.0)
        summary = card_summary(scorecard(model, store, probe_bands=["theta", "alpha"], **kw))
        summary["ci_covers_chance"] = {m: a["ci_low"] <= 0.5 <= a["ci_high"]
                                       for m, a in summary["methods"].items()}
        summary["above_chance_p05"] = sorted(m for m, p in summary["chance"].items() if p < 0.05)
        report["null"] = summary
        print_card("effect 0", summary)
        lap("scorecard effect 0")
    if "ctf" not in skip:
        store = cohort_store(work, f"ctf275_n{args.study_subjects}", n_subjects=args.study_subjects,
                             duration=duration, seed=404, window=args.window, array="ctf275")
        summary = card_summary(scorecard(model, store, random_seeds=(), probe_bands=None,
                                         baselines=("raw", "spectral"),
                                         n_permutations=args.permutations, n_jobs=args.jobs,
                                         progress=False))
        report["ctf275"] = summary
        print_card("CTF-275", summary)
        lap("scorecard CTF-275")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"wrote {write_json(args.out, report, default=float)}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
