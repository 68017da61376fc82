"""Training-step time of this checkout against an earlier git revision, side by side in one run.

For a change that should make megfm faster without changing what it computes (e.g. packing
the encoder's and decoder's sensor-patches), the baseline is the code before the change. The
revision's ``megfm/`` is exported with ``git archive`` into a temporary folder (the repository
is only read), and each round runs a worker on each tree in turn, so machine load hits both
alike. Both workers build the same preset from the same seed and train on the same synthetic
batches (``bench_pretrain.py``'s Vectorview-like array), so their losses are printed side by
side: equal losses mean the revision computes the same function and only the time differs.

Usage::

    python benchmarks/bench_revision.py --rev 0957ad7                 # small, 3 cases
    python benchmarks/bench_revision.py --rev HEAD --quick            # tiny, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np
from _results import write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Worker: time ``steps`` training steps of one code tree; prints one JSON line.
WORKER = """
import json, sys, time
tree, bench, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path[:0] = [tree, bench]
import torch
torch.set_num_threads(spec["threads"])
import megfm
from megfm import MaskedSignalModel, ModelConfig
from bench_pretrain import _synthetic_batch
assert megfm.__file__.startswith(tree), megfm.__file__
torch.manual_seed(0)
model = MaskedSignalModel(ModelConfig.preset(spec["preset"]))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
batch = _synthetic_batch(torch, spec["sensors"], spec["samples"], spec["batch"])
gen = torch.Generator().manual_seed(1)
times, losses = [], []
for step in range(spec["warmup"] + spec["steps"]):
    t0 = time.perf_counter()
    loss = model(**batch, generator=gen, mask_mode=spec["masking"])["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if step >= spec["warmup"]:
        times.append(time.perf_counter() - t0)
    losses.append(float(loss.detach()))
print(json.dumps({"times": times, "losses": losses}))
"""


def export_revision(rev: str, dest: Path) -> Path:
    """Write ``megfm/`` of git revision ``rev`` under ``dest``; returns ``dest``."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev,
                                  "megfm"], check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"git archive {rev!r} failed: {err.stderr.decode().strip()}; give a "
                         "revision of this repository (e.g. a commit hash or HEAD~1).") from err
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def run_worker(tree: Path, spec: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, str(tree), str(HERE), json.dumps(spec)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_case(trees: dict[str, Path], spec: dict, rounds: int) -> dict:
    times: dict[str, list[float]] = {k: [] for k in trees}
    losses: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, tree in trees.items():  # alternate, so load drift hits both
            res = run_worker(tree, spec)
            times[name] += res["times"]
            losses[name] = res["losses"]
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    diff = np.abs(np.subtract(losses["this"], losses["revision"]))
    return {**{k: spec[k] for k in ("preset", "sensors", "samples", "batch", "masking")},
            "this_ms": round(ms["this"], 1), "revision_ms": round(ms["revision"], 1),
            "speedup": round(ms["revision"] / ms["this"], 2),
            "max_loss_diff": float(diff.max())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default=None,
                    help="git revision of the baseline, e.g. HEAD~1 (--quick: default HEAD)")
    ap.add_argument("--quick", action="store_true", help="tiny preset, one round (seconds)")
    ap.add_argument("--rounds", type=int, default=None, help="worker runs per tree and case")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per worker run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON path (default results/revision.json)")
    args = ap.parse_args(argv)
    if args.rev is None:
        if not args.quick:
            ap.error("--rev is required (the git revision to compare with, e.g. HEAD~1)")
        args.rev = "HEAD"
    if args.quick:
        preset, rounds, steps, warmup = "tiny", args.rounds or 1, args.steps or 2, 1
        cases = [(102, 200, 8, "mixed")]
    else:
        preset, rounds, steps, warmup = "small", args.rounds or 3, args.steps or 4, 2
        # the pretraining batches of bench_targets.py (1 s, batch 32) and the 4 s windows of
        # bench_pretrain.py / bench_peers.py
        cases = [(306, 200, 32, "mixed"), (306, 200, 32, "random"), (306, 800, 4, "mixed")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="megfm-rev-") as tmp:
        trees = {"this": ROOT, "revision": export_revision(args.rev, Path(tmp))}
        print(f"this checkout vs {args.rev}: {preset}, {rounds} rounds x {steps} steps, "
              f"{args.threads} threads")
        print(f"{'sensors':>8}{'samples':>8}{'batch':>6}  {'masking':<8}{'this ms':>9}"
              f"{'rev. ms':>9}{'speed-up':>9}{'max |dloss|':>12}")
        for n_sensors, n_times, batch, masking in cases:
            spec = {"preset": preset, "sensors": n_sensors, "samples": n_times, "batch": batch,
                    "masking": masking, "steps": steps, "warmup": warmup,
                    "threads": args.threads}
            row = run_case(trees, spec, rounds)
            rows.append(row)
            print(f"{n_sensors:>8}{n_times:>8}{batch:>6}  {masking:<8}{row['this_ms']:>9.1f}"
                  f"{row['revision_ms']:>9.1f}{row['speedup']:>8.2f}x"
                  f"{row['max_loss_diff']:>12.2e}", flush=True)
    out = Path(args.out) if args.out else HERE / "results" / (
        "revision_quick.json" if args.quick else "revision.json")
    write_json(out, {"revision": args.rev, "device": platform.processor() or platform.machine(),
                     "torch_threads": args.threads, "rounds": rounds, "steps": steps,
                     "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
