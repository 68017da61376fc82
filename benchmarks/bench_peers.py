"""Training throughput and memory of megfm next to braindecode's EEG/MEG foundation models.

One run, the same random batches for every model: a training step (forward, loss, backward,
AdamW step) of

* megfm ``tiny`` and ``small``, both as a classifier (full input -> pooled latents -> linear
  head -> cross-entropy: the like-with-like step) and as in pretraining (masked-signal
  reconstruction, half of the sensor-patches hidden);
* braindecode 1.8.1's foundation models (Labram, CBraMod, BIOT, EEGPT, LUNA, REVE) trained from
  scratch as classifiers, each built at a size comparable to megfm ``small`` (about 1 M
  parameters; see docs/peers.md for the exact configurations).

Inputs: 306 sensors x 800 samples (4 s at 200 Hz, MEG-sized), 64 x 800 (EEG-sized) and
scaling rows at 153 / 306 / 612 sensors. Reported: windows/s (fastest timed step, wall
clock) and CPU seconds per window (process time, steadier on a shared machine), each with its
ratio to megfm ``small`` (classifier step) on the same input, the parameter count beside every
row and the peak resident memory above the process baseline during training (CPU: ``VmHWM`` after a
reset through ``/proc/self/clear_refs``, with glibc's mmap threshold fixed so freed tensors go
back to the system; CUDA: ``torch.cuda.max_memory_allocated``).

Times and memory come from two passes over the same cases. On CPU, the timing pass runs in a
fresh process (``--timing-only``) with glibc's allocator as a training job has it; the memory
pass runs in this process with the fixed mmap threshold set before anything is measured. The
fixed threshold makes every tensor above 64 KiB a fresh ``mmap`` whose pages fault in again at
each step; timed under it, models slowed 1.3-2x, unequally (megfm ``small`` 2x, LUNA 1.9x,
EEGPT 1.3x on the 2-core machine), so it is kept out of the times. Set only after a timing
pass in the same process, it inflated the peaks instead, hence two processes.

Two diagnostic rows: ``megfm small, 4 latents`` is ``small`` with 4 latent tokens per time
patch instead of 16 (the temporal transformer's token count / 4; see the latents A/B in
docs/benchmarks.md); ``megfm small spatial stage`` is ``small`` with one latent per time patch
and one temporal block: the tokenizer and the spatial cross-attention over every sensor-patch,
with almost nothing after them. It bounds what any temporal design could make of ``small``.

braindecode is a benchmark-only dependency (``benchmarks/requirements.txt``). It imports
torchaudio at import time; the torchaudio wheels available here do not load against torch
2.13, so this script puts a stand-in (``benchmarks/_shims/torchaudio``) first on ``sys.path``.
The measured models never call torchaudio. Without braindecode, peers are skipped with a line
in the table.

Run ``python benchmarks/bench_peers.py [--quick] [--device cpu|cuda] [--out FILE]``; writes
``--out`` (the recorded result: ``benchmarks/results/peers.json``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIMS = Path(__file__).resolve().parent / "_shims"
for _p in (str(ROOT),):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# idle OpenMP threads sleep instead of spinning, so process CPU time counts work only
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from _results import output_path, parse_args, write_json  # noqa: E402
from torch import nn  # noqa: E402

logger = logging.getLogger("bench_peers")

SFREQ = 200.0
N_TIMES = 800  # 4 s at 200 Hz
N_CLASSES = 2
SPEED_TARGET = 3.0  # megfm small >= 3x faster per window than the fastest comparable peer


# ------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------
def _fix_malloc() -> None:
    """Make glibc return freed tensor memory to the system, so RSS follows live memory."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: fixed, disables the dynamic threshold
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except OSError:  # pragma: no cover - not glibc
        pass


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # pragma: no cover
        pass


