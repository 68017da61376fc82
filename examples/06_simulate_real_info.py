"""Run the megfm simulator on the sensor array of a real recording, and plot a PSD.

What it shows
-------------
1. ``megfm.sensor_array(info)`` keeps the MEG channels of a real recording's ``info``
   (reference sensors dropped) and its device->head transform. Any recording MNE reads
   works; here, when the environment variable ``MEGFM_TEST_DATA`` points to the MNE test
   recordings, their Elekta Vectorview (``--system vectorview``) or CTF (``--system ctf``)
   file is used; otherwise a built-in array of the same system stands in.
2. ``megfm.simulate_cohort(..., array=info)`` simulates subjects on that array (resting
   state here: 1/f background, alpha and theta rhythms, sensor noise), writing FIF files
   and ``ground_truth.json``.
3. The power spectral density of a simulated recording (``raw.compute_psd``), per
   sensor type, shows the alpha peak near 10 Hz over the 1/f background; the planted
   alpha frequency of the subject is printed next to the measured peak.

Run
---
    MEGFM_TEST_DATA=/path/to/meg-data python examples/06_simulate_real_info.py --quick
    python examples/06_simulate_real_info.py --system ctf --out /tmp/ex06

Writes ``sim/`` (FIF files, participants.tsv, ground_truth.json) and ``psd.png`` in
``--out`` (default: a new temporary folder).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write PNGs, no window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick_data import default_out  # noqa: E402

#: Real recordings of the MNE test data set, relative to ``MEGFM_TEST_DATA``.
REAL_FILES = {"vectorview": "SSS/sample_audvis_trunc_raw_sss.fif",
              "ctf": "CTF/testdata_ctf_short_discontinuous.ds_raw.fif"}
#: Built-in array used when no real file is found.
BUILTIN = {"vectorview": "vectorview", "ctf": "ctf275"}


def real_info(system: str):
    """Return ``(info, description)`` of a real recording, or a built-in array."""
    import mne

    import megfm

    root = os.environ.get("MEGFM_TEST_DATA")
    path = Path(root) / REAL_FILES[system] if root else None
    if path is not None and path.exists():
        info = mne.io.read_info(path, verbose=False)  # the header is enough
        return megfm.sensor_array(info), f"real {system} info from {path.name}"
    return megfm.sensor_array(BUILTIN[system]), f"built-in {BUILTIN[system]} array " \
        "(set MEGFM_TEST_DATA to use a real recording)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 subject x 36 s of rest at 250 Hz, for a fast check")
    parser.add_argument("--out", default=None,
                        help="output folder (default: a new temporary folder)")
    parser.add_argument("--system", choices=sorted(REAL_FILES), default="vectorview",
                        help="which real recording's sensor array to use (default vectorview)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else default_out("06")
    out.mkdir(parents=True, exist_ok=True)

    import mne

    import megfm

    info, where = real_info(args.system)
    counts = Counter(info.get_channel_types())
    note = "; MNE types CTF axial gradiometers as 'mag'" if args.system == "ctf" else ""
    print(f"sensor array: {where}: {len(info['ch_names'])} MEG channels "
          f"({', '.join(f'{n} {t}' for t, n in sorted(counts.items()))}{note})")

    # --- simulate on that array ------------------------------------------------------------
    n_subjects, duration, sfreq = (1, 36.0, 250.0) if args.quick else (4, 120.0, 1000.0)
    sim = megfm.simulate_cohort(out / "sim", n_subjects=n_subjects, groups=("HC",),
                                states=("rest",), array=info, duration=duration, sfreq=sfreq,
                                seed=0, verbose=False)
    rec = sim["recordings"][0]
    raw = mne.io.read_raw_fif(rec["path"], preload=True, verbose=False)
    print(f"simulated {len(sim['recordings'])} recording(s); {Path(rec['path']).name}: "
          f"{len(raw.copy().pick('meg').ch_names)} MEG channels, {raw.times[-1]:.1f} s "
          f"at {raw.info['sfreq']:g} Hz")

    # --- PSD per sensor type ------------------------------------------------------------------
    psd = raw.compute_psd(method="welch", picks="meg", fmin=1.0, fmax=45.0,
                          n_fft=int(2 * sfreq), verbose=False)
    freqs = psd.freqs
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for kind, scale, unit in (("mag", 1e15, "fT"), ("grad", 1e13, "fT/cm")):
        picks = mne.pick_types(raw.info, meg=kind)
        if picks.size == 0:
            continue
        names = [raw.ch_names[i] for i in picks]
        power = psd.get_data(picks=names).mean(axis=0) * scale ** 2
        ax.semilogy(freqs, power, label=f"{kind} (({unit})²/Hz), n={picks.size}")
        alpha = (freqs >= 7) & (freqs <= 13)
        peak = freqs[alpha][np.argmax(power[alpha])]
        print(f"  {kind:<5} mean PSD peak in 7-13 Hz at {peak:.1f} Hz")
    # participants.tsv records each subject's planted parameters, alpha peak included
    with open(sim["participants"], encoding="utf-8") as fid:
        header, first = (line.rstrip("\n").split("\t") for line in list(fid)[:2])
    row = dict(zip(header, first, strict=True))
    if "alpha_peak_hz" in row:
        print(f"  planted alpha peak of {row['participant_id']}: "
              f"{float(row['alpha_peak_hz']):.2f} Hz")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("power spectral density")
    ax.set_title(f"Simulated rest on the {args.system} array")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "psd.png", dpi=100)
    plt.close(fig)
    print(f"figure: {out / 'psd.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
