"""Benchmark ``megfm.simulate_cohort`` against MNE's own raw simulator.

Full run (the target of issue 3): 40 subjects x 3 states x 2 min at 1 kHz on the 306-channel
Vectorview array, 2 workers, target < 2 minutes on 2 cores. ``--quick`` runs a small cohort.

Baseline, in the same run: :func:`mne.simulation.simulate_raw` with the same forward model
and source count (one forward per call, as a naive loop over recordings would do), timed on
a few recordings and extrapolated to the cohort (marked as such in the table).

Prints a table and writes ``--out`` (the recorded result: ``benchmarks/results/simulate.json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import mne
import numpy as np
from _results import parse_args, write_json

from megfm.simulate import sensor_array, simulate_cohort
from megfm.simulate.sources import make_subject_anatomy


def _baseline_seconds(array: str, duration: float, sfreq: float, n_recordings: int,
                      n_timed: int) -> float:
    """Seconds of mne.simulation.simulate_raw (+ forward + save) per recording x n."""
    info = sensor_array(array, sfreq=sfreq)
    rng = np.random.default_rng(0)
    times = []
    tmp = Path(tempfile.mkdtemp(prefix="megfm-bench-mne-"))
    try:
        for i in range(n_timed):
            t0 = time.perf_counter()
            anatomy = make_subject_anatomy(info, rng)  # forward (one per recording)
            n_src = anatomy.gain.shape[1]
            src = mne.setup_volume_source_space(
                pos=dict(rr=anatomy.positions, nn=np.tile([0.0, 0.0, 1.0], (n_src, 1))),
                verbose=False)
            sphere = mne.make_sphere_model(r0=(0.0, 0.0, 0.04), head_radius=None,
                                           verbose=False)
            fwd = mne.make_forward_solution(anatomy.info, None, src, sphere, meg=True,
                                            eeg=False, mindist=0.0, verbose=False)
            fwd = mne.convert_forward_solution(fwd, force_fixed=True, verbose=False)
            n_times = int(duration * sfreq)
            data = rng.standard_normal((n_src, n_times)) * 1e-8
            stc = mne.VolSourceEstimate(data, [src[0]["vertno"]], 0.0, 1.0 / sfreq)
            raw = mne.simulation.simulate_raw(anatomy.info, stc, forward=fwd, verbose=False)
            mne.simulation.add_noise(raw, mne.make_ad_hoc_cov(raw.info), rng=i,
                                     verbose=False)
            raw.save(tmp / f"b{i}_raw.fif", fmt="single", overwrite=True, verbose=False)
            times.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return float(np.mean(times)) * n_recordings


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small cohort (4 subjects x 3 states x 20 s at 500 Hz)")
    parser.add_argument("--n-jobs", type=int, default=2, help="workers (default 2)")
    args = parse_args(parser, argv, "simulate")
    if args.quick:
        cfg = dict(n_subjects=4, duration=20.0, sfreq=500.0, block_size=5)
        n_timed = 1
    else:
        cfg = dict(n_subjects=40, duration=120.0, sfreq=1000.0, block_size=20)
        n_timed = 2
    states = ("rest", "auditory", "somatosensory")
    n_rec = cfg["n_subjects"] * len(states)
    load_start = list(os.getloadavg())
    tmp = Path(tempfile.mkdtemp(prefix="megfm-bench-sim-"))
    try:
        t0 = time.perf_counter()
        result = simulate_cohort(tmp, array="vectorview", states=states, n_jobs=args.n_jobs,
                                 seed=0, verbose=False, **cfg)
        seconds = time.perf_counter() - t0
        size_gb = sum(os.path.getsize(r["path"]) for r in result["recordings"]) / 1e9
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    baseline = _baseline_seconds("vectorview", cfg["duration"], cfg["sfreq"], n_rec, n_timed)
    samples = n_rec * 306 * cfg["duration"] * cfg["sfreq"]
    rows = [
        dict(method="megfm simulate_cohort", seconds=round(seconds, 2), measured="full",
             recordings_per_s=round(n_rec / seconds, 3),
             msamples_per_s=round(samples / seconds / 1e6, 1)),
        dict(method="mne simulate_raw loop (baseline)", seconds=round(baseline, 2),
             measured=f"extrapolated from {n_timed} recording(s), 1 worker",
             recordings_per_s=round(n_rec / baseline, 3),
             msamples_per_s=round(samples / baseline / 1e6, 1)),
    ]
    print(f"simulate: {cfg['n_subjects']} subjects x {len(states)} states x "
          f"{cfg['duration']:g} s at {cfg['sfreq']:g} Hz, 306 sensors, n_jobs={args.n_jobs} "
          f"({size_gb:.2f} GB written)")
    print(f"{'method':<36}{'seconds':>10}{'rec/s':>9}{'Msamp/s':>10}  measured")
    for row in rows:
        print(f"{row['method']:<36}{row['seconds']:>10.2f}{row['recordings_per_s']:>9.3f}"
              f"{row['msamples_per_s']:>10.1f}  {row['measured']}")
    target = 120.0
    if not args.quick:
        print(f"target < {target:.0f} s: {'met' if seconds < target else 'NOT met'}")
    out = dict(config=dict(cfg, states=list(states), array="vectorview", n_jobs=args.n_jobs,
                           quick=args.quick),
               rows=rows, gigabytes_written=round(size_gb, 3),
               machine=dict(platform=platform.platform(), cpus=os.cpu_count(),
                            load_avg_start=load_start, load_avg_end=list(os.getloadavg())),
               target_seconds=None if args.quick else target)
    write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
