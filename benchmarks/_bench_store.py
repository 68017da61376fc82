"""Store benchmark (part (b) of ``bench_data.py``): the training loader against its limits.

Measures, in one run, on a synthetic store of Vectorview-sized windows (306 sensors x 4 s at
200 Hz, float32: 0.98 MB each), in recordings (shards) of a dozen windows:

* the sequential read bandwidth of the same bytes (every shard file read whole into one
  reused buffer, page cache warm): the physical limit of any reader here;
* a plain h5py loop reading every window of every shard with slice reads (HDF5 and its
  fletcher32 checksum alone);
* windows/s and GB/s of the training loader (``MEGDataModule.train_dataloader``, batch 32)
  with 0, 1 and 2 workers, for the default sampler (runs of consecutive windows of one
  shard in a shuffle buffer of shards) and for independent draws (``run_length=1``);
  median of 3 epochs after a warm-up epoch;
* the consumption of one ``small`` training step (forward + backward + AdamW on a batch of
  these windows, windows/s of the second step; the first warms up);
* peak resident memory (RSS) of a fresh process streaming the training loader (0 workers)
  over a store with 10x the recordings for one epoch, and over the store for 10 epochs (as
  many batches: the growth measured is the store's, not the allocator's warming up over more
  batches); once with glibc's
  default malloc, whose mmap threshold rises with the arrays freed so that later batch-sized
  arrays come from a heap that fragments (tens to hundreds of MB, varying from run to run),
  and once with ``MALLOC_MMAP_THRESHOLD_=1048576`` (every array above 1 MB mapped and
  unmapped on its own: repeatable).

Each loader and RSS measurement is repeated on a LitData export of the same store
(``megfm export``; chunk files of 64 MB), against the sequential read of its chunk files,
with the export's own time.

Targets: loader >= 25 % of the sequential bandwidth and >= 5x the step's consumption (with
the best worker count); RSS grows by less than 100 MB when the store grows 10x. One torch
thread per process for the reads (as in a DataLoader worker); the step uses the threads
torch had. Timings on a shared machine vary by tens of percent between runs.

Run ``python benchmarks/_bench_store.py [--quick]``; ``bench_data.py`` calls :func:`run`.
It also runs against an older megfm (no ``run_length``): then only independent draws.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
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
BANDWIDTH_TARGET = 0.25  # loader bytes/s over the sequential read bandwidth
STEP_TARGET = 5.0  # loader windows/s over the small training step's
BATCH_SIZE = 32
STEP_BATCH = 8  # windows per timed training step (CPU)
REPEATS = 3  # timed epochs after a warm-up epoch; the median is reported
SFREQ = 200.0
MMAP_THRESHOLD = "MALLOC_MMAP_THRESHOLD_"


def _sizes(quick: bool) -> dict:
    # 306 sensors (Vectorview) x 800 samples (4 s at 200 Hz) = 0.98 MB per float32 window
    return {"n_sensors": 306, "n_times": 800, "n_recordings": 8 if quick else 16,
            "per_recording": 6 if quick else 12, "growth": 10}


def _make_windows(n_recordings: int, per_recording: int, n_sensors: int, n_times: int,
                  seed: int = 0):
    from megfm.data.geometry import SensorGeometry
    from megfm.data.windows import Windows

    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(n_sensors, 3))
    pos = 0.1 * pos / np.linalg.norm(pos, axis=1, keepdims=True)
    geom = SensorGeometry(names=[f"MEG{i:04d}" for i in range(n_sensors)], positions=pos,
                          orientations=pos / 0.1, types=np.arange(n_sensors) % 2)
    parts = []
    for k in range(n_recordings):
        data = (100.0 * rng.standard_normal((per_recording, n_sensors, n_times))).astype(
            np.float32)
        parts.append(Windows(data=data, sfreq=SFREQ, geometries=[geom],
                             metadata={"subject": [f"sub-{k:03d}"] * per_recording,
                                       "state": ["rest"] * per_recording}))
    return Windows.concatenate(parts)


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


def _has_runs() -> bool:
    """Whether this megfm's data module draws runs (``run_length``)."""
    from megfm.training import MEGDataModule

    return "run_length" in inspect.signature(MEGDataModule).parameters


def _has_litdata() -> bool:
    """Whether this megfm exports stores to LitData (and litdata is installed)."""
    return (importlib.util.find_spec("litdata") is not None
            and importlib.util.find_spec("megfm.data.streaming") is not None)


def export_litdata(store: Path, out: Path) -> Path:
    from megfm.data.streaming import export_litdata as export

    return export(store, out)


def _train_loader(path, *, num_workers: int, independent: bool):
    from megfm.training import MEGDataModule

    kwargs = {"batch_size": BATCH_SIZE, "val_fraction": 0.0, "seed": 0,
              "num_workers": num_workers}
    if _has_runs() and independent:
        kwargs.update(run_length=1, buffer_shards=None)
    return MEGDataModule(path, **kwargs).train_dataloader()


