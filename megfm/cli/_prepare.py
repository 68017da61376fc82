"""``megfm prepare``: recordings -> preprocessed, windowed HDF5 store."""

from __future__ import annotations

import argparse
import dataclasses
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``megfm prepare``."""
    parser = subparsers.add_parser(
        "prepare",
        help="read, preprocess and window MEG recordings into an HDF5 store",
        description="Read MEG recordings (FIF, CTF .ds, KIT .con/.sqd, BTi, FIL OPM, or a BIDS "
        "dataset), preprocess them (MEG sensors, bad channels, notch, band-pass, resample, "
        "fT units), cut state-aware windows and append them to a store. The state of each "
        "recording comes from --state or from 'task-<state>' in its file name (or, with "
        "--segment, from its annotations); windows of task states lock to their events "
        "(--events, --tmin); the label comes from the 'group' column of a participants.tsv "
        "in or above its folder.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="recording files, CTF .ds folders, folders to search, or a BIDS root")
    parser.add_argument("--out", required=True, metavar="STORE",
                        help="store folder to create, or to append to when it is a store "
                        "(recordings it already holds with the same settings are skipped)")
    parser.add_argument("--state", default=None,
                        help="state of every recording (e.g. rest, auditory, somatosensory); "
                        "default: the 'task-<state>' entity of each file name")
    parser.add_argument("--events", action="append", default=None,
                        metavar="STATE=CODES|JSON",
                        help="event codes of a state, windows locked to them, e.g. "
                        "'auditory=5,6' or 'auditory=tone:5,noise:6' (repeat per state), or a "
                        'JSON file {"auditory": [5, 6], "somatosensory": [32]}; default: '
                        "auditory=1, somatosensory=2, fixed-length windows for other states")
    parser.add_argument("--tmin", type=float, default=-0.2, metavar="SECONDS",
                        help="start of an event-locked window relative to its event "
                        "(default: -0.2)")
    parser.add_argument("--segment", action="append", default=None,
                        metavar="DESCRIPTION[=STATE]",
                        help="cut each recording by its annotations into the states it holds "
                        "in sequence: an annotation DESCRIPTION marks a stretch of STATE "
                        "(a bare name: an annotation named after its state); repeat per "
                        "state; excludes --state")
    parser.add_argument("--window", type=float, default=2.0, metavar="SECONDS",
                        help="window duration in seconds (default: 2.0)")
    parser.add_argument("--overlap", type=float, default=0.0, metavar="SECONDS",
                        help="overlap of resting-state windows in seconds (default: 0)")
    parser.add_argument("--config", default=None, metavar="PREP_JSON",
                        help="JSON file of PreprocessConfig parameters (default: built-in "
                        "defaults: 50 Hz notch, 0.5-80 Hz band-pass, 200 Hz)")
    parser.add_argument("--line-freq", type=float, default=None, metavar="HZ",
                        help="power-line frequency to notch (50 or 60 Hz); overrides --config")
    parser.add_argument("--participants", default=None, metavar="TSV",
                        help="participants.tsv with participant_id and group columns "
                        "(default: found in or above each recording's folder)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="on-disk sample type of the store (default: float32)")
    parser.add_argument("--compression", choices=("gzip", "lzf"), default=None,
                        help="HDF5 compression of the store (default: none)")
    parser.add_argument("--min-valid-fraction", type=float, default=0.5, metavar="FRACTION",
                        help="refuse (or with --skip-errors skip) a recording with fewer usable "
                        "MEG sensors than this fraction, and drop windows with fewer valid "
                        "sensors (default: 0.5)")
    parser.add_argument("--skip-errors", action="store_true",
                        help="skip recordings that cannot be prepared (unreadable, truncated, "
                        "too few usable sensors, ...) instead of stopping; they are listed at "
                        "the end")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as JSON instead of a table")
    parser.set_defaults(func=run)
    return parser


def _dropped(counts: dict) -> int:
    """Windows dropped, for every reason, of a summary or one of its rows."""
    return sum(int(counts.get(k, 0)) for k in ("rejected", "dropped_bad_span", "amplitude",
                                               "few_sensors"))


def _table(summary: dict) -> list[str]:
    """Per-recording rows and totals of the recordings written."""
    header = f"{'recording':<44} {'subject':<12} {'state':<14} {'label':<9} {'sensors':>7} " \
             f"{'bad':>4} {'windows':>7} {'rejected':>8}"
    lines = [header, "-" * len(header)]
    for r in summary["per_recording"]:
        name = r["file"].rsplit("/", 1)[-1]
        name = name if len(name) <= 44 else "..." + name[-41:]
        lines.append(f"{name:<44} {r['subject'][:12]:<12} {r['state'][:14]:<14} "
                     f"{(r['label'] or '-')[:9]:<9} {r['sensors']:>7} {r['bad_channels']:>4} "
                     f"{r['windows']:>7} "
                     f"{_dropped(r):>8}")
    lines.append("-" * len(header))
    per_state = ", ".join(f"{k}: {v}" for k, v in summary["windows_per_state"].items())
    sensors = ", ".join(f"{k} sensors x {v}" for k, v in summary["sensors"].items())
    lines.append(f"recordings: {summary['recordings']}   windows: {summary['windows']} "
                 f"({per_state})")
    lines.append(f"sensor layouts: {sensors}")
    lines.append(f"rejected windows: {_dropped(summary)} = {summary['dropped_bad_span']} (BAD "
                 f"span / edge) + {summary.get('amplitude', 0)} (amplitude after filtering) + "
                 f"{summary.get('few_sensors', 0)} (too few valid sensors) + "
                 f"{summary['rejected']} (peak-to-peak)")
    return lines


def format_summary(summary: dict) -> str:
    """Render a :func:`megfm.data.prepare.prepare` summary as a plain-text table."""
    lines = [f"store: {summary['store']}  ({summary['sfreq']:g} Hz, "
             f"{summary['window_seconds']:g} s windows)"]
    if summary["per_recording"]:
        lines += _table(summary)
    else:
        lines.append("no new recording written")
    if summary.get("already_in_store"):
        lines.append(f"already in the store with the same settings (not written again): "
                     f"{len(summary['already_in_store'])} recording(s); the store now holds "
                     f"{summary['store_windows']} windows")
    if summary["skipped"]:
        lines.append(f"skipped {len(summary['skipped'])} recording(s):")
        lines += [f"  {s['file']}: {s['error']}" for s in summary["skipped"]]
    lines.append(f"time: {summary['seconds']:.1f} s")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``megfm prepare`` and print its summary."""
    from ..data.prepare import prepare
    from ..data.preprocess import PreprocessConfig

    config = args.config
    if args.line_freq is not None:
        base = PreprocessConfig.from_json(config) if config else PreprocessConfig()
        config = dataclasses.replace(base, line_freq=args.line_freq)
    summary = prepare(args.inputs, args.out, state=args.state, window_seconds=args.window,
                      overlap=args.overlap, config=config, participants=args.participants,
                      dtype=args.dtype, compression=args.compression,
                      min_valid_fraction=args.min_valid_fraction, events=args.events,
                      tmin=args.tmin, segments=args.segment,
                      skip_errors=args.skip_errors, progress=not args.no_progress)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0
