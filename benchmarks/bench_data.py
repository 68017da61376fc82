"""Data-layer benchmark: (a) preprocess + epoch cost vs MNE alone; (b) store streaming.

(a) A 10-minute (``--quick``: 1-minute), 306-sensor, 1 kHz recording is synthesised with
:class:`mne.io.RawArray` on the real Vectorview sensor info of the MNE test data (1/f
background, 50 Hz line noise, a few artefacts) and timed, in the same run, through

* ``mne filter+resample``: MNE's own ``raw.filter(0.5, 80)`` + ``raw.resample(200)`` (the
  baseline: what any MEG pipeline pays at least);
* ``mne notch+filter+resample``: the same with the 50 Hz notch (harmonics < 500 Hz) first;
* ``megfm preprocess+windows``: :func:`megfm.preprocess` (pick, resample, notch, band-pass,
  bad channels, scaling, BAD_amplitude) + :func:`megfm.make_windows` (2 s rest windows).

Target: megfm's time <= 1.3x the baseline. Each case runs on its own copy of the recording
(the copy is not timed); the median of ``--repeats`` runs is reported.

(b) The training loader against its limits (``benchmarks/_bench_store.py``, its ``run``):
the sequential read bandwidth of the store's bytes, windows/s and GB/s of the training
loader with 0, 1 and 2 workers (runs of windows of one shard, and independent draws), the
consumption of a ``small`` training step, and peak RSS while streaming a store with 10x the
recordings. Targets: loader >= 25 % of the sequential bandwidth and >= 5x the step; RSS
growth < 100 MB.

(c) Whether drawing runs of windows changes learning: a tiny model trained on a store of 40
recordings of continuous signal (neighbouring windows alike) with the default sampler (runs
of 8 windows), with runs of 8 in a shuffle buffer of only 4 recordings, and with independent
draws; the validation loss (fixed masks) along training, mean of 3 seeds. Target: final
losses within 5 % of independent draws.

Run: ``python benchmarks/bench_data.py [--quick] [--part store] [--out
benchmarks/results/data.json]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
from _results import parse_args, write_json

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_RATIO = 1.3
VECTORVIEW = "SSS/sample_audvis_trunc_raw_sss.fif"
L_FREQ, H_FREQ, SFREQ_OUT, LINE = 0.5, 80.0, 200.0, 50.0


def _vectorview_info(data_dir: Path, sfreq: float):
    import mne

    path = data_dir / VECTORVIEW
    if not path.exists():
        raise SystemExit(
            f"{path} not found: set MEGFM_TEST_DATA (or --data) to the folder of the MNE test "
            "recordings (see tests/conftest.py)."
        )
    info = mne.io.read_info(path, verbose=False)
    info = mne.pick_info(info, mne.pick_types(info, meg=True, ref_meg=False, exclude=[]))
    with info._unlock():
        info["sfreq"] = sfreq
        info["lowpass"] = sfreq / 2
        info["highpass"] = 0.0
        info["projs"] = []
        info["bads"] = []
    return info


def synthesize(info, seconds: float, seed: int = 0):
    """A seeded recording in T and T/m: 1/f background + line noise + artefacts."""
    import mne
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    sfreq = info["sfreq"]
    n = int(seconds * sfreq)
    n_ch = len(info["ch_names"])
    data = np.empty((n_ch, n))
    t = np.arange(n) / sfreq
    line = np.sin(2 * np.pi * LINE * t) + 0.3 * np.sin(2 * np.pi * 3 * LINE * t)
    # pink-ish background: white noise through a one-pole low-pass (per channel)
    alpha = np.exp(-2 * np.pi * 5.0 / sfreq)
    for i, ch_type in enumerate(info.get_channel_types()):
        scale = 1e-13 if ch_type == "mag" else 2e-12  # ~100 fT, ~20 fT/cm
        w = rng.standard_normal(n)
        pink = lfilter([1 - alpha], [1, -alpha], w) * 8
        data[i] = scale * (pink + 0.5 * w + 2.0 * line)
    for start in rng.integers(0, n - int(0.2 * sfreq), size=max(int(seconds // 60), 1) * 3):
        data[:, start:start + int(0.2 * sfreq)] *= 30.0  # movement-like bursts
    return mne.io.RawArray(data, info, verbose=False)


def _time(fn, raw, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        copy = raw.copy()
        t0 = time.perf_counter()
        fn(copy)
        times.append(time.perf_counter() - t0)
        del copy
    return float(np.median(times))


def run_preprocess(quick: bool, data_dir: Path, repeats: int) -> list[dict]:
    """Part (a): rows of timings for the three cases."""
    from megfm.data.epochs import make_windows
    from megfm.data.preprocess import PreprocessConfig, preprocess

    seconds = 60.0 if quick else 600.0
    raw = synthesize(_vectorview_info(data_dir, 1000.0), seconds)
    config = PreprocessConfig(line_freq=LINE, l_freq=L_FREQ, h_freq=H_FREQ, sfreq=SFREQ_OUT)

    def mne_baseline(r):
        r.filter(L_FREQ, H_FREQ, verbose="error")
        r.resample(SFREQ_OUT, verbose="error")

    def mne_notch(r):
        r.notch_filter(np.arange(LINE, 500.0, LINE), verbose="error")
        mne_baseline(r)

    n_windows = {}

    def megfm_case(r):
        prep = preprocess(r, config, copy=False)
        n_windows["n"] = len(make_windows(prep, state="rest", window_seconds=2.0))

    cases = [("mne filter+resample (baseline)", mne_baseline),
             ("mne notch+filter+resample", mne_notch),
             ("megfm preprocess+windows", megfm_case)]
    rows = []
    base = None
    for name, fn in cases:
        seconds_taken = _time(fn, raw, repeats)
        base = seconds_taken if base is None else base
        ratio = seconds_taken / base
        rows.append({
            "benchmark": "preprocess", "case": name, "recording_s": seconds,
            "n_channels": len(raw.ch_names), "sfreq_in": raw.info["sfreq"],
            "seconds": round(seconds_taken, 3), "ratio_to_baseline": round(ratio, 3),
            "target": f"<= {TARGET_RATIO}x" if name.startswith("megfm") else None,
            "passed": bool(ratio <= TARGET_RATIO) if name.startswith("megfm") else None,
        })
    rows[-1]["n_windows"] = n_windows.get("n")
    return rows


# (c) ------------------------------------------------------------ sampling vs the loss
SAMPLERS = {"runs of 8 (default; the buffer holds every recording)": {},
            "runs of 8 in a buffer of 4 recordings": {"run_length": 8, "buffer_shards": 4},
            "independent draws": {"run_length": 1, "buffer_shards": None}}
LOSS_TOLERANCE = 0.05  # relative difference of the final validation loss


def _sampling_store(path: Path, n_recordings: int, per_recording: int):
    """Recordings of continuous signal cut into consecutive windows (neighbours correlate).

    Each recording has its own alpha frequency, sensor gains and noise level, so the windows
    of a run are much more alike than windows drawn anywhere: the case where drawing runs
    could slow learning down.
    """
    from megfm.data.geometry import SensorGeometry
    from megfm.data.store import write_store
    from megfm.data.windows import Windows

    rng = np.random.default_rng(0)
    n_sensors, n_times, sfreq = 8, 160, 200.0
    theta = np.linspace(0, 2 * np.pi, n_sensors, endpoint=False)
    pos = np.c_[0.1 * np.cos(theta), 0.1 * np.sin(theta), np.full(n_sensors, 0.05)]
    geom = SensorGeometry(names=[f"MEG{i:03d}" for i in range(n_sensors)], positions=pos,
                          orientations=pos / np.linalg.norm(pos, axis=1, keepdims=True),
                          types=np.arange(n_sensors) % 2)
    parts = []
    for k in range(n_recordings):
        t = np.arange(per_recording * n_times) / sfreq
        freq = rng.uniform(7.0, 13.0)
        gain = rng.uniform(0.5, 2.0, n_sensors)[:, None]
        envelope = 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t)
        signal = 100 * gain * envelope * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.3))
        noise = rng.uniform(5.0, 30.0) * rng.standard_normal((n_sensors, t.size))
        data = (signal + noise).reshape(n_sensors, per_recording, n_times).transpose(1, 0, 2)
        parts.append(Windows(data=data.astype(np.float32), sfreq=sfreq, geometries=[geom],
                             metadata={"subject": [f"sub-{k:03d}"] * per_recording,
                                       "state": ["rest"] * per_recording}))
    return write_store(Windows.concatenate(parts), path)


def _train_loss_curve(store: Path, sampler: dict, *, seed: int, steps: int,
                      batch_size: int) -> list[float]:
    """Validation loss (fixed masks) every ``steps // 5`` steps of a tiny model."""
    import torch

    from megfm.models import MaskedSignalModel, ModelConfig
    from megfm.training import MEGDataModule

    torch.manual_seed(seed)
    dm = MEGDataModule(store, batch_size=batch_size, val_fraction=0.2, seed=seed, **sampler)
    model = MaskedSignalModel(ModelConfig.preset("tiny"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = dm.train_dataloader()
    val = list(dm.val_dataloader())

    def run(batch, generator):
        return model(batch["x"], batch["pos"], batch["ori"], batch["sensor_type"],
                     batch["sensor_mask"], generator=generator)["loss"]

    def validate() -> float:
        model.eval()
        gen = torch.Generator().manual_seed(12345)
        with torch.no_grad():
            losses = [float(run(b, gen)) * len(b["index"]) for b in val]
        model.train()
        return sum(losses) / sum(len(b["index"]) for b in val)

    curve, step, epoch = [], 0, 0
    gen = torch.Generator().manual_seed(seed)
    while step < steps:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            loss = run(batch, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % (steps // 5) == 0:
                curve.append(validate())
            if step == steps:
                break
        epoch += 1
    return curve


def run_sampling(quick: bool) -> list[dict]:
    """Part (c): the loss curve with runs of windows vs independent draws, a few seeds."""
    import tempfile

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    steps, seeds = (100, (0, 1)) if quick else (300, (0, 1, 2))
    tmp = Path(tempfile.mkdtemp(prefix="megfm-bench-sampling-"))
    try:
        store = _sampling_store(tmp / "store", n_recordings=40, per_recording=24)
        curves = {name: [_train_loss_curve(store, kw, seed=s, steps=steps, batch_size=16)
                         for s in seeds] for name, kw in SAMPLERS.items()}
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        torch.set_num_threads(threads)
    ref = np.mean([c[-1] for c in curves["independent draws"]])
    rows = []
    for name, runs in curves.items():
        mean = np.mean(runs, axis=0)
        final = float(mean[-1])
        rel = final / ref - 1.0
        rows.append({"benchmark": "sampling", "case": name, "steps": steps,
                     "seeds": len(seeds), "val_loss_curve": [round(float(v), 4) for v in mean],
                     "final_val_loss": round(final, 4),
                     "final_seed_sd": round(float(np.std([c[-1] for c in runs])), 4),
                     "vs_independent": round(rel, 4),
                     "target": f"within {LOSS_TOLERANCE:.0%}",
                     "passed": bool(abs(rel) <= LOSS_TOLERANCE)})
    return rows


def _print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables and write the JSON (``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1-minute recording and small stores (well under a minute)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per case, median reported (default: 2 quick, 1 full)")
    parser.add_argument("--data", default=os.environ.get("MEGFM_TEST_DATA",
                                                         str(ROOT.parent / "shared" / "meg-data")),
                        help="folder of the MNE test recordings (default: $MEGFM_TEST_DATA)")
    parser.add_argument("--part", choices=("all", "preprocess", "store", "sampling"),
                        default="all", help="run one part only: (a) preprocess, (b) store, "
                        "(c) sampling (default: all)")
    args = parse_args(parser, argv, "data")
    repeats = args.repeats or (2 if args.quick else 1)

    t0 = time.perf_counter()
    rows_a: list[dict] = []
    if args.part in ("all", "preprocess"):
        rows_a = run_preprocess(args.quick, Path(args.data), repeats)
        print(f"(a) preprocess + epoch, {rows_a[0]['recording_s']:.0f} s x "
              f"{rows_a[0]['n_channels']} sensors @ {rows_a[0]['sfreq_in']:g} Hz -> "
              f"{SFREQ_OUT:g} Hz, median of {repeats}")
        _print_table(rows_a, ["case", "seconds", "ratio_to_baseline", "target", "passed"])

    rows_b: list[dict] = []
    if args.part in ("all", "store"):
        spec = importlib.util.spec_from_file_location(
            "_bench_store", ROOT / "benchmarks" / "_bench_store.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        rows_b = module.run(quick=args.quick)
        print("\n(b) the training loader against its limits (HDF5 store)")
        cols = [c for c in ("case", "workers", "windows_per_s", "gb_per_s", "of_sequential",
                            "over_step", "store_mb", "peak_rss_mb", "rss_growth_mb", "target",
                            "passed") if any(r.get(c) is not None for r in rows_b)]
        _print_table(rows_b, cols)

    rows_c: list[dict] = []
    if args.part in ("all", "sampling"):
        rows_c = run_sampling(args.quick)
        print(f"\n(c) validation loss of a tiny model, {rows_c[0]['steps']} steps, batch 16, "
              f"mean of {rows_c[0]['seeds']} seeds: runs of windows vs independent draws")
        _print_table(rows_c, ["case", "val_loss_curve", "final_val_loss", "final_seed_sd",
                              "vs_independent", "target", "passed"])

    # the timings depend on what else runs: record the load (1, 5, 15 min) and the cores
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"\nload average {load}, {os.cpu_count()} cores")
    result = {"quick": args.quick, "repeats": repeats, "seconds_total":
              round(time.perf_counter() - t0, 1), "load_average": load,
              "cpu_count": os.cpu_count(), "preprocess": rows_a, "store": rows_b,
              "sampling": rows_c}
    out = write_json(args.out, result, indent=1)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