def _stream(path: str, epochs: int = 1) -> dict:
    """Stream ``epochs`` epochs of the training loader (run in a fresh process)."""
    import torch

    torch.set_num_threads(1)
    loader = _train_loader(path, num_workers=0, independent=False)
    before = _peak_rss_mb()
    total, n = 0.0, 0
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            total += float(batch["x"].sum())
            n += len(batch["index"])
    return {"n_windows": n, "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": before,
            "checksum": total}


def _stream_in_subprocess(path: Path, *, epochs: int, pinned: bool) -> dict:
    env = dict(os.environ)
    if pinned:  # glibc: arrays above 1 MB always get their own mapping (no heap growth)
        env[MMAP_THRESHOLD] = str(2**20)
    else:
        env.pop(MMAP_THRESHOLD, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--stream", str(path),
                          "--epochs", str(epochs)],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _loader_throughput(path: Path, num_workers: int, independent: bool) -> tuple[float, int]:
    loader = _train_loader(path, num_workers=num_workers, independent=independent)
    times, n = [], 0
    for epoch in range(1 + REPEATS):  # the first epoch warms up (workers, page cache)
        loader.sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        n = sum(len(batch["index"]) for batch in loader)
        times.append(time.perf_counter() - t0)
    del loader  # ends its workers
    return float(np.median(times[1:])), n


def _sequential_read(path: Path, pattern: str = "shard-*.h5") -> tuple[float, int]:
    """Seconds to read every data file whole (page cache warm), and the bytes read."""
    files = sorted(path.glob(pattern))
    buf = bytearray(16 * 2**20)
    view = memoryview(buf)
    times, total = [], 0
    for _ in range(1 + REPEATS):
        t0 = time.perf_counter()
        total = 0
        for file in files:
            with open(file, "rb", buffering=0) as f:
                while (got := f.readinto(view)) > 0:
                    total += got
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:])), total


def _h5py_loop(path: Path) -> tuple[float, int]:
    import h5py

    times, n = [], 0
    for _ in range(1 + REPEATS):
        t0 = time.perf_counter()
        n = 0
        for shard in sorted(path.glob("shard-*.h5")):
            with h5py.File(shard, "r") as f:
                dset = f["data"]
                out = np.empty(dset.shape, dset.dtype)
                dset.read_direct(out)
                n += dset.shape[0]
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:])), n


def _train_step(path: Path, threads: int) -> float:
    """Windows/s of one ``small`` pretraining step on a batch of the store (CPU)."""
    import torch

    from megfm.data.dataset import WindowDataset

    try:
        from megfm.data.batch import collate_windows
    except ImportError:  # megfm before the Batch type
        from megfm.data.dataset import collate_windows
    from megfm.masking import make_mask
    from megfm.models import MaskedSignalModel, ModelConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dataset = WindowDataset(path)
    batch = collate_windows([dataset[i] for i in range(STEP_BATCH)])
    config = ModelConfig.preset("small", sfreq=SFREQ)
    model = MaskedSignalModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n_patches = batch["x"].shape[-1] // config.patch_samples
    gen = torch.Generator().manual_seed(0)
    args = [batch[k] for k in ("x", "pos", "ori", "sensor_type", "sensor_mask")]
    seconds = []
    for _ in range(2):  # the first step warms up
        mask = make_mask(batch["sensor_mask"], n_patches, ratio=config.mask_ratio,
                         generator=gen)
        t0 = time.perf_counter()
        loss = model(*args, mask=mask)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seconds.append(time.perf_counter() - t0)
    return STEP_BATCH / seconds[-1]


