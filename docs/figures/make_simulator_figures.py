"""Make the figures of docs/simulator.md from a small simulated cohort.

Run from the repository root::

    python docs/figures/make_simulator_figures.py

Writes ``docs/figures/simulator_psd.png``, ``docs/figures/simulator_evoked_topomaps.png``
and ``docs/figures/simulator_theta_groups.png``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mne  # noqa: E402
import numpy as np  # noqa: E402

from megfm.simulate import simulate_cohort  # noqa: E402

HERE = Path(__file__).parent


def _evoked(path, event_id, tmin=-0.1, tmax=0.3):
    raw = mne.io.read_raw_fif(path, verbose=False)
    events = mne.find_events(raw, stim_channel="STI 014", verbose=False)
    return mne.Epochs(raw, events, event_id, tmin, tmax, baseline=(None, 0), picks="meg",
                      verbose=False).average()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        result = simulate_cohort(out, n_subjects=8, groups=["HC", "migraine"],
                                 array="vectorview", duration=120.0, sfreq=500.0,
                                 block_size=20, seed=0, verbose=False)
        recs = result["recordings"]

        # 1. resting PSD of each subject (magnetometers, mean over sensors)
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for rec in recs:
            if rec["state"] != "rest":
                continue
            raw = mne.io.read_raw_fif(rec["path"], verbose=False).pick("mag")
            psd = raw.compute_psd(fmin=1.0, fmax=100.0, n_fft=2000, verbose=False)
            color = "tab:blue" if rec["group"] == "HC" else "tab:red"
            ax.loglog(psd.freqs, psd.get_data().mean(0) * 1e30, color=color, lw=1,
                      alpha=0.8)
        ax.plot([], [], color="tab:blue", label="HC")
        ax.plot([], [], color="tab:red", label="migraine")
        ax.set(xlabel="frequency (Hz)", ylabel="PSD (fT$^2$/Hz)",
               title="Simulated resting state, Vectorview magnetometers")
        ax.legend()
        fig.tight_layout()
        fig.savefig(HERE / "simulator_psd.png", dpi=110)
        plt.close(fig)

        # 2. evoked topomaps of one subject: auditory M100, somatosensory M20
        sub = "sub-001"
        aud = _evoked(out / f"{sub}_task-auditory_raw.fif", 1)
        som = _evoked(out / f"{sub}_task-somatosensory_raw.fif", 2)
        fig, axes = plt.subplots(1, 2, figsize=(6.5, 3.4))
        aud.copy().pick("mag").plot_topomap(times=[0.1], axes=axes[0], show=False,
                                            colorbar=False)
        som.copy().pick("mag").plot_topomap(times=[0.02], axes=axes[1], show=False,
                                            colorbar=False)
        for ax, title in zip(axes, ["tones: M100 (100 ms)",
                                    "right median nerve: M20 (20 ms)"], strict=True):
            ax.set_title(title, fontsize=9)
        fig.suptitle(f"Simulated evoked fields ({sub}, Vectorview magnetometers)", fontsize=10)
        fig.savefig(HERE / "simulator_evoked_topomaps.png", dpi=110)
        plt.close(fig)

        # 3. relative theta power per subject and group (planted effect)
        values = {"HC": [], "migraine": []}
        for rec in recs:
            if rec["state"] != "rest":
                continue
            raw = mne.io.read_raw_fif(rec["path"], verbose=False).pick("mag")
            psd = raw.compute_psd(fmin=1.0, fmax=40.0, n_fft=1000, verbose=False)
            f, p = psd.freqs, psd.get_data()
            values[rec["group"]].append(
                float(np.log(p[:, (f >= 4) & (f <= 8)].mean(1) / p.mean(1)).mean()))
        fig, ax = plt.subplots(figsize=(4, 3.5))
        for i, vals in enumerate(values.values()):
            ax.scatter(np.full(len(vals), i), vals, color=["tab:blue", "tab:red"][i])
            ax.hlines(np.mean(vals), i - 0.2, i + 0.2, color="k")
        ax.set_xticks([0, 1], list(values))
        ax.set(ylabel="log relative theta power (4-8 Hz)", xlim=(-0.6, 1.6),
               title="Planted theta effect")
        fig.tight_layout()
        fig.savefig(HERE / "simulator_theta_groups.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()
