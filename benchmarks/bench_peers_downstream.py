"""Downstream quality of megfm next to braindecode's foundation models, on the same folds.

One simulated cohort (:func:`megfm.simulate_cohort`: HC and migraine, rest / auditory /
somatosensory, Vectorview, fixed seed; prepared with :func:`megfm.prepare` into 1 s windows as
``benchmarks/bench_targets.py`` does) and ONE list of subject-level folds shared by every
method, migraine vs HC:

(a) ``megfm frozen``: a pretrained megfm model, frozen, :func:`megfm.embed` features averaged
    per subject and state, standardised logistic regression;
(b) ``megfm fine-tuned``: :func:`megfm.evaluate.make_finetune_method` (encoder + head, end to
    end, layer-wise learning-rate decay) trained per fold on the training subjects' windows;
(c) every braindecode model of ``benchmarks/bench_peers.py`` (same builders, sizes comparable
    to megfm ``small``), trained FROM SCRATCH per fold as a window classifier on the training
    subjects' windows with the same number of optimiser steps, batch size, optimiser,
    schedule and batch order as the others; a subject's score is the mean of its windows'
    probabilities of migraine. Models that cannot take 306 sensors (Labram) get a row that
    says why;
(d) ``spectral``: :func:`megfm.spectral_features` (relative band power per sensor type and
    region, peak alpha frequency, evoked amplitudes) with the same logistic regression.

(a), (d) run inside :func:`megfm.run_study`; (b) and (c) are its ``extra_methods``, so all of
them see the folds the study runner builds (and checks for subject leaks); the benchmark
asserts the folds once more, and inside each trained method, before any fitting. Metrics:
AUROC and balanced accuracy with stratified bootstrap 95 % CIs over subjects, paired
permutation p-values of the AUROC difference between megfm (frozen, and fine-tuned) and
every other method.

The pretrained model is ``--checkpoint DIR`` or, by default, a ``tiny`` model pretrained with
:func:`megfm.pretrain` for ``--pretrain-steps`` steps on a separate simulated cohort (another
seed, no labels used).

braindecode is a benchmark-only dependency; run with the benchmark venv of docs/peers.md
(braindecode and megfm with its lightning installed)::

    export PYTHONPATH=$PWD
    /work/benchvenv/bin/python benchmarks/bench_peers_downstream.py --quick   # ~80 s, 1 core
    /work/benchvenv/bin/python benchmarks/bench_peers_downstream.py           # default size

Without braindecode the peers get a ``skipped`` row. Writes ``--out`` (default
``benchmarks/scratch/peers_downstream[_quick].json``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_peers  # noqa: E402  (sets up the torchaudio stand-in and the peer builders)
import torch  # noqa: E402
from _results import parse_args, write_json  # noqa: E402
from bench_targets import simulate_and_prepare  # noqa: E402
from torch import nn  # noqa: E402

import megfm  # noqa: E402
from megfm.embedding import iter_batches  # noqa: E402
from megfm.evaluate import make_finetune_method  # noqa: E402
from megfm.evaluate.classification import parse_task  # noqa: E402
from megfm.evaluate.splits import check_no_leak, subject_folds  # noqa: E402
from megfm.evaluate.stats import paired_permutation_test  # noqa: E402
from megfm.models import ModelConfig  # noqa: E402

logger = logging.getLogger("bench_peers_downstream")

TASK = "migraine-vs-HC"
STATES = ("rest", "auditory", "somatosensory")
STUDY_SEED = 202  # the study cohort
PRETRAIN_SEED = 101  # the separate, unlabelled pretraining cohort
REF_FROZEN = "megfm/logreg"
REF_FINETUNED = "megfm fine-tuned"

#: Sizes of a run. ``steps`` and ``batch_size`` are shared by every trained method.
SIZES: dict[str, dict[str, Any]] = {
    "quick": dict(n_subjects=10, duration=18.0, n_splits=2, steps=6, batch_size=8,
                  pretrain_subjects=4, pretrain_duration=18.0, pretrain_steps=20,
                  n_permutations=1000, n_bootstrap=1000, threads=1),
    "default": dict(n_subjects=40, duration=20.0, n_splits=4, steps=50, batch_size=16,
                    pretrain_subjects=12, pretrain_duration=30.0, pretrain_steps=200,
                    n_permutations=5000, n_bootstrap=2000, threads=2),
}


# ------------------------------------------------------------------------------------------
# peers: built by bench_peers' factories at this window size
# ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _peer_input(n_times: int, sfreq: float) -> Iterator[None]:
    """Make bench_peers' builders size the peers for ``n_times`` samples at ``sfreq``."""
    old = bench_peers.N_TIMES, bench_peers.SFREQ
    bench_peers.N_TIMES, bench_peers.SFREQ = int(n_times), float(sfreq)
    try:
        yield
    finally:
        bench_peers.N_TIMES, bench_peers.SFREQ = old


