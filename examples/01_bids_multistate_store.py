"""Read a multi-state BIDS dataset with megfm, build a store and stream it.

What it shows
-------------
1. ``megfm.simulate_cohort(..., bids=True)`` writes a small BIDS dataset: every subject
   recorded at rest and in auditory and somatosensory tasks (``task-<state>`` entities),
   with a ``participants.tsv`` holding the groups (HC, migraine).
2. ``megfm.read_raw`` reads one BIDS file (through mne-bids, events and all).
3. ``megfm.prepare`` on the BIDS *root* finds every recording, takes the state from the
   ``task`` entity and the label from ``participants.tsv``, preprocesses (notch, band-pass,
   resample, bad channels and spans, fT units) and cuts state-aware windows: fixed-length
   windows at rest, event-locked epochs in the tasks. It writes an HDF5 store.
4. ``megfm.WindowDataset`` streams the store lazily (bounded memory) into a torch
   ``DataLoader`` with ``collate_windows``, here keeping the task states only.

On your own data, point ``prepare`` at your BIDS root instead of the simulated one.

Run
---
    python examples/01_bids_multistate_store.py --quick --out /tmp/ex01

Writes ``bids/`` (the dataset), ``store/``, ``windows_per_state.png`` and
``example_windows.png`` in ``--out`` (default: a new temporary folder).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write PNGs, no window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick_data import default_out  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny cohort (4 subjects x 36 s per state) for a fast check")
    parser.add_argument("--out", default=None,
                        help="output folder (default: a new temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else default_out("01")
    out.mkdir(parents=True, exist_ok=True)

    import torch
    from mne_bids import BIDSPath

    import megfm
    from megfm.data import collate_windows

    # --- 1. a small BIDS dataset of several states --------------------------------------
    n_subjects, duration, sfreq = (4, 36.0, 250.0) if args.quick else (10, 120.0, 600.0)
    bids_root = out / "bids"
    sim = megfm.simulate_cohort(bids_root, n_subjects=n_subjects, groups=("HC", "migraine"),
                                states=("rest", "auditory", "somatosensory"),
                                array="vectorview", duration=duration, sfreq=sfreq,
                                block_size=6 if args.quick else 20, bids=True, seed=0,
                                verbose=False)
    print(f"simulated {len(sim['recordings'])} BIDS recordings in {bids_root}")

    # --- 2. read one recording the BIDS way ----------------------------------------------
    # A BIDSPath (or simply the path of a sub-* file below the dataset root) goes through
    # mne_bids.read_raw_bids, so events.tsv / channels.tsv are honoured.
    bids_path = BIDSPath(subject="001", task="auditory", datatype="meg", suffix="meg",
                         extension=".fif", root=bids_root)
    raw = megfm.read_raw(bids_path, verbose=False)
    n_meg = len(raw.copy().pick("meg").ch_names)
    print(f"read {bids_path.basename}: {n_meg} MEG channels, {raw.info['sfreq']:.0f} Hz, "
          f"{raw.times[-1]:.1f} s, {len(raw.annotations)} annotations")

    # --- 3. the whole BIDS root -> a store -------------------------------------------------
    # state=None: the state comes from the BIDS task entity of each file.
    store = out / "store"
    summary = megfm.prepare([bids_root], store, window_seconds=1.0, progress=False,
                            verbose=False)
    print(f"store {store}: {summary['recordings']} recordings, {summary['windows']} windows")
    windows = megfm.read_store(store)  # metadata only is what we need here
    meta = windows.metadata
    print(f"{'state':<15}{'windows':>8}{'subjects':>10}{'HC':>6}{'migraine':>10}")
    for state in sorted(summary["windows_per_state"]):
        sel = meta["state"] == state
        labels = Counter(meta["label"][sel])
        print(f"{state:<15}{summary['windows_per_state'][state]:>8}"
              f"{len(set(meta['subject'][sel])):>10}{labels['HC']:>6}{labels['migraine']:>10}")

    # --- 4. stream it with a torch DataLoader ----------------------------------------------
    # Only the task states, read window by window from the HDF5 shards.
    dataset = megfm.WindowDataset(store, states=["auditory", "somatosensory"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True,
                                         collate_fn=collate_windows,
                                         generator=torch.Generator().manual_seed(0))
    n_seen = 0
    for batch in loader:
        n_seen += batch["x"].shape[0]
    print(f"streamed {n_seen} task windows; last batch: "
          + ", ".join(f"{k} {tuple(v.shape)}" for k, v in batch.items()))

    # --- figures ----------------------------------------------------------------------------
    states = sorted(summary["windows_per_state"])
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(states, [summary["windows_per_state"][s] for s in states], color="C0")
    ax.set_ylabel("windows")
    ax.set_title("Windows per state in the store")
    fig.tight_layout()
    fig.savefig(out / "windows_per_state.png", dpi=100)
    plt.close(fig)

    # one window of each state: the magnetometer with the largest variance, in fT
    times = np.arange(windows.n_times) / windows.sfreq
    fig, axes = plt.subplots(len(states), 1, figsize=(6, 1.8 * len(states)), sharex=True)
    for ax, state in zip(np.atleast_1d(axes), states, strict=True):
        i = int(np.flatnonzero(meta["state"] == state)[0])
        x = windows.data[i]
        ch = int(np.argmax(x.var(axis=1)))
        ax.plot(times, x[ch], lw=0.8)
        ax.set_title(f"{state}: {meta['subject'][i]}, sensor {ch}", fontsize=9)
        ax.set_ylabel("fT or fT/cm", fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("time in window (s)")
    fig.tight_layout()
    fig.savefig(out / "example_windows.png", dpi=100)
    plt.close(fig)
    print(f"figures: {out / 'windows_per_state.png'}, {out / 'example_windows.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