def _status_kb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------
def make_batch(n_sensors: int, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """One seeded batch: signals in fT-like units, sensors on a 10 cm sphere."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(n_sensors, 3))
    direction[:, 2] = np.abs(direction[:, 2])  # upper hemisphere, like a helmet
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    pos = 0.1 * direction
    types = np.zeros(n_sensors, dtype=np.int64)
    if n_sensors >= 100:  # MEG-like: 1 magnetometer for 2 planar gradiometers
        types[np.arange(n_sensors) % 3 != 0] = 1
    x = 100.0 * rng.standard_normal((batch_size, n_sensors, N_TIMES)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, size=batch_size)
    return {
        "x": torch.from_numpy(x),
        "pos": torch.from_numpy(np.repeat(pos[None], batch_size, 0).astype(np.float32)),
        "ori": torch.from_numpy(np.repeat(direction[None], batch_size, 0).astype(np.float32)),
        "sensor_type": torch.from_numpy(np.repeat(types[None], batch_size, 0)),
        "sensor_mask": torch.ones(batch_size, n_sensors, dtype=torch.bool),
        "y": torch.from_numpy(y),
    }


# ------------------------------------------------------------------------------------------
# models: each factory returns (module, step_loss(batch) -> loss) or raises _CannotTake
# ------------------------------------------------------------------------------------------
class _CannotTake(Exception):
    """The model cannot take this input (said so in the table)."""


class _MegfmClassifier(nn.Module):
    def __init__(self, preset: str, **overrides: Any) -> None:
        super().__init__()
        from megfm.models import MaskedSignalModel, ModelConfig

        self.backbone = MaskedSignalModel(ModelConfig.preset(preset, **overrides))
        self.head = nn.Linear(self.backbone.config.dim, N_CLASSES)

    def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = self.backbone.forward_features(b["x"], b["pos"], b["ori"], b["sensor_type"],
                                               b["sensor_mask"])
        return self.head(self.backbone.forward_head(feats))


def _megfm_classify(preset: str, **overrides: Any) -> Callable:
    def build(n_sensors: int, device: str):
        model = _MegfmClassifier(preset, **overrides)
        # parameters that take part in the step (the pretraining decoder is not used)
        n_used = sum(p.numel() for n, p in model.named_parameters() if "decoder" not in n)

        def loss(b):
            return nn.functional.cross_entropy(model(b), b["y"])

        return model, loss, n_used
    return build


def _megfm_pretrain(preset: str) -> Callable:
    def build(n_sensors: int, device: str):
        from megfm.models import MaskedSignalModel, ModelConfig

        model = MaskedSignalModel(ModelConfig.preset(preset, mask_mode="random", mask_ratio=0.5))
        gen = torch.Generator(device=device).manual_seed(0)

        def loss(b):
            return model(b["x"], b["pos"], b["ori"], b["sensor_type"], b["sensor_mask"],
                         generator=gen)["loss"]

        return model, loss, None
    return build


#: Peer configurations at a size comparable to megfm ``small`` (~1.2 M parameters).
PEER_CONFIGS: dict[str, dict[str, Any]] = {
    "Labram": dict(embed_dim=96, num_layers=4, num_heads=4),
    "CBraMod": dict(n_layer=3),
    "BIOT": dict(embed_dim=128, num_layers=4, num_heads=4),
    "EEGPT": dict(embed_dim=128, depth=4, num_heads=4),
    "LUNA": dict(embed_dim=32, num_queries=4, depth=4, num_heads=2),
    "REVE": dict(embed_dim=128, depth=4, heads=4, head_dim=32),
}


#: What a reader must know to read a peer's row.
PEER_NOTES: dict[str, str] = {
    "EEGPT": "first mixes all sensors into 19 virtual channels (conv1d), cost ~flat in S",
    "Labram": "needs EEG channel names: given the first S of its 128-name vocabulary",
    "LUNA": "sensor positions given as channel_locations",
    "REVE": "sensor positions given as pos",
    "BIOT": "per-channel STFT tokens",
    "CBraMod": "criss-cross attention over all sensor-patches",
}


def _reve_position_bank() -> None:
    """REVE looks channel names up in a position bank it downloads; we pass positions instead.

    An offline machine cannot download it, so point REVE at a one-entry placeholder bank in a
    temporary folder (never used: sensor positions are given to ``forward``).
    """
    if os.environ.get("REVE_POSITIONS_PATH"):
        return
    folder = Path(tempfile.gettempdir()) / "megfm-bench-reve"
    folder.mkdir(exist_ok=True)
    bank = folder / "reve_positions.json"
    if not bank.exists():
        bank.write_text(json.dumps({"Cz": [0.0, 0.0, 0.1]}))
    os.environ["REVE_POSITIONS_PATH"] = str(folder)


def _peer(name: str) -> Callable:
    def build(n_sensors: int, device: str):
        import braindecode.models as bm

        kw: dict[str, Any] = dict(n_chans=n_sensors, n_times=N_TIMES, sfreq=SFREQ,
                                  n_outputs=N_CLASSES, **PEER_CONFIGS[name])
        call: Callable[[nn.Module, dict], torch.Tensor]
        if name == "Labram":
            order = list(bm.labram.LABRAM_CHANNEL_ORDER)
            if n_sensors > len(order):
                raise _CannotTake(f"fixed vocabulary of {len(order)} EEG channel names")
            ch_names = order[:n_sensors]

            def call(m, b):
                return m(b["x"], ch_names=ch_names)
        elif name == "LUNA":
            def call(m, b):
                return m(b["x"], channel_locations=b["pos"])
        elif name == "REVE":
            _reve_position_bank()

            def call(m, b):
                return m(b["x"], pos=b["pos"])
        else:
            def call(m, b):
                return m(b["x"])
        model = getattr(bm, name)(**kw)

        def loss(b):
            return nn.functional.cross_entropy(call(model, b), b["y"])

        return model, loss, None
    return build


def model_table(include_peers: bool) -> list[tuple[str, str, Callable | None, str]]:
    """(name, family, factory or None, note) for every model of the benchmark."""
    rows: list[tuple[str, str, Callable | None, str]] = [
        ("megfm tiny (classify)", "megfm", _megfm_classify("tiny"), ""),
        ("megfm small (classify)", "megfm", _megfm_classify("small"), "reference"),
        ("megfm small (pretrain)", "megfm", _megfm_pretrain("small"),
         "masked reconstruction, 50% hidden"),
        ("megfm small, 4 latents", "megfm", _megfm_classify("small", n_latents=4),
         "small with n_latents=4 (classify); 16 in the preset"),
        ("megfm small spatial stage", "megfm",
         _megfm_classify("small", n_latents=1, depth=1),
         "diagnostic: small with 1 latent and 1 temporal block (tokenizer + spatial stage)"),
    ]
    for name in PEER_CONFIGS:
        if include_peers:
            rows.append((name, "braindecode", _peer(name), ""))
        else:
            rows.append((name, "braindecode", None, "skipped: braindecode not installed"))
    return rows


# ------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------
def measure(build: Callable, batch: dict[str, torch.Tensor], *, device: str, warmup: int,
            steps: int, seed: int = 0) -> dict[str, Any]:
    """Time ``steps`` training steps after ``warmup`` ones; peak memory over all of them."""
    _trim()
    torch.manual_seed(seed)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _status_kb("VmRSS")
        _reset_peak()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, loss_fn, n_used = build(batch["x"].shape[1], device)
    model.to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b = {k: v.to(device) for k, v in batch.items()}
    times, cpu_times = [], []
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    if not bool(torch.isfinite(loss.detach()).item()):
        raise RuntimeError(f"non-finite loss {loss.item()}")
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        hwm = _status_kb("VmHWM")
        peak_mb = None if (hwm is None or base is None) else (hwm - base) / 1024.0
    del model, opt, b, loss
    _trim()
    # fastest step: the least disturbed by other processes on a shared machine
    step, cpu = min(times), min(cpu_times)
    n = batch["x"].shape[0]
    return {"params": int(n_params), "params_used": int(n_used or n_params),
            "step_s": step, "windows_per_s": n / step,
            "cpu_s_per_window": None if cuda else cpu / n, "peak_mem_mb": peak_mb}


def _spectral_warmup() -> None:
    x = torch.randn(2, 4, N_TIMES, requires_grad=True)
    y = torch.stft(x.flatten(0, 1), n_fft=200, hop_length=100, return_complex=True).abs().sum()
    y = y + nn.functional.conv1d(x, torch.randn(4, 4, 9)).sum() + torch.fft.rfft(x).abs().sum()
    y.backward()


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)} (bf16 autocast)"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} torch threads (fp32)"


def _braindecode_available() -> str | None:
    if str(SHIMS) not in sys.path:
        sys.path.insert(0, str(SHIMS))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import braindecode
            import braindecode.models  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure means "skip the peers"
        logger.warning("braindecode unavailable, peers skipped: %s", err)
        return None
    return str(braindecode.__version__)


def _measure_cases(cases: list, batch_size: int, *, device: str, warmup: int, steps: int,
                   desc: str) -> list[dict[str, Any]]:
    """One row per case: the measurement of :func:`measure`, or why there is none."""
    batches: dict[int, dict] = {}  # one seeded batch per sensor count, shared by the models
    try:
        from tqdm import tqdm
        progress = tqdm(cases, desc=desc, unit="case", file=sys.stderr)
    except ImportError:  # pragma: no cover
        progress = cases
    rows: list[dict[str, Any]] = []
    for label, n_sensors, (name, family, build, note) in progress:
        if n_sensors not in batches:
            batches[n_sensors] = make_batch(n_sensors, batch_size)
        row: dict[str, Any] = {"input": label, "n_sensors": n_sensors, "n_times": N_TIMES,
                               "model": name, "family": family, "params": None,
                               "windows_per_s": None, "ratio_to_megfm_small": None,
                               "cpu_s_per_window": None, "cpu_ratio_to_megfm_small": None,
                               "peak_mem_mb": None, "note": note}
        if build is not None and label == "scaling 306":
            # the same measurement as the MEG-sized row; reuse it
            prev = next(r for r in rows if r["input"] == "MEG-sized" and r["model"] == name)
            row.update({k: prev[k] for k in ("params", "windows_per_s", "peak_mem_mb",
                                             "step_s", "cpu_s_per_window", "note") if k in prev})
        elif build is not None:
            try:
                row.update(measure(build, batches[n_sensors], device=device,
                                   warmup=warmup, steps=steps))
            except _CannotTake as err:
                row["note"] = f"cannot take this input: {err}"
            except Exception as err:  # noqa: BLE001 - a peer failing must not stop the run
                row["note"] = f"failed: {type(err).__name__}: {str(err)[:120]}"
                logger.warning("%s on %s failed: %s", name, label, err)
        if build is not None and family == "braindecode" and name in PEER_NOTES \
                and row["windows_per_s"]:
            row["note"] = PEER_NOTES[name]
        rows.append(row)
        _log_row(progress, row)
    return rows


def _timing_rows_in_child(*, quick: bool, device: str, threads: int,
                          only: list[str] | None) -> list[dict[str, Any]]:
    """Rows of a ``--timing-only`` run of this script in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "timed.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--timing-only", "--out", str(out),
               "--device", device, "--threads", str(threads)] + (["--quick"] if quick else [])
        if only:
            cmd += ["--only", *only]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["rows"]


