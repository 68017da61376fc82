"""``megfm demo OUT``: the main job end to end on a small simulated cohort."""

from __future__ import annotations

import argparse
from dataclasses import fields


def add_parser(subparsers) -> None:
    """Register ``megfm demo``."""
    from ..pipeline import DemoConfig

    p = subparsers.add_parser(
        "demo",
        help="simulate a cohort, pretrain, embed, classify migraine vs HC, draw attention maps",
        description="Run the whole pipeline on a small simulated cohort (rest, auditory, "
        "somatosensory; HC and migraine) and write OUT/report.md linking tables and figures.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("out", help="output folder (created)")
    defaults = DemoConfig()
    helps = {
        "n_subjects": "number of simulated subjects (half HC, half migraine)",
        "array": "simulated MEG system (vectorview, ctf275, kit160, bti248, opm)",
        "duration": "seconds recorded per state and subject",
        "sim_sfreq": "sampling rate of the simulation in Hz (prepare resamples to 200 Hz)",
        "window_seconds": "window length in seconds",
        "block_size": "stimuli per block in the task states",
        "preset": "model preset (tiny, small, base)",
        "max_steps": "pretraining steps",
        "batch_size": "pretraining batch size",
        "n_splits": "subject-level cross-validation folds",
        "n_permutations": "label permutations (each refits the classifiers) of the "
                          "p-values and intervals",
        "seed": "random seed of every stage",
    }
    for f in fields(DemoConfig):
        if f.name not in helps:
            continue
        value = getattr(defaults, f.name)
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=value,
                       help=helps[f.name])
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..pipeline import DemoConfig, run_demo

    config = DemoConfig(**{f.name: getattr(args, f.name) for f in fields(DemoConfig)
                           if hasattr(args, f.name)})
    summary = run_demo(args.out, config, progress=not args.no_progress)
    print("\nmegfm demo finished")
    for row in summary["timings"]:
        print(f"  {row['stage']:<10} {row['seconds']:>7.1f} s")
    study = summary["study"]
    print(f"\n{study['task']}, {study['n_subjects']} subjects, subject-level CV: AUROC [95% "
          "interval], p vs chance (label permutations)")
    for method, metrics in study["methods"].items():
        auroc, p = metrics["auroc"], study["chance"].get(method)
        print(f"  {method:<18} {auroc['value']:.3f} [{auroc['ci_low']:.3f}, {auroc['ci_high']:.3f}]"
              + ("" if p is None else f"  p {p:.3f}"))
    print("attention alignment with the expected sensors (x uniform):")
    events = summary.get("event_attention_alignment", {})
    for state, score in summary["attention_alignment"].items():
        extra = f"   event-related change {events[state]:.2f}" if state in events else ""
        print(f"  {state:<18} {score:.2f}{extra}")
    print(f"report: {args.out}/report.md")
    return 0
