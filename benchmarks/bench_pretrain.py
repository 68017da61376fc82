"""Pretraining step throughput and memory: megfm vs a BERT-style reference, side by side.

One train step = forward + backward + AdamW update (fused on CPU and CUDA, as
``megfm pretrain`` builds it: ``megfm.training._hardware.adamw_kwargs``) on a batch of windows of a synthetic
Vectorview-like array (one magnetometer and two planar gradiometers per location), masked at
the same ratio for both models. The reference (``_reference_model.py``) has the same width,
depth, heads, tokenizer and loss, but one token per sensor-patch, mask tokens and full
attention over all ``S * P`` tokens (the LaBraM / CBraMod design).

Each (model, sensor count) runs in its own subprocess so peak memory is measured cleanly
(CPU: peak resident set size above the level before the model is built; CUDA:
``torch.cuda.max_memory_allocated``). The model FLOP utilisation (MFU) is the FLOPs of one
step (``torch.utils.flop_counter``: forward + backward, so about 3x the forward FLOPs) per
second of the fastest step, over the device's matmul peak *measured in the same run* by a
separate subprocess: an fp32 2048^3 product on the same CPU threads, or a bf16 (fp32 with
``--precision fp32``) 8192^3 product on the GPU. On a CPU ``mfu_cpu_time`` divides the same
FLOPs by the process's CPU seconds per step and per product instead: on a machine shared with
other jobs it is far steadier than wall time with one thread (no thread waits for another
that was descheduled), and equal to it on an idle machine. On a GPU whose name is in ``PEAK_BF16`` the
MFU against the data-sheet dense bf16 peak is reported too (``mfu_spec``).

``--compile`` also times the megfm step on its static-shape path, eager (what the static
shapes cost by themselves) and compiled whole as ``megfm pretrain --compile`` does
(``megfm.training._hardware.compile_model``; first step = compile time, reported apart), and
checks that the compiled loss and gradients match the packed eager model's on the same batch
and mask; a compile failure is reported in the row (``compile_error``), not raised.

Usage::

    python benchmarks/bench_pretrain.py            # CPU, preset small, 4 s windows
    python benchmarks/bench_pretrain.py --quick    # well under a minute
    python benchmarks/bench_pretrain.py --device cuda --precision bf16 --preset base
    python benchmarks/bench_pretrain.py --quick --models megfm --compile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from _results import parse_args, write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Dense bf16 peak (FLOP/s) of common accelerators, matched on the CUDA device name.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}
TARGET_SPEEDUP = 3.0  # megfm windows/s over the reference at 306 sensors
TARGET_SCALING = 4.4  # megfm step time at 612 sensors over 153 sensors


# --------------------------------------------------------------------------- worker side

def _time_steps(step, masks, spec: dict, sync, device) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``spec["steps"]`` calls of ``step`` after ``spec["warmup"]``
    (the peak-memory counter of a GPU restarts after the warm-up)."""
    import torch

    for i in range(spec["warmup"]):
        step(masks[i])
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for i in range(spec["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        step(masks[spec["warmup"] + i])
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    return times, cpu_times

def _synthetic_batch(torch, n_sensors: int, n_times: int, batch_size: int, seed: int = 0):
    """Vectorview-like array on a hemisphere: triplets of mag + two orthogonal planar grads."""
    g = torch.Generator().manual_seed(seed)
    n_loc = -(-n_sensors // 3)
    k = torch.arange(n_loc, dtype=torch.float32) + 0.5
    z = 1.0 - k / n_loc  # upper hemisphere, Fibonacci spiral
    phi = k * torch.pi * (3.0 - 5.0**0.5)
    r = (1 - z**2).sqrt()
    normal = torch.stack([r * phi.cos(), r * phi.sin(), z], -1)
    tang1 = torch.nn.functional.normalize(torch.cross(normal, torch.tensor([0.0, 0, 1]).expand_as(normal) + 1e-3, dim=-1), dim=-1)
    tang2 = torch.cross(normal, tang1, dim=-1)
    pos = (0.12 * normal).repeat_interleave(3, 0)[:n_sensors]
    ori = torch.stack([normal, tang1, tang2], 1).reshape(-1, 3)[:n_sensors]
    types = torch.tensor([0, 1, 1]).repeat(n_loc)[:n_sensors]
    x = 100.0 * torch.randn(batch_size, n_sensors, n_times, generator=g)
    b = batch_size
    return {
        "x": x,
        "pos": pos.expand(b, -1, -1).contiguous(),
        "ori": ori.expand(b, -1, -1).contiguous(),
        "sensor_type": types.expand(b, -1).contiguous(),
        "sensor_mask": torch.ones(b, n_sensors, dtype=torch.bool),
    }


def _matmul_peak(spec: dict) -> dict:
    """Measured matmul rate (FLOP/s) of the device: the best of a few n^3 products."""
    import torch

    device = torch.device(spec["device"])
    if device.type == "cpu":
        torch.set_num_threads(spec["threads"])
    n, reps = spec["n"], spec["reps"]
    dtype = torch.bfloat16 if spec["dtype"] == "bf16" else torch.float32
    if device.type == "cuda" and dtype == torch.float32:
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 peak, not TF32's
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    a @ b  # warm-up (allocations, kernel choice)
    sync()
    best = best_cpu = float("inf")
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    flops = 2.0 * n**3
    return {"peak_flops_per_s": flops / best, "matmul": f"{spec['dtype']} {n}^3",
            "device": spec["device"], "threads": spec["threads"], "seconds": best,
            # per CPU second of this process (CPU only): what the MFU in CPU time divides by
            "peak_flops_per_cpu_s": flops / best_cpu if device.type == "cpu" else None}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _worker(spec: dict) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from _reference_model import ReferenceBERT

    from megfm.masking import make_mask
    from megfm.models import MaskedSignalModel, ModelConfig

    torch.manual_seed(0)
    if spec["device"] == "cpu":
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    config = ModelConfig.preset(spec["preset"], sfreq=spec["sfreq"])
    n_times = int(round(spec["seconds"] * spec["sfreq"]))
    n_times -= n_times % config.patch_samples
    batch = _synthetic_batch(torch, spec["sensors"], n_times, spec["batch_size"])
    batch = {k: v.to(device) for k, v in batch.items()}
    n_patches = n_times // config.patch_samples
    gen = torch.Generator().manual_seed(0)
    masks = [
        make_mask(batch["sensor_mask"].cpu(), n_patches, mode="random", ratio=config.mask_ratio,
                  generator=gen).to(device)
        for _ in range(spec["warmup"] + spec["steps"] + 1)
    ]
    rss0 = _rss_mb() if device.type == "cpu" else 0.0
    model = (MaskedSignalModel if spec["model"] == "megfm" else ReferenceBERT)(config).to(device)
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=spec["precision"] == "bf16"
    )
    args = (batch["x"], batch["pos"], batch["ori"], batch["sensor_type"], batch["sensor_mask"])
    step = _training_step(torch, model, args, autocast)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times, cpu_times = _time_steps(step, masks, spec, sync, device)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    step_s = min(times)  # best of N (as timeit): least disturbed by other processes
    out = {
        **spec,
        "n_times": n_times,
        "tokens": spec["sensors"] * n_patches,
        "params": sum(p.numel() for p in model.parameters()),
        "step_s": step_s,
        # CPU seconds of this process per step: unlike wall time, barely changed by other
        # processes competing for the cores (on a shared machine compare these)
        "cpu_step_s": min(cpu_times),
        "windows_per_s": spec["batch_size"] / step_s,
        "peak_mem_mb": peak_mb,
    }
    if spec["flops"]:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            step(masks[-1])
        flops = counter.get_total_flops()
        out["flops_per_step"] = flops  # forward + backward of the batch
        out["flops_per_window"] = flops / spec["batch_size"]
        out["achieved_flops_per_s"] = flops / step_s
        out["achieved_tflops"] = flops / step_s / 1e12
        if spec.get("peak_flops"):  # the measured matmul peak
            out["peak_flops_per_s"] = spec["peak_flops"]
            out["mfu"] = flops / step_s / spec["peak_flops"]
        if spec.get("peak_flops_cpu_time"):  # both in CPU seconds of the process
            out["mfu_cpu_time"] = flops / out["cpu_step_s"] / spec["peak_flops_cpu_time"]
        if spec.get("spec_peak_flops"):  # the data sheet's dense peak
            out["mfu_spec"] = flops / step_s / spec["spec_peak_flops"]
    if spec.get("compile"):
        out.update(_time_compiled(torch, model, args, masks, autocast, sync, spec, step_s,
                                  out["cpu_step_s"]))
    return out


def _training_step(torch, model, args, autocast):
    """``step(mask) -> loss``: one training step of ``model`` on the batch ``args``, with the
    optimiser megfm pretrain builds on this device (fused AdamW)."""
    from megfm.training import adamw_kwargs

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **adamw_kwargs(model.parameters()))

    def step(mask):
        with autocast:
            loss = model(*args, mask=mask)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def _time_compiled(torch, model, args, masks, autocast, sync, spec, eager_step_s,
                   eager_cpu_step_s) -> dict:
    """Time the model with ``compile_model`` (megfm's ``--compile``) like the eager steps.

    A copy of the model (the weights after the eager steps) is timed on the static-shape
    path, eager; another is compiled, its first training step (the compilation) timed apart,
    and its loss and gradients on the last mask compared with the eager model's. Errors of
    either are returned (``compile_error``), not raised.
    """
    import copy

    from megfm.training import compile_model

    def loss_and_grads(m, mask):
        with autocast:
            loss = m(*args, mask=mask)["loss"]
        m.zero_grad(set_to_none=True)
        loss.backward()
        return float(loss), [p.grad.detach().clone() for p in m.parameters() if p.grad is not None]

    def time_training(m):
        return _time_steps(_training_step(torch, m, args, autocast), masks, spec, sync,
                           args[0].device)

    eager_loss, eager_grads = loss_and_grads(model, masks[-1])
    try:
        static = copy.deepcopy(model)
        static.set_static_shapes(True)
        static_times, static_cpu_times = time_training(static)
        compiled = compile_model(copy.deepcopy(model))
        t0 = time.perf_counter()
        compiled_loss, compiled_grads = loss_and_grads(compiled, masks[-1])
        sync()
        first_s = time.perf_counter() - t0
        times, cpu_times = time_training(compiled)
    except Exception as err:  # noqa: BLE001  (any failure is a result to report)
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        return {"compile_error": f"{type(err).__name__}: {' | '.join(lines[:3])[:500]}"}
    rel = abs(compiled_loss - eager_loss) / max(abs(eager_loss), 1e-12)
    # all gradients as one vector: a parameter whose gradient is near 0 has no meaningful
    # relative difference of its own
    diff = sum(float((c - e).square().sum()) for c, e in zip(compiled_grads, eager_grads,
                                                             strict=True))
    grad_rel = (diff / max(sum(float(e.square().sum()) for e in eager_grads), 1e-24)) ** 0.5
    tol = 2e-2 if spec["precision"] == "bf16" else 1e-4
    return {
        "static_eager_step_s": min(static_times),
        "static_eager_cpu_step_s": min(static_cpu_times),
        "compile_first_call_s": first_s,
        "compile_step_s": min(times),
        "compile_speedup": eager_step_s / min(times),
        "compile_cpu_step_s": min(cpu_times),
        "compile_speedup_cpu_time": eager_cpu_step_s / min(cpu_times),
        "compile_eager_loss": eager_loss,
        "compile_loss": compiled_loss,
        "compile_loss_rel_diff": rel,
        "compile_grad_rel_diff": grad_rel,
        "compile_matches": bool(rel <= tol and grad_rel <= tol),
    }


# --------------------------------------------------------------------------- driver side
def _run(spec: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, __file__, "--_worker", json.dumps(spec)],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {**spec, "error": " | ".join(tail) or f"exit code {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _spec_peak_flops(device: str, override: float | None) -> float | None:
    """The data sheet's dense bf16 peak of a known GPU (or ``--peak-tflops``), else None."""
    if override:
        return override * 1e12
    if device != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def _measure_peak(device: str, precision: str, threads: int) -> dict:
    """The matmul peak of the device, measured in a subprocess like the rows."""
    cuda = device == "cuda"
    spec = {"device": device, "threads": threads, "n": 8192 if cuda else 2048,
            "reps": 10 if cuda else 3, "dtype": "bf16" if cuda and precision == "bf16" else "fp32"}
    return _run({**spec, "_peak": True})


def _fmt(row: dict) -> str:
    if "error" in row:
        return f"{row['model']:<10}{row['sensors']:>8}  failed: {row['error']}"
    mfu = f"{100 * row['mfu']:>6.1f}%" if "mfu" in row else "      -"
    gflop = f"{row['flops_per_window'] / 1e9:>9.3f}" if "flops_per_window" in row else "        -"
    rate = (f"{row['achieved_flops_per_s'] / 1e9:>9.1f}" if "achieved_flops_per_s" in row
            else "        -")
    return (
        f"{row['model']:<10}{row['sensors']:>8}{row['tokens']:>8}{row['params'] / 1e6:>8.2f}"
        f"{1e3 * row['step_s']:>11.1f}{1e3 * row.get('cpu_step_s', float('nan')):>10.1f}"
        f"{row['windows_per_s']:>11.2f}{row['peak_mem_mb']:>10.0f}{gflop}{rate}{mfu}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny preset and 2 s windows: a fast smoke run")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device to run on")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                        help="fp32, or bf16 autocast (GPU)")
    parser.add_argument("--preset", default=None,
                        help="model preset (default: small on CPU, base on CUDA, tiny with --quick)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="windows per step (default: 2 on CPU, 32 on CUDA)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps; the fastest is reported (default 3, 10 on CUDA)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--sensors", type=int, nargs="+", default=[153, 306, 612],
                        help="sensor counts; 306 is the headline comparison")
    parser.add_argument("--seconds", type=float, default=None, help="window length (s), default 4")
    parser.add_argument("--sfreq", type=float, default=200.0, help="sampling rate (Hz)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per run (default 2; 1 with --quick, which is far less "
                             "disturbed by other processes on a shared machine)")
    parser.add_argument("--models", nargs="+", default=["megfm", "reference"],
                        choices=("megfm", "reference"), help="models to run")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="data-sheet peak TFLOP/s of the device for mfu_spec (auto for "
                        "H100/H200/A100); mfu itself is against the matmul peak measured in "
                        "the same run")
    parser.add_argument("--compile", action="store_true",
                        help="also time megfm with its blocks compiled (megfm pretrain "
                        "--compile) and check its loss and gradients match the eager model's "
                        "(a compile failure is reported, not raised)")
    parser.add_argument("--reuse-reference", type=Path, default=None,
                        help="take the reference rows from this earlier JSON result instead of "
                             "running them again (they are slow); settings must match")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parse_args(parser, argv, "pretrain")

    if args._worker is not None:
        spec = json.loads(args._worker)
        print(json.dumps(_matmul_peak(spec) if spec.get("_peak") else _worker(spec)))
        return 0

    cuda = args.device == "cuda"
    preset = args.preset or ("tiny" if args.quick else ("base" if cuda else "small"))
    batch_size = args.batch_size or (32 if cuda else 2)
    steps = args.steps or (10 if cuda else 3)
    seconds = args.seconds or (2.0 if args.quick else 4.0)
    args.threads = args.threads or (1 if args.quick else 2)
    out_path = args.out
    spec_peak = _spec_peak_flops(args.device, args.peak_tflops)
    peak_info = _measure_peak(args.device, args.precision, args.threads)
    peak = peak_info.get("peak_flops_per_s")

    print(f"megfm pretraining step: preset={preset} device={args.device} "
          f"precision={args.precision} batch={batch_size} window={seconds:g} s @ {args.sfreq:g} Hz")
    print(f"{'model':<10}{'sensors':>8}{'tokens':>8}{'M par':>8}{'step ms':>11}{'CPU ms':>10}"
          f"{'win/s':>11}{'peak MB':>10}{'GFLOP/w':>9}{'GFLOP/s':>9}{'MFU':>7}")
    old_rows = []
    if args.reuse_reference is not None:
        old_rows = json.loads(args.reuse_reference.read_text())["rows"]
    same = ("preset", "device", "precision", "batch_size", "seconds", "sfreq", "threads")
    rows = []
    for n in args.sensors:
        for model in args.models:
            spec = dict(model=model, sensors=n, preset=preset, device=args.device,
                        precision=args.precision, batch_size=batch_size, steps=steps,
                        warmup=args.warmup, seconds=seconds, sfreq=args.sfreq,
                        threads=args.threads, flops=True, peak_flops=peak,
                        peak_flops_cpu_time=peak_info.get("peak_flops_per_cpu_s"),
                        spec_peak_flops=spec_peak, compile=args.compile and model == "megfm")
            reused = [r for r in old_rows if r["model"] == model == "reference"
                      and r["sensors"] == n and all(r.get(k) == spec[k] for k in same)]
            if model == "reference" and args.reuse_reference is not None and not reused:
                raise SystemExit(f"No matching reference row for {n} sensors in "
                                 f"{args.reuse_reference}; run without --reuse-reference.")
            row = {**reused[0], "reused_from": str(args.reuse_reference)} if reused else _run(spec)
            rows.append(row)
            print(_fmt(row), flush=True)

    def get(model, n, key):
        r = next((r for r in rows if r["model"] == model and r["sensors"] == n), None)
        # rows reused from an older result may lack newer columns (e.g. CPU time)
        return None if r is None or "error" in r else r.get(key)

    summary: dict = {}
    ref_n = 306 if 306 in args.sensors else args.sensors[len(args.sensors) // 2]
    m, r = get("megfm", ref_n, "windows_per_s"), get("reference", ref_n, "windows_per_s")
    if m and r:
        summary["speedup"] = m / r
        ref_cpu, megfm_cpu = get("reference", ref_n, "cpu_step_s"), get("megfm", ref_n, "cpu_step_s")
        if ref_cpu and megfm_cpu:
            summary["speedup_cpu_time"] = ref_cpu / megfm_cpu
        summary["memory_ratio"] = get("megfm", ref_n, "peak_mem_mb") / max(
            get("reference", ref_n, "peak_mem_mb"), 1e-9)
    lo, hi = min(args.sensors), max(args.sensors)
    for model in args.models:
        a, b = get(model, lo, "step_s"), get(model, hi, "step_s")
        if a and b and hi > lo:
            summary[f"{model}_scaling_{hi}_over_{lo}"] = b / a
            summary[f"{model}_scaling_{hi}_over_{lo}_cpu_time"] = (
                get(model, hi, "cpu_step_s") / get(model, lo, "cpu_step_s"))
    print()
    if "error" in peak_info:
        print(f"matmul peak: failed: {peak_info['error']}")
    else:
        print(f"matmul peak ({peak_info['matmul']} on {args.device}, {args.threads} thread(s)): "
              f"{peak_info['peak_flops_per_s'] / 1e12:.3f} TFLOP/s")
    for row in rows:
        if "flops_per_window" in row:
            print(f"{row['model']} @ {row['sensors']}: {row['flops_per_window'] / 1e9:.3f} "
                  f"GFLOP per window (fwd + bwd), {row['achieved_flops_per_s'] / 1e12:.4f} "
                  f"TFLOP/s, MFU {100 * row.get('mfu', float('nan')):.1f}%"
                  + (f" ({100 * row['mfu_cpu_time']:.1f}% in CPU time)"
                     if "mfu_cpu_time" in row else ""))
        if "compile_error" in row:
            print(f"{row['model']} @ {row['sensors']}: torch.compile failed: "
                  f"{row['compile_error']}")
        if "static_eager_step_s" in row:
            print(f"{row['model']} @ {row['sensors']}: static shapes, eager "
                  f"{1e3 * row['static_eager_step_s']:.1f} ms vs packed "
                  f"{1e3 * row['step_s']:.1f} ms per step")
        if "compile_step_s" in row:
            print(f"{row['model']} @ {row['sensors']}: torch.compile step "
                  f"{1e3 * row['compile_step_s']:.1f} ms vs eager {1e3 * row['step_s']:.1f} ms "
                  f"(x{row['compile_speedup']:.2f}, x{row['compile_speedup_cpu_time']:.2f} in CPU "
                  f"time; first call {row['compile_first_call_s']:.1f}"
                  f" s), loss rel. diff {row['compile_loss_rel_diff']:.1e}, gradients "
                  f"{row['compile_grad_rel_diff']:.1e}")
    if "speedup" in summary:
        print(f"at {ref_n} sensors: megfm is {summary['speedup']:.1f}x faster than the reference "
              f"({summary['speedup_cpu_time']:.1f}x in CPU time; target >= {TARGET_SPEEDUP:g}x), "
              f"peak memory {summary['memory_ratio']:.2f}x of it")
    for key, value in summary.items():
        if "_scaling_" in key:
            print(f"{key}: {value:.2f} (sensors x{hi / lo:g}; megfm target <= {TARGET_SCALING})")
    result = {
        "benchmark": "pretrain",
        "command": "python benchmarks/bench_pretrain.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count()},
        "targets": {"speedup_min": TARGET_SPEEDUP, "megfm_scaling_max": TARGET_SCALING},
        "peak": peak_info,
        "rows": rows,
        "summary": summary,
    }
    write_json(out_path, result)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