def run(*, quick: bool, device: str = "cpu", threads: int = 2,
        out: Path | None = None, only: list[str] | None = None,
        timing_only: bool = False) -> dict[str, Any]:
    """Run the benchmark and write the JSON results; returns them."""
    torch.set_num_threads(threads)
    bd_version = _braindecode_available()
    batch_size = 2 if quick else 4
    # --quick: 2 steps, the faster kept (the first pays one-time costs, so it rarely wins)
    warmup, steps = (0, 2) if quick else (1, 3)
    shapes = [("MEG-sized", 306), ("EEG-sized", 64)]
    scaling = [153, 306, 612]
    # --quick: scaling rows for megfm small and the linear-in-sensors peer (LUNA) only
    scale_models = {"megfm small (classify)", "LUNA"} if quick else None
    models = model_table(bd_version is not None)
    if only:
        models = [m for m in models if any(o.lower() in m[0].lower() for o in only)
                  or m[0] == "megfm small (classify)"]
    cases: list[tuple[str, int, tuple]] = [(label, s, m) for label, s in shapes for m in models]
    cases += [(f"scaling {s}", s, m) for s in scaling for m in models
              if scale_models is None or m[0] in scale_models]
    t_start = time.perf_counter()
    cpu_memory = not device.startswith("cuda") and not timing_only
    if cpu_memory:
        # times with the allocator a training job has, in a fresh process; peak memory here,
        # with freed tensors returned to the system (the module docstring says why)
        timed = _timing_rows_in_child(quick=quick, device=device, threads=threads, only=only)
        _fix_malloc()
    # one throw-away step first: the process's one-time costs (kernels, FFT plans, code
    # pages) would otherwise land in the memory and time of the first model measured
    measure(_megfm_classify("tiny"), make_batch(16, 1), device=device, warmup=0, steps=1)
    _spectral_warmup()
    rows = _measure_cases(cases, batch_size, device=device, warmup=warmup, steps=steps,
                          desc="bench_peers (memory)" if cpu_memory else "bench_peers")
    if cpu_memory:
        for row, t in zip(rows, timed, strict=True):
            if (row["model"], row["input"]) != (t["model"], t["input"]):
                raise RuntimeError("the timing process measured other cases than this one")
            row.update({k: t.get(k) for k in ("windows_per_s", "step_s", "cpu_s_per_window")})
    for row in rows:
        ref = next((r for r in rows if r["input"] == row["input"]
                    and r["model"] == "megfm small (classify)"), None)
        if ref and ref["windows_per_s"] and row["windows_per_s"]:
            row["ratio_to_megfm_small"] = row["windows_per_s"] / ref["windows_per_s"]
        if ref and ref["cpu_s_per_window"] and row["cpu_s_per_window"]:
            # > 1: faster than megfm small per window of CPU time
            row["cpu_ratio_to_megfm_small"] = ref["cpu_s_per_window"] / row["cpu_s_per_window"]
    result = {
        "benchmark": "peers",
        "quick": quick,
        "device": device_name(device),
        "torch": torch.__version__,
        "braindecode": bd_version or "not installed",
        "batch_size": batch_size,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "allocator": {"time": "glibc default" + (" (a separate process)" if cpu_memory else ""),
                      "memory": "mmap threshold 64 KiB, trim threshold 128 KiB" if cpu_memory
                      else None},
        "seconds": time.perf_counter() - t_start,
        "target": _target(rows),
        "rows": rows,
    }
    write_json(out or output_path(None, "peers", quick=quick), result)
    return result


