"""The main job end to end: simulated cohort -> store -> pretraining -> embeddings ->
migraine-vs-HC study -> attention maps, with a Markdown report that links the figures.

Each stage calls the same public function a user would call on their own data, so the demo
doubles as an integration test of the whole library.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ._io import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["DemoConfig", "run_demo"]


@dataclass
class DemoConfig:
    """Sizes of the demo; the defaults finish in a few minutes on 2 CPU cores."""

    n_subjects: int = 16  # half HC, half migraine
    array: str = "vectorview"  # simulated MEG system
    duration: float = 40.0  # seconds per state and subject
    sim_sfreq: float = 400.0  # simulation rate; prepare resamples to 200 Hz
    states: tuple[str, ...] = ("rest", "auditory", "somatosensory")
    block_size: int = 10  # stimuli per block (several blocks -> habituation)
    window_seconds: float = 1.0  # one window = 10 patches of 0.1 s at 200 Hz
    preset: str = "tiny"  # model size
    max_steps: int = 150  # pretraining steps
    batch_size: int = 32
    n_splits: int = 4  # subject-level folds of the study
    n_permutations: int = 100  # label permutations, each refitting the classifiers
    seed: int = 0


def _stage(name: str, log: list[dict], t0: float) -> float:
    now = time.perf_counter()
    log.append({"stage": name, "seconds": round(now - t0, 1)})
    logger.info("%s done in %.1f s", name, now - t0)
    return now


def run_demo(out: str | Path, config: DemoConfig | None = None, *, progress: bool = True) -> dict:
    """Run the whole pipeline on a small simulated cohort.

    Parameters
    ----------
    out : path-like
        Output folder (created). Holds the cohort, the store, the model, the features,
        the study report, the attention topomaps and ``report.md``.
    config : DemoConfig | None
        Sizes and seeds; defaults are quick.
    progress : bool
        Show progress bars.

    Returns
    -------
    summary : dict
        Timings per stage, the study metrics and the attention alignment scores.
    """
    from .data.prepare import prepare
    from .embedding import embed
    from .evaluate.baselines import raw_features, spectral_features
    from .evaluate.classification import run_study
    from .explain.attention import attention_maps
    from .explain.plotting import plot_state_topomaps
    from .models import load_pretrained
    from .simulate import simulate_cohort
    from .training import pretrain

    cfg = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: list[dict] = []
    t = time.perf_counter()

    cohort_dir = out / "cohort"
    # groups are assigned in turn: half HC, half migraine
    simulate_cohort(cohort_dir, n_subjects=cfg.n_subjects, groups=("HC", "migraine"),
                    states=list(cfg.states), array=cfg.array, duration=cfg.duration,
                    sfreq=cfg.sim_sfreq, block_size=cfg.block_size, seed=cfg.seed,
                    verbose=None if progress else False)
    t = _stage("simulate", timings, t)

    store = out / "store"
    prepared = prepare([cohort_dir], store, window_seconds=cfg.window_seconds, progress=progress)
    t = _stage("prepare", timings, t)

    run_dir = pretrain(store, out / "pretrain", model=cfg.preset, max_steps=cfg.max_steps,
                       batch_size=cfg.batch_size, seed=cfg.seed, progress=progress)
    model = load_pretrained(run_dir)
    t = _stage("pretrain", timings, t)

    features, metadata = embed(model, store, progress=progress)
    np.savez(out / "features.npz", features=features, store=str(store),
             **{k: np.asarray(v) for k, v in metadata.items()})
    t = _stage("embed", timings, t)

    from .data.store import read_store

    windows = read_store(store)
    methods = {
        "megfm": features,
        "raw": raw_features(windows)[0],
        "spectral": spectral_features(windows)[0],
    }
    study = run_study(methods, windows.metadata, task="migraine-vs-HC", classifiers=["logreg"],
                      n_splits=cfg.n_splits, n_permutations=cfg.n_permutations, seed=cfg.seed,
                      out=out / "study", progress=progress)
    t = _stage("evaluate", timings, t)

    maps = attention_maps(model, store, verbose=None if progress else False)
    figures = plot_state_topomaps(maps, out / "figures")
    ground_truth = json.loads((cohort_dir / "ground_truth.json").read_text())
    expected = ground_truth.get("expected_sensors", {})
    alignment = maps.alignment(expected)
    locked = [k for k in maps.keys if "/".join(k) in maps.info.get("event_locked", [])]
    figures += plot_state_topomaps(maps, out / "figures", kind="event", states=locked,
                                   prefix="event")
    event_alignment = maps.alignment({k[0]: expected[k[0]] for k in locked if k[0] in expected},
                                     kind="event")
    t = _stage("explain", timings, t)

    summary = {
        "config": asdict(cfg),
        "timings": timings,
        "prepare": prepared,
        "study": study.summary() if hasattr(study, "summary") else study,
        "attention_alignment": alignment,
        "event_attention_alignment": event_alignment,
        "figures": [str(Path(f).relative_to(out)) for f in figures],
    }
    _write_report(out, summary)
    return summary


def _write_report(out: Path, summary: dict) -> None:
    """Write ``report.md`` (links the figures and tables) and ``summary.json``."""
    lines = ["# megfm demo report", "",
             "Simulated cohort -> store -> pretraining -> embeddings -> study -> attention maps.",
             "Simulated data, not patient data.", "", "## Stages", "",
             "| stage | seconds |", "|---|---|"]
    lines += [f"| {row['stage']} | {row['seconds']} |" for row in summary["timings"]]
    lines += ["", "## Migraine vs HC", "", "See [study/report.md](study/report.md) and the ROC "
              "curves:", "", "![ROC](study/roc.png)", "", "## Attention maps per state", ""]
    for name, score in summary["attention_alignment"].items():
        lines.append(f"- {name}: alignment with the expected sensors = {score:.2f}x uniform")
    for name, score in summary.get("event_attention_alignment", {}).items():
        lines.append(f"- {name}, event-related attention change (`event_{name}.png`): "
                     f"{score:.2f}x uniform")
    lines.append("")
    lines += [f"![{Path(f).stem}]({f})" for f in summary["figures"]]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
