"""``megfm simulate``: write a simulated multi-state cohort with planted ground truth."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``megfm simulate``."""
    from ..simulate.arrays import ARRAY_KINDS
    from ..simulate.effects import GROUPS
    from ..simulate.states import STATES

    parser = subparsers.add_parser(
        "simulate",
        help="simulate a cohort of MEG recordings (FIF or BIDS) with planted group effects",
        description="Simulate subjects x states MEG recordings on a sensor array, with "
        "literature-sized group effects, and write participants.tsv and ground_truth.json.",
    )
    parser.add_argument("out", metavar="OUT", help="output folder (created)")
    parser.add_argument("--subjects", type=int, default=20,
                        help="number of subjects, assigned to the groups in turn (default 20)")
    parser.add_argument("--array", default="vectorview",
                        help=f"sensor array: {', '.join(ARRAY_KINDS)}, or the path of a "
                        "recording whose sensor layout to use (default vectorview)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--groups", default="HC,migraine",
                        help=f"comma-separated groups among {', '.join(GROUPS)} "
                        "(default HC,migraine)")
    parser.add_argument("--states", default=",".join(STATES),
                        help=f"comma-separated states among {', '.join(STATES)} "
                        "(default all)")
    parser.add_argument("--duration", type=float, default=120.0,
                        help="length of each recording in seconds (default 120)")
    parser.add_argument("--sfreq", type=float, default=1000.0,
                        help="sampling frequency in Hz (default 1000)")
    parser.add_argument("--effect-scale", type=float, default=1.0,
                        help="multiplies every planted group difference; 0 = no effect "
                        "(default 1)")
    parser.add_argument("--block-size", type=int, default=20,
                        help="stimuli per block in task states (default 20)")
    parser.add_argument("--no-paired-pulse", action="store_true",
                        help="single somatosensory pulses instead of pairs 500 ms apart")
    parser.add_argument("--bids", action="store_true",
                        help="write a BIDS layout (sub-001/meg/sub-001_task-rest_meg.fif) "
                        "with mne-bids")
    parser.add_argument("--bem", default=None,
                        help="BEM solution file (-bem-sol.fif) for the forward model "
                        "(default: a sphere model)")
    parser.add_argument("--trans", default=None,
                        help="head <-> MRI transform of --bem (-trans.fif; default identity)")
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="parallel workers over subjects (default 1)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``megfm simulate`` with parsed arguments; returns the exit code."""
    from pathlib import Path

    import mne

    from ..simulate import simulate_cohort
    from ..simulate.arrays import ARRAY_KINDS

    array = args.array
    if array not in ARRAY_KINDS:
        path = Path(array)
        if not path.exists():
            raise ValueError(f"Invalid value for '--array': expected one of "
                             f"{', '.join(ARRAY_KINDS)} or the path of a recording; "
                             f"got {array!r}.")
        array = mne.io.read_info(path, verbose=False)
    result = simulate_cohort(
        args.out, n_subjects=args.subjects, groups=args.groups, states=args.states,
        array=array, duration=args.duration, sfreq=args.sfreq,
        effect_scale=args.effect_scale, block_size=args.block_size,
        paired_pulse=not args.no_paired_pulse, bids=args.bids, n_jobs=args.n_jobs,
        seed=args.seed, bem=args.bem, trans=args.trans)
    groups = {}
    for rec in result["recordings"]:
        groups.setdefault(rec["group"], set()).add(rec["subject"])
    print(f"wrote {len(result['recordings'])} recordings of {args.subjects} subjects to "
          f"{result['out_dir']}")
    for name, subs in groups.items():
        print(f"  {name}: {len(subs)} subjects")
    print(f"  planted effects: {len(result['ground_truth']['effects'])} "
          f"(see {result['ground_truth_path']})")
    return 0
