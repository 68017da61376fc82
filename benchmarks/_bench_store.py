"""Store benchmark (part (b) of ``bench_data.py``): WindowDataset throughput and flat memory.

Measures, in one run:

* throughput (windows/s, MB/s of float32 signal) of ``WindowDataset`` + ``collate_windows``
  through a ``DataLoader`` with 0 and 2 workers, next to a plain h5py read loop over the same
  shard (the baseline: the cost of HDF5 alone); median of 3 passes after a warm-up pass (so
  every case reads a warm page cache), one torch thread per process;
* peak resident memory (RSS) of a fresh process streaming a reference store, and a store 10x
  larger, one batch at a time. Target: RSS grows by less than 100 MB when the store grows 10x.

Run ``python benchmarks/_bench_store.py [--quick]``; ``bench_data.py`` calls :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import parse_args, write_json

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RSS_TARGET_MB = 100.0
BATCH_SIZE = 16
REPEATS = 3  # timed passes after a warm-up pass; the median is reported


def _sizes(quick: bool) -> dict:
    # 306 sensors (Vectorview) x 250 samples (1 s at 250 Hz) = 306 KB per float32 window.
    return {"n_sensors": 306, "n_times": 250, "n_windows": 100 if quick else 400,
            "growth": 10}


def _make_windows(n_windows: int, n_sensors: int, n_times: int, seed: int = 0):
    from megfm.data.geometry import SensorGeometry
    from megfm.data.windows import Windows

    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(n_sensors, 3))
    pos = 0.1 * pos / np.linalg.norm(pos, axis=1, keepdims=True)
    geom = SensorGeometry(names=[f"MEG{i:04d}" for i in range(n_sensors)], positions=pos,
                          orientations=pos / 0.1, types=np.arange(n_sensors) % 2)
    data = (100.0 * rng.standard_normal((n_windows, n_sensors, n_times))).astype(np.float32)
    subjects = [f"sub-{i % 10:02d}" for i in range(n_windows)]
    return Windows(data=data, sfreq=250.0, geometries=[geom],
                   metadata={"subject": subjects, "state": ["rest"] * n_windows})


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.iterdir()) / 2**20


def _peak_rss_mb() -> float:
    """Peak RSS of this process image in MB.

    ``VmHWM`` is reset by ``exec``, unlike ``getrusage``'s ``ru_maxrss``, which on Linux keeps
    the peak of the parent process that forked us.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _stream(path: str) -> dict:
    """Stream a whole store once, batch by batch (run in a fresh process)."""
    import torch
    from torch.utils.data import DataLoader

    from megfm.data.dataset import WindowDataset, collate_windows

    torch.set_num_threads(1)
    ds = WindowDataset(path)
    before = _peak_rss_mb()
    total = 0.0
    n = 0
    for batch in DataLoader(ds, batch_size=BATCH_SIZE, collate_fn=collate_windows):
        total += float(batch["x"].sum())
        n += len(batch["index"])
    return {"n_windows": n, "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": before,
            "checksum": total}


def _stream_in_subprocess(path: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--stream", str(path)],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _throughput(path: Path, num_workers: int) -> tuple[float, int]:
    from torch.utils.data import DataLoader

    from megfm.data.dataset import WindowDataset, collate_windows

    ds = WindowDataset(path)
    loader = DataLoader(ds, batch_size=BATCH_SIZE, num_workers=num_workers,
                        collate_fn=collate_windows, shuffle=False,
                        persistent_workers=num_workers > 0)
    times = []
    for _ in range(1 + REPEATS):  # the first pass warms up (worker start, first-use costs)
        t0 = time.perf_counter()
        n = sum(len(batch["index"]) for batch in loader)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:])), n


