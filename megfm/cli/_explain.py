"""``megfm explain``: attention topomaps per state, explain.json, and alignment scores."""

from __future__ import annotations

import argparse

from ._options import MODEL_HELP, STORE_HELP


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``megfm explain``."""
    parser = subparsers.add_parser(
        "explain",
        help="attention topomaps per state and explain.json (weights, alignment, regions)",
        description="Compute the spatial attention maps (and attention rollout) of a "
        "pretrained checkpoint on the windows of a store, averaged per state; write one "
        "topomap PNG per state (one panel per sensor type) and explain.json with the "
        "per-sensor weights and channel names. Event-locked states (stimuli) also get "
        "the event-related attention change (event_<state>.png: the sensors whose share of "
        "attention grows after the stimulus). When the store comes from the simulator and "
        "its ground_truth.json is found (or given), add the alignment score of each state "
        "with its expected sensors and a ranked table of the simulator's regions.",
    )
    parser.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("store", metavar="STORE", help=STORE_HELP)
    parser.add_argument("--out", required=True,
                        help="output folder for the PNGs and explain.json (created)")
    parser.add_argument("--ground-truth", default=None,
                        help="the simulator's ground_truth.json (or its folder); searched next "
                        "to / above the store's sources and the store when not given")
    parser.add_argument("--states", default=None,
                        help="comma-separated states to explain (default: every state in the "
                        "store); a state absent from the store is an error")
    parser.add_argument("--by", default="state",
                        help="comma-separated metadata columns that define the groups, e.g. "
                        "'state' (default) or 'state,label' for state x group maps")
    parser.add_argument("--no-rollout", action="store_true",
                        help="skip attention rollout through the temporal blocks")
    parser.add_argument("--no-regions", action="store_true",
                        help="skip the source projection and region table (needs the "
                        "simulator's ground truth)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="windows per forward pass (default 16)")
    parser.add_argument("--device", default="cpu",
                        help="torch device for the model, e.g. cpu or cuda (default cpu)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``megfm explain`` with parsed arguments; returns the exit code."""
    import json
    from pathlib import Path

    import numpy as np

    from .._io import atomic_write_text
    from ..data.store import read_store
    from ..explain.alignment import find_ground_truth
    from ..explain.attention import attention_maps
    from ..explain.plotting import plot_state_topomaps
    from ..explain.regions import rank_regions
    from ..models import load_pretrained

    out = Path(args.out)
    by = tuple(c.strip() for c in args.by.split(",") if c.strip())
    states = None if args.states is None else [s.strip() for s in args.states.split(",")
                                                if s.strip()]
    truth_path = find_ground_truth(args.store, args.ground_truth)
    model = load_pretrained(args.checkpoint, map_location=args.device)
    windows = read_store(args.store)
    maps = attention_maps(model, windows, by=by, states=states, rollout=not args.no_rollout,
                          batch_size=args.batch_size)
    figures = plot_state_topomaps(maps, out, kind="spatial", prefix="attention")
    if not args.no_rollout:
        figures += plot_state_topomaps(maps, out, kind="rollout", prefix="rollout")
    # event-locked groups (stimulus states) also get the event-related attention change
    locked = [key for key in maps.keys if "/".join(key) in maps.info.get("event_locked", [])]
    if locked:
        figures += plot_state_topomaps(maps, out, kind="event", states=locked, prefix="event")

    truth = json.loads(truth_path.read_text()) if truth_path is not None else None
    dev_head_t = None
    if truth is not None and truth.get("regions") and not args.no_regions:
        from ..simulate import sensor_array

        try:
            dev_head_t = sensor_array(truth["array"])["dev_head_t"]
        except (KeyError, ValueError, TypeError):
            dev_head_t = None  # a user-supplied array: positions taken as head frame
    result: dict = {
        "checkpoint": str(args.checkpoint),
        "store": str(args.store),
        "ground_truth": None if truth_path is None else str(truth_path),
        "by": list(by),
        "patch_seconds": maps.patch_seconds,
        "channel_names": maps.names,
        "sensor_types": maps.geometry.type_names,
        "groups": {},
        "figures": [str(f.name) for f in figures],
    }
    expected = (truth or {}).get("expected_sensors", {})
    kinds = ["spatial"] + ([] if args.no_rollout else ["rollout"])
    for key in maps.keys:
        label = "/".join(key)
        weights = maps.get(key)
        entry: dict = {
            "n_windows": int(maps.n_windows[key]),
            "weights": [None if not np.isfinite(v) else float(v) for v in weights],
            "top_sensors": [maps.names[i] for i in np.argsort(np.nan_to_num(weights,
                                                                            nan=-1.0))[::-1][:10]],
        }
        if not args.no_rollout:
            entry["rollout"] = [None if not np.isfinite(v) else float(v)
                                for v in maps.get(key, kind="rollout")]
        if key in locked:
            entry["event_related"] = [None if not np.isfinite(v) else float(v)
                                      for v in maps.get(key, kind="event")]
        names = expected.get(key[0])
        if names:
            entry["alignment"] = {k: maps.alignment(names, key, kind=k)
                                  for k in kinds + (["event"] if key in locked else [])}
            entry["n_expected_sensors"] = len(names)
        if truth is not None and truth.get("regions") and not args.no_regions:
            present = np.isfinite(weights)
            table = rank_regions(np.where(present, weights, np.nan), maps.geometry,
                                 truth["regions"], dev_head_t=dev_head_t)
            entry["regions"] = table
        result["groups"][label] = entry
    out.mkdir(parents=True, exist_ok=True)
    path = out / "explain.json"
    atomic_write_text(path, json.dumps(result, indent=1))

    print(f"explained {windows.n_windows if states is None else sum(maps.n_windows.values())} "
          f"windows in {len(maps.keys)} group(s); wrote {len(figures)} PNG(s) and {path}")
    for label, entry in result["groups"].items():
        line = f"  {label:<24} n={entry['n_windows']:<5} top: {', '.join(entry['top_sensors'][:3])}"
        if "alignment" in entry:
            line += "  alignment " + ", ".join(f"{k}={v:.2f}x" for k, v in
                                              entry["alignment"].items())
        if "regions" in entry:
            line += f"  top region: {entry['regions'][0]['region']}"
        print(line)
    if truth_path is None:
        print("  (no ground_truth.json found: alignment scores and regions left out)")
    return 0