def build_peer(name: str, n_sensors: int, n_times: int, sfreq: float, seed: int,
               ) -> tuple[nn.Module, Callable[[nn.Module, dict], torch.Tensor]]:
    """One braindecode peer, seeded, and how to call it on a batch dict (logits).

    Raises ``bench_peers._CannotTake`` when the model cannot take this input.
    """
    torch.manual_seed(seed)
    with _peer_input(n_times, sfreq), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _, _ = bench_peers._peer(name)(n_sensors, "cpu")
    # the same inputs bench_peers gives each peer (its loss closure does not expose them)
    if name == "Labram":  # only reached for <= 128 sensors: the builder refuses more
        import braindecode.models as bm

        ch_names = list(bm.labram.LABRAM_CHANNEL_ORDER)[:n_sensors]

        def call(m, b):
            return m(b["x"], ch_names=ch_names)
    elif name == "LUNA":
        def call(m, b):
            return m(b["x"], channel_locations=b["pos"])
    elif name == "REVE":
        def call(m, b):
            return m(b["x"], pos=b["pos"])
    else:
        def call(m, b):
            return m(b["x"])
    return model, call


# ------------------------------------------------------------------------------------------
# a window classifier trained from scratch, as a method of the study runner
# ------------------------------------------------------------------------------------------
def type_scales(windows: megfm.Windows, indices: np.ndarray, *, n_max: int = 256,
                seed: int = 0) -> np.ndarray:
    """Per-sensor scale (the std of its sensor type) from training windows only.

    Magnetometers (fT) and planar gradiometers (fT/cm) differ in scale; peers trained from
    scratch get each type divided by its standard deviation over (at most ``n_max``) of the
    training windows, so no test window informs the scaling.
    """
    types = np.asarray(windows.geometries[0].types)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(indices, size=min(n_max, len(indices)), replace=False))
    x = np.asarray(windows.data[pick], dtype=np.float64)
    scale = np.ones(len(types), np.float32)
    for t in np.unique(types):
        sd = float(x[:, types == t].std())
        scale[types == t] = sd if sd > 0 else 1.0
    return scale


def _lr_lambda(steps: int) -> Callable[[int], float]:
    warm = max(1, steps // 10)

    def f(step: int) -> float:  # linear warm-up, cosine decay (as megfm.finetune)
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, steps - warm))))
    return f