def _h5py_baseline(path: Path) -> tuple[float, int]:
    import h5py

    times = []
    for _ in range(1 + REPEATS):
        t0 = time.perf_counter()
        n = 0
        for shard in sorted(path.glob("shard-*.h5")):
            with h5py.File(shard, "r") as f:
                dset = f["data"]
                for i in range(dset.shape[0]):
                    dset[i]
                    n += 1
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:])), n


def run(quick: bool = False) -> list[dict]:
    """Run the store benchmark and return one row (dict) per measurement.

    Parameters
    ----------
    quick : bool
        Small stores (about 30 MB and 300 MB), under 30 s.

    Returns
    -------
    rows : list of dict
        Keys ``benchmark``, ``case``, ``windows_per_s``, ``mb_per_s``, ``store_mb``,
        ``peak_rss_mb``, ``rss_growth_mb``, ``target``, ``passed`` (None where not relevant).
    """
    import torch

    from megfm.data.store import write_store

    # One intra-op thread in this process, as in each DataLoader worker: on a small shared
    # machine several threads per process oversubscribe the cores and distort the timings.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sizes = _sizes(quick)
    window_mb = sizes["n_sensors"] * sizes["n_times"] * 4 / 2**20
    tmp = Path(tempfile.mkdtemp(prefix="megfm-bench-store-"))
    rows: list[dict] = []

    def row(case: str, **kw) -> dict:
        base = {"benchmark": "store", "case": case, "windows_per_s": None, "mb_per_s": None,
                "store_mb": None, "peak_rss_mb": None, "rss_growth_mb": None,
                "target": None, "passed": None}
        base.update(kw)
        rows.append(base)
        return base

    try:
        windows = _make_windows(sizes["n_windows"], sizes["n_sensors"], sizes["n_times"])
        ref = write_store(windows, tmp / "ref")
        big = tmp / "big"
        for _ in range(sizes["growth"]):
            write_store(windows, big)  # appends: the same windows, 10x the store
        del windows
        ref_mb, big_mb = _dir_mb(ref), _dir_mb(big)
        sec, n = _h5py_baseline(ref)
        row("h5py read loop (baseline)", windows_per_s=n / sec, mb_per_s=n * window_mb / sec,
            store_mb=ref_mb)
        for workers in (0, 2):
            sec, n = _throughput(ref, workers)
            row(f"WindowDataset + collate, {workers} workers", windows_per_s=n / sec,
                mb_per_s=n * window_mb / sec, store_mb=ref_mb)

        small = _stream_in_subprocess(ref)
        large = _stream_in_subprocess(big)
        assert large["n_windows"] == sizes["growth"] * small["n_windows"]
        row(f"stream store 1x (batch {BATCH_SIZE}, 0 workers)", store_mb=ref_mb,
            peak_rss_mb=small["peak_rss_mb"])
        growth = large["peak_rss_mb"] - small["peak_rss_mb"]
        row(f"stream store {sizes['growth']}x (batch {BATCH_SIZE}, 0 workers)",
            store_mb=big_mb, peak_rss_mb=large["peak_rss_mb"], rss_growth_mb=growth,
            target=f"growth < {RSS_TARGET_MB:g} MB", passed=bool(growth < RSS_TARGET_MB))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        torch.set_num_threads(threads)
    return rows


def format_table(rows: list[dict]) -> str:
    """Plain-text table of benchmark rows (columns with at least one value)."""
    cols = [c for c in rows[0] if any(r.get(c) is not None for r in rows)]

    def fmt(v) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:,.1f}"
        return str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small stores, under 30 s")
    parser.add_argument("--stream", metavar="STORE", help=argparse.SUPPRESS)
    args = parse_args(parser, argv, "store")
    if args.stream:
        print(json.dumps(_stream(args.stream)))
        return 0
    t0 = time.perf_counter()
    rows = run(quick=args.quick)
    print(format_table(rows))
    print(f"({time.perf_counter() - t0:.1f} s{', quick' if args.quick else ''})")
    write_json(args.out, {"quick": args.quick, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