def _log_row(progress: Any, row: dict[str, Any]) -> None:
    text = (f"{row['input']} {row['model']}: {_fmt(row['windows_per_s'])} windows/s, "
            f"peak {_fmt(row['peak_mem_mb'], 0)} MB {row['note']}")
    if hasattr(progress, "write"):
        progress.write(text)
    else:  # pragma: no cover
        logger.info(text)


def _target(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue target: megfm small >= 3x faster per window than the fastest peer, less memory."""
    meg = [r for r in rows if r["input"] == "MEG-sized"]
    ref = next((r for r in meg if r["model"] == "megfm small (classify)"), None)
    peers = [r for r in meg if r["family"] == "braindecode" and r["windows_per_s"]]
    if not ref or not ref["windows_per_s"] or not peers:
        return {"speed_ratio": None, "passed": None, "fastest_peer": None}
    fastest = max(peers, key=lambda r: r["windows_per_s"])
    ratio = ref["windows_per_s"] / fastest["windows_per_s"]
    cpu_ratio = (fastest["cpu_s_per_window"] / ref["cpu_s_per_window"]
                 if ref.get("cpu_s_per_window") and fastest.get("cpu_s_per_window") else None)
    less_mem = (ref["peak_mem_mb"] is not None and fastest["peak_mem_mb"] is not None
                and ref["peak_mem_mb"] < fastest["peak_mem_mb"])
    # on CPU, judge on CPU time: wall time also counts waiting for other jobs' cores
    judged = cpu_ratio if cpu_ratio is not None else ratio
    return {"fastest_peer": fastest["model"], "speed_ratio": ratio, "cpu_speed_ratio": cpu_ratio,
            "lower_memory": less_mem, "passed": bool(judged >= SPEED_TARGET and less_mem)}


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def print_table(result: dict[str, Any]) -> None:
    print(f"Device: {result['device']}; torch {result['torch']}; braindecode "
          f"{result['braindecode']}; batch {result['batch_size']}, {result['timed_steps']} "
          f"timed steps after {result['warmup_steps']} warm-up")
    head = (f"{'input':<12} {'S':>4} {'model':<24} {'params':>8} {'win/s':>7} "
            f"{'x small':>7} {'cpu s/w':>7} {'x small':>7} {'peak MB':>7}  note")
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        params = f"{r['params'] / 1e6:.2f}M" if r["params"] else "-"
        print(f"{r['input']:<12} {r['n_sensors']:>4} {r['model']:<24} {params:>8} "
              f"{_fmt(r['windows_per_s']):>7} {_fmt(r['ratio_to_megfm_small']):>7} "
              f"{_fmt(r['cpu_s_per_window'], 3):>7} {_fmt(r['cpu_ratio_to_megfm_small']):>7} "
              f"{_fmt(r['peak_mem_mb'], 0):>7}  {r['note']}")
    t = result["target"]
    if t["passed"] is None:
        print("Target (small >= 3x fastest peer, lower memory): not measured (no peers).")
    else:
        cpu = "-" if t["cpu_speed_ratio"] is None else f"{t['cpu_speed_ratio']:.2f}x"
        print(f"Target: megfm small / fastest peer ({t['fastest_peer']}) = "
              f"{t['speed_ratio']:.2f}x wall, {cpu} CPU time (>= {SPEED_TARGET}x), lower memory: "
              f"{t['lower_memory']} -> {'PASS' if t['passed'] else 'FAIL'}")
    print(f"Total {result['seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="batch 2, 2 timed steps (no separate warm-up), scaling rows for "
                             "megfm small and LUNA only (a few minutes on 2 busy CPU cores)")
    parser.add_argument("--full", action="store_true",
                        help="batch 4, 1 warm-up + 3 timed steps, scaling rows for every model "
                             "(the default when --quick is not given)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device; CUDA runs under bf16 autocast")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only the models whose name contains one of these strings "
                             "(megfm small classify is always kept as the reference)")
    parser.add_argument("--timing-only", action="store_true",
                        help="times only, glibc's allocator untouched, no memory pass (what the "
                        "main run starts in a child process)")
    args = parse_args(parser, argv, "peers")
    logging.basicConfig(level=logging.WARNING)
    result = run(quick=args.quick, device=args.device, threads=args.threads,
                 out=Path(args.out), only=args.only, timing_only=args.timing_only)
    print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