def run(quick: bool = False) -> list[dict]:
    """Run the store benchmark and return one row (dict) per measurement.

    Parameters
    ----------
    quick : bool
        Smaller stores (about 47 MB and 470 MB), about a minute.

    Returns
    -------
    rows : list of dict
        Keys ``benchmark``, ``case``, ``workers``, ``windows_per_s``, ``gb_per_s``,
        ``of_sequential``, ``over_step``, ``store_mb``, ``peak_rss_mb``, ``rss_growth_mb``,
        ``target``, ``passed`` (None where not relevant).
    """
    import torch

    from megfm.data.store import write_store

    threads = torch.get_num_threads()
    # One intra-op thread in this process, as in each DataLoader worker: on a small shared
    # machine several threads per process oversubscribe the cores and distort the timings.
    torch.set_num_threads(1)
    sizes = _sizes(quick)
    window_bytes = sizes["n_sensors"] * sizes["n_times"] * 4
    tmp = Path(tempfile.mkdtemp(prefix="megfm-bench-store-"))
    rows: list[dict] = []

    def row(case: str, **kw) -> dict:
        base = {"benchmark": "store", "case": case, "workers": None, "windows_per_s": None,
                "gb_per_s": None, "of_sequential": None, "over_step": None, "store_mb": None,
                "peak_rss_mb": None, "rss_growth_mb": None, "target": None, "passed": None}
        base.update(kw)
        rows.append(base)
        return base

    try:
        windows = _make_windows(sizes["n_recordings"], sizes["per_recording"],
                                sizes["n_sensors"], sizes["n_times"])
        ref = write_store(windows, tmp / "ref")
        big = tmp / "big"
        for _ in range(sizes["growth"]):
            write_store(windows, big)  # appends: 10x the recordings
        del windows
        ref_mb = _dir_mb(ref)

        sec, n_bytes = _sequential_read(ref)
        sequential = n_bytes / sec / 1e9
        row("sequential read of the shard files (limit)", gb_per_s=sequential,
            windows_per_s=n_bytes / window_bytes / sec, store_mb=ref_mb)
        step = _train_step(ref, threads)
        row(f"small training step (batch {STEP_BATCH}, {threads} threads)",
            windows_per_s=step, gb_per_s=step * window_bytes / 1e9)
        sec, n = _h5py_loop(ref)
        row("h5py read of whole shards", windows_per_s=n / sec,
            gb_per_s=n * window_bytes / sec / 1e9, of_sequential=n * window_bytes / sec / 1e9
            / sequential, store_mb=ref_mb)
        samplers = [("runs", False), ("independent", True)] if _has_runs() else \
            [("independent", True)]
        sources = [("", ref, sequential)]
        if _has_litdata():
            import litdata  # noqa: F401  (its import, about 2 s, is not the export's cost)

            t0 = time.perf_counter()
            export = export_litdata(ref, tmp / "ref-litdata")
            export_s = time.perf_counter() - t0
            sec, n_bytes = _sequential_read(export, "chunk-*.bin")
            row("LitData export of the store (megfm export)", store_mb=_dir_mb(export),
                windows_per_s=sizes["n_recordings"] * sizes["per_recording"] / export_s)
            row("sequential read of the LitData chunk files (limit)",
                gb_per_s=n_bytes / sec / 1e9, windows_per_s=n_bytes / window_bytes / sec,
                store_mb=_dir_mb(export))
            sources.append(("LitData, ", export, n_bytes / sec / 1e9))
        for prefix, source, limit in sources:
            for name, independent in samplers:
                for workers in (0, 1, 2):
                    sec, n = _loader_throughput(source, workers, independent)
                    gbs = n * window_bytes / sec / 1e9
                    ok = gbs >= BANDWIDTH_TARGET * limit and n / sec >= STEP_TARGET * step
                    row(f"train loader, {prefix}{name} (batch {BATCH_SIZE})", workers=workers,
                        windows_per_s=n / sec, gb_per_s=gbs, of_sequential=gbs / limit,
                        over_step=n / sec / step, store_mb=_dir_mb(source),
                        target=f">= {BANDWIDTH_TARGET:.0%} seq., >= {STEP_TARGET:g}x step",
                        passed=bool(ok))

        pairs = [("", ref, big)]
        if _has_litdata():
            pairs.append(("LitData, ", export, export_litdata(big, tmp / "big-litdata")))
        for prefix, one, ten in pairs:
            for pinned in (False, True):
                how = f"{MMAP_THRESHOLD}=1MB" if pinned else "default malloc"
                # as many batches from both stores: the growth is the store's, not the
                # allocator's warming up over more batches
                small = _stream_in_subprocess(one, epochs=sizes["growth"], pinned=pinned)
                large = _stream_in_subprocess(ten, epochs=1, pinned=pinned)
                assert large["n_windows"] == small["n_windows"]
                row(f"{prefix}stream {sizes['growth']} epochs, 1x store (0 workers, {how})",
                    store_mb=_dir_mb(one), peak_rss_mb=small["peak_rss_mb"])
                growth = large["peak_rss_mb"] - small["peak_rss_mb"]
                row(f"{prefix}stream 1 epoch, {sizes['growth']}x store (0 workers, {how})",
                    store_mb=_dir_mb(ten), peak_rss_mb=large["peak_rss_mb"],
                    rss_growth_mb=growth, target=f"growth < {RSS_TARGET_MB:g} MB",
                    passed=bool(growth < RSS_TARGET_MB))
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
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small stores, about a minute")
    parser.add_argument("--stream", metavar="STORE", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    args = parse_args(parser, argv, "store")
    if args.stream:
        print(json.dumps(_stream(args.stream, args.epochs)))
        return 0
    t0 = time.perf_counter()
    rows = run(quick=args.quick)
    print(format_table(rows))
    print(f"({time.perf_counter() - t0:.1f} s{', quick' if args.quick else ''})")
    write_json(args.out, {"quick": args.quick, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