def train_window_classifier(model: nn.Module, call: Callable, windows: megfm.Windows,
                            train_idx: np.ndarray, y_train: np.ndarray, *, steps: int,
                            batch_size: int, lr: float, seed: int,
                            scale: np.ndarray) -> dict[str, float]:
    """Train ``model`` from scratch on windows ``train_idx`` (labels ``y_train``).

    Batches are drawn with a generator seeded by ``seed`` (the same order for every model
    given the same seed), class-weighted cross-entropy, AdamW with warm-up + cosine decay,
    gradient clipping at 1. Returns the first and last training losses.
    """
    rng = np.random.default_rng([seed, 7])
    counts = np.bincount(y_train, minlength=2).astype(np.float64)
    if (counts == 0).any():
        raise ValueError("The training windows hold a single class; each class needs data.")
    weight = torch.tensor(counts.sum() / (2 * counts), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps))
    y_of = dict(zip(train_idx.tolist(), y_train.tolist(), strict=True))
    s = torch.from_numpy(scale)[None, :, None]
    model.train()
    losses = []
    for _ in range(steps):
        pick = np.sort(rng.choice(train_idx, size=min(batch_size, len(train_idx)),
                                  replace=False))
        _, b = iter_batches(windows, batch_size=len(pick), indices=pick)
        b = b.replace(x=b.x / s)
        y = torch.as_tensor([y_of[int(i)] for i in pick], dtype=torch.int64)
        loss = nn.functional.cross_entropy(call(model, b), y, weight=weight)
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(f"non-finite training loss {loss.item()}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return {"loss_first": losses[0], "loss_last": losses[-1]}


@torch.inference_mode()
def predict_windows(model: nn.Module, call: Callable, windows: megfm.Windows,
                    indices: np.ndarray, scale: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Positive-class probability of each window in ``indices`` (in that order)."""
    model.eval()
    s = torch.from_numpy(scale)[None, :, None]
    out = []
    batches = iter_batches(windows, batch_size=batch_size, indices=indices)
    next(batches)
    for b in batches:
        b = b.replace(x=b.x / s)
        out.append(torch.softmax(call(model, b).float(), -1)[:, 1].numpy())
    return np.concatenate(out)


def assert_subject_split(subjects: np.ndarray, train_idx: np.ndarray,
                         test_idx: np.ndarray) -> None:
    """Fail loudly if any subject has windows on both sides of a fold."""
    shared = set(subjects[train_idx].tolist()) & set(subjects[test_idx].tolist())
    assert not shared, f"subjects {sorted(shared)[:5]} in both training and test windows"
    check_no_leak([(train_idx, test_idx)], subjects)


def peer_method(name: str, windows: megfm.Windows, classes: list[str], *, steps: int,
                batch_size: int, lr: float, seed: int, log: dict) -> Callable:
    """``method(train_idx, test_idx) -> test window scores`` for :func:`megfm.run_study`."""
    subjects = windows.metadata["subject"].astype(str)
    labels = windows.metadata["label"].astype(str)
    n_sensors, n_times = windows.data.shape[1:]
    fold = [0]

    def method(train_idx: np.ndarray, test_idx: np.ndarray) -> np.ndarray:
        train_idx, test_idx = np.asarray(train_idx), np.asarray(test_idx)
        assert_subject_split(subjects, train_idx, test_idx)
        t0 = time.process_time()
        # the same initial weights and batch order in every fold and for every peer
        model, call = build_peer(name, n_sensors, n_times, windows.sfreq, seed)
        scale = type_scales(windows, train_idx, seed=seed)
        y_train = np.array([classes.index(v) for v in labels[train_idx]], dtype=np.int64)
        info = train_window_classifier(model, call, windows, train_idx, y_train, steps=steps,
                                       batch_size=batch_size, lr=lr, seed=seed, scale=scale)
        t1 = time.process_time()
        scores = predict_windows(model, call, windows, test_idx, scale)
        log.setdefault("params", sum(p.numel() for p in model.parameters()))
        log.setdefault("folds", []).append({"fold": fold[0], **info,
                                            "train_cpu_s": t1 - t0,
                                            "predict_cpu_s": time.process_time() - t1})
        fold[0] += 1
        return scores

    method.__name__ = f"peer_{name}"
    return method


def finetune_method(model, windows: megfm.Windows, *, steps: int, batch_size: int,
                    seed: int, log: dict) -> Callable:
    """megfm fine-tuning on the study runner's folds, timed, with the leak assertion."""
    inner = make_finetune_method(model, windows, task=TASK, max_steps=steps,
                                 batch_size=batch_size, seed=seed, accelerator="cpu")
    subjects = windows.metadata["subject"].astype(str)

    def method(train_idx: np.ndarray, test_idx: np.ndarray) -> np.ndarray:
        assert_subject_split(subjects, np.asarray(train_idx), np.asarray(test_idx))
        t0 = time.process_time()
        out = inner(train_idx, test_idx)
        log.setdefault("folds", []).append({"cpu_s": time.process_time() - t0})
        return out

    return method


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------
def pretrained_model(args, work: Path):
    """``--checkpoint`` or a ``tiny`` model pretrained on a separate cohort."""
    if args.checkpoint:
        return megfm.load_pretrained(args.checkpoint), {"checkpoint": str(args.checkpoint)}
    store, _ = simulate_and_prepare(work, "pretrain", n_subjects=args.pretrain_subjects,
                                    duration=args.pretrain_duration, seed=PRETRAIN_SEED)
    t0 = time.perf_counter()
    folder = megfm.pretrain(store, work / "model", model=ModelConfig.preset("tiny"),
                            max_steps=args.pretrain_steps, batch_size=32, seed=args.seed,
                            accelerator="cpu", progress=False, overwrite=True)
    info = {"checkpoint": None, "preset": "tiny", "steps": args.pretrain_steps,
            "subjects": args.pretrain_subjects, "cohort_seed": PRETRAIN_SEED,
            "seconds": round(time.perf_counter() - t0, 1)}
    return megfm.load_pretrained(folder), info


def run(args) -> dict[str, Any]:
    """Simulate, pretrain (unless given), evaluate every method on the same folds."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    bd_version = bench_peers._braindecode_available()
    tmp = None
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="megfm-peers-downstream-")
        work = Path(tmp.name)
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - t_start, 1)
        print(f"[{timings[name]:7.1f} s] {name}", flush=True)

    try:
        store, _ = simulate_and_prepare(work, "study", n_subjects=args.n_subjects,
                                        duration=args.duration, seed=STUDY_SEED)
        windows = megfm.read_store(store)
        lap("simulate + prepare study cohort")
        model, pre_info = pretrained_model(args, work)
        model.eval()
        lap("pretrained model")

        meta = windows.metadata
        subjects = meta["subject"].astype(str)
        classes = parse_task(TASK, meta["label"])
        # the folds run_study builds (same call, same seed); every method uses these
        sel = np.flatnonzero(np.isin(meta["label"].astype(str), classes))
        folds = subject_folds(subjects[sel], meta["label"].astype(str)[sel],
                              n_splits=args.n_splits, seed=args.seed)
        check_no_leak(folds)
        for f in folds:
            assert not set(f.train.tolist()) & set(f.test.tolist()), "subject in train and test"

        features = {"megfm": megfm.embed(model, windows, progress=False)[0],
                    "spectral": megfm.spectral_features(windows)[0]}
        lap("frozen megfm features + spectral features")

        logs: dict[str, dict] = {REF_FINETUNED: {}}
        extra: dict[str, Callable] = {
            REF_FINETUNED: finetune_method(model, windows, steps=args.steps,
                                           batch_size=args.batch_size, seed=args.seed,
                                           log=logs[REF_FINETUNED])}
        notes: dict[str, str] = {}
        n_sensors = windows.data.shape[1]
        for name in bench_peers.PEER_CONFIGS:
            if bd_version is None:
                notes[name] = "skipped: braindecode not installed"
                continue
            try:  # can it take this input at all? (Labram: fixed channel-name vocabulary)
                probe, _ = build_peer(name, n_sensors, windows.data.shape[2], windows.sfreq,
                                      args.seed)
                del probe
            except bench_peers._CannotTake as err:
                notes[name] = f"cannot take {n_sensors} sensors: {err}"
                continue
            except Exception as err:  # noqa: BLE001 - a peer failing must not stop the run
                notes[name] = f"failed to build: {type(err).__name__}: {str(err)[:120]}"
                continue
            logs[name] = {}
            extra[name] = peer_method(name, windows, classes, steps=args.steps,
                                      batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                      log=logs[name])

        res = megfm.run_study(features, meta, task=TASK, classifiers=["logreg"],
                              n_splits=args.n_splits, extra_methods=extra, reference="megfm",
                              n_permutations=args.n_permutations, n_bootstrap=args.n_bootstrap,
                              seed=args.seed, progress=not args.no_progress)
        lap("study (all methods, same folds)")
        # the study runner's folds are the ones asserted above
        assert len(res.folds) == len(folds) and all(
            np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
            for a, b in zip(res.folds, folds, strict=True)), "folds differ between methods"
    finally:
        if tmp is not None:
            tmp.cleanup()

    y, tested = res.y, res.tested
    rows = []
    n_params_megfm = int(sum(p.numel() for n, p in model.named_parameters()
                             if "decoder" not in n and "mask_token" not in n))
    for method in res.methods:
        m = res.metrics[method]
        row: dict[str, Any] = {
            "method": _label(method), "key": method,
            "family": "braindecode" if method in bench_peers.PEER_CONFIGS else "megfm"
            if method.startswith("megfm") else "baseline",
            "params": (n_params_megfm if method.startswith("megfm") else
                       logs.get(method, {}).get("params")),
            "auroc": m["auroc"], "balanced_accuracy": m["balanced_accuracy"],
            "p_vs_megfm_frozen": _p(y, tested, res.scores, REF_FROZEN, method, args),
            "p_vs_megfm_finetuned": _p(y, tested, res.scores, REF_FINETUNED, method, args),
            "train": logs.get(method, {}).get("folds"),
            "note": _NOTES.get(method, bench_peers.PEER_NOTES.get(method, "")),
        }
        rows.append(row)
    for name, note in notes.items():
        rows.append({"method": name, "key": name, "family": "braindecode", "params": None,
                     "auroc": None, "balanced_accuracy": None, "p_vs_megfm_frozen": None,
                     "p_vs_megfm_finetuned": None, "train": None, "note": note})
    summary = res.summary()
    result = {
        "benchmark": "peers_downstream",
        "quick": bool(args.quick),
        "device": bench_peers.device_name("cpu"),
        "torch": torch.__version__,
        "braindecode": bd_version or "not installed",
        "task": TASK,
        "cohort": {"n_subjects": summary["n_subjects"],
                   "subjects_per_class": summary["subjects_per_class"],
                   "n_windows": int(windows.n_windows), "n_sensors": int(n_sensors),
                   "n_times": int(windows.data.shape[2]), "sfreq": float(windows.sfreq),
                   "seconds_per_state": args.duration, "seed": STUDY_SEED,
                   "array": "vectorview", "states": list(STATES)},
        "folds": [{"fold": f.fold, "train": f.train.tolist(), "test": f.test.tolist()}
                  for f in res.folds],
        "training": {"steps": args.steps, "batch_size": args.batch_size, "lr_peers": args.lr,
                     "seed": args.seed, "threads": args.threads},
        "pretrained": pre_info,
        "n_permutations": args.n_permutations, "n_bootstrap": args.n_bootstrap,
        "rows": rows,
        "timings": timings,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_json(args.out, result)
    return result


_NOTES = {
    REF_FROZEN: "pretrained, frozen; mean embedding per subject and state, logistic regression",
    REF_FINETUNED: "megfm.finetune end to end per fold, same steps and batch as the peers",
    "spectral/logreg": "band power, peak alpha, evoked amplitude; logistic regression",
}


def _label(method: str) -> str:
    return {REF_FROZEN: "megfm frozen", "spectral/logreg": "spectral"}.get(method, method)


def _p(y, tested, scores, ref: str, other: str, args) -> float | None:
    if ref == other or ref not in scores or other not in scores:
        return None
    res = paired_permutation_test(y[tested], scores[ref][tested], scores[other][tested],
                                  n_permutations=args.n_permutations, seed=args.seed)
    return float(res["p_value"])


def _ci(m: dict | None) -> str:
    if not m:
        return "-"
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def markdown_table(result: dict[str, Any]) -> str:
    """The results as a Markdown table (with a header line naming cohort and budget)."""
    c, t = result["cohort"], result["training"]
    per = ", ".join(f"{v} {k}" for k, v in c["subjects_per_class"].items())
    lines = [
        f"{result['task']}: {c['n_subjects']} subjects ({per}), {c['n_windows']} windows of "
        f"{c['n_sensors']} sensors x {c['n_times']} samples; {len(result['folds'])} subject-level "
        f"folds shared by every method; trained methods: {t['steps']} steps x batch "
        f"{t['batch_size']} per fold. {result['device']}; braindecode {result['braindecode']}.",
        "",
        "| method | params | AUROC [95% CI] | balanced accuracy [95% CI] | p vs megfm frozen "
        "| p vs megfm fine-tuned | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        params = f"{r['params'] / 1e6:.2f}M" if r["params"] else "-"
        p1 = "-" if r["p_vs_megfm_frozen"] is None else f"{r['p_vs_megfm_frozen']:.3f}"
        p2 = "-" if r["p_vs_megfm_finetuned"] is None else f"{r['p_vs_megfm_finetuned']:.3f}"
        lines.append(f"| {r['method']} | {params} | {_ci(r['auroc'])} | "
                     f"{_ci(r['balanced_accuracy'])} | {p1} | {p2} | {r['note']} |")
    lines.append("")
    lines.append(f"Permutation p-values: paired, two-sided, {result['n_permutations']} "
                 f"permutations; CIs: stratified bootstrap over subjects "
                 f"({result['n_bootstrap']} resamples). Total {result['seconds']:.0f} s.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="10 subjects, 18 s per state, 2 folds, 6 steps per trained method "
                             "and fold, a 20-step tiny pretraining (< 3 min on 1 core)")
    parser.add_argument("--checkpoint", default=None,
                        help="folder of a pretrained megfm model; default: pretrain a tiny "
                             "model on a separate simulated cohort (seed 101)")
    parser.add_argument("--work", default=None,
                        help="folder kept for the cohorts, stores and model (default: a "
                             "temporary folder, removed at the end)")
    size = parser.add_argument_group("sizes (defaults: --quick or the default run)")
    size.add_argument("--n-subjects", type=int, help="study subjects (half HC, half migraine)")
    size.add_argument("--duration", type=float, help="seconds simulated per state and subject")
    size.add_argument("--n-splits", type=int, help="subject-level folds")
    size.add_argument("--steps", type=int,
                      help="optimiser steps per fold of every trained method (peers, fine-tuning)")
    size.add_argument("--batch-size", type=int, help="windows per step of every trained method")
    size.add_argument("--pretrain-subjects", type=int, help="subjects of the pretraining cohort")
    size.add_argument("--pretrain-duration", type=float,
                      help="seconds per state of the pretraining cohort")
    size.add_argument("--pretrain-steps", type=int, help="steps of the default tiny pretraining")
    size.add_argument("--n-permutations", type=int, help="permutations of each paired test")
    size.add_argument("--n-bootstrap", type=int, help="bootstrap resamples of each CI")
    size.add_argument("--threads", type=int, help="torch CPU threads (quick 1, default 2)")
    parser.add_argument("--lr", type=float, default=5e-4,
                        help="peak learning rate of the peers (AdamW, warm-up + cosine)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of folds, initial weights, batch order, bootstrap, tests")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parse_args(parser, argv, "peers_downstream")
    for k, v in SIZES["quick" if args.quick else "default"].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    logging.basicConfig(level=logging.WARNING)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no per-fold trainer banners
    with warnings.catch_warnings():
        # Lightning's advice (few batches, no val loader) and torch.stft's window note,
        # repeated at every fold; the results carry the settings instead
        warnings.filterwarnings("ignore", module=r"(lightning|torch)\b")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*window was not")
        result = run(args)
    print(markdown_table(result))
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
