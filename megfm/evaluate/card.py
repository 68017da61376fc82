"""Scorecard: what a model's features carry, measured in one call.

For one model and one labelled store, :func:`scorecard` reports

* the **downstream study** (:func:`~megfm.evaluate.run_study`, subject-level folds): the
  model's features against raw signals, relative band power, Riemannian tangent-space
  covariances, the model's features concatenated with band power, and the same architecture
  with random weights (what pretraining added), with paired permutation tests;
* **linear probes** of relative band power (per band, over sensor type x scalp region) from
  the pooled output of every encoder block, so "does my model encode alpha power, and where?"
  has an answer; the bands the simulator planted an effect in come from ``ground_truth.json``;
* the **fraction of feature variance explained by subject identity** (frozen brain
  features carry strong subject identity, which a classifier of groups must see through).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.windows import Windows
from ..explain.alignment import find_ground_truth
from .baselines import BANDS, _as_windows

__all__ = ["Scorecard", "block_means", "find_ground_truth", "layer_features", "random_encoder",
           "scorecard", "subject_variance_fraction"]

logger = logging.getLogger(__name__)

#: Effect kinds of the simulator's ground truth -> the band whose relative power they move.
_EFFECT_BANDS = {"theta_power": "theta", "alpha_power": "alpha"}


# ------------------------------------------------------------------------ ground truth
def _planted_bands(ground_truth: dict) -> list[str]:
    bands = {_EFFECT_BANDS[e["kind"]] for e in ground_truth.get("effects", [])
             if e.get("kind") in _EFFECT_BANDS}
    return sorted(bands)


def _load_ground_truth(ground_truth, store) -> dict | None:
    if isinstance(ground_truth, dict):
        return ground_truth
    if ground_truth is None and not isinstance(store, (str, os.PathLike)):
        return None  # in-memory windows: no source to search from
    path = find_ground_truth(store, ground_truth)
    return None if path is None else json.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------ features
def block_means(net, final, blocks) -> dict:
    """The default read-out of :func:`layer_features` for one batch.

    ``"block<i>"``: each block's latents, layer-normalised and averaged over time patches and
    latents; ``"embedding"``: the model's own pooled read-out (what :func:`megfm.embed`
    returns).
    """
    import torch

    out = {}
    for i, z in enumerate(blocks):
        z = torch.nn.functional.layer_norm(z.float(), z.shape[-1:])
        out[f"block{i + 1}"] = z.mean((1, 2))
    out["embedding"] = net.forward_head(final, pre_logits=True)
    return out


def layer_features(model, windows_or_store, *, batch_size: int = 64, device=None,
                   progress: bool = False, readout=block_means) -> dict[str, np.ndarray]:
    """Pooled output of every encoder block, and the model's own read-out.

    Parameters
    ----------
    model : MaskedSignalModel | path-like | str
        As :func:`megfm.embed` takes it.
    windows_or_store : Windows | path-like
        The windows (a store is streamed).
    batch_size : int
        Windows per forward pass.
    device : str | torch.device | None
        Device (default CUDA when available).
    progress : bool
        Show a progress bar.
    readout : callable
        ``readout(net, final, blocks) -> dict of str to Tensor (B, ...)``: the features of
        one batch from the final latents ``(B, P, K, D)`` and each block's un-normalised
        latents (:meth:`MaskedSignalModel.forward_intermediates`). Default
        :func:`block_means`.

    Returns
    -------
    features : dict of str to array, shape (n_windows, ...)
        One array per key of ``readout`` (by default ``"block1"`` ... ``"block<depth>"`` and
        ``"embedding"``), float32, rows in the order of the windows (the store's global
        index).
    """
    import torch
    from tqdm.auto import tqdm

    from ..embedding import data_sfreq, iter_batches, load_model

    net = load_model(model)
    was_training = net.training
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    net = net.to(device).eval()
    sfreq = data_sfreq(windows_or_store)
    batches = iter_batches(windows_or_store, batch_size=batch_size)
    n = next(batches)
    out: dict[str, list] = {}
    order = []
    with torch.inference_mode(), tqdm(total=n, desc="layer features", unit="win",
                                      disable=not progress) as bar:
        for batch in batches:
            order.append(batch.index.numpy())
            final, blocks = net.forward_intermediates(**batch.to(device).inputs(), sfreq=sfreq)
            for key, value in readout(net, final, blocks).items():
                out.setdefault(key, []).append(value.float().cpu().numpy())
            bar.update(len(order[-1]))
    net.train(was_training)
    index = np.concatenate(order)
    rank = np.argsort(index, kind="stable")
    return {k: np.concatenate(v)[rank].astype(np.float32) for k, v in out.items()}


def random_encoder(config, seed: int):
    """The architecture of ``config`` with random weights drawn from ``seed`` (eval mode).

    What a scorecard compares a pretrained model with; the global random state is left as
    it was.
    """
    import torch

    from ..models import MaskedSignalModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return MaskedSignalModel(config).eval()


def subject_variance_fraction(features: np.ndarray, subjects) -> float:
    """Fraction of the (standardised) feature variance explained by subject identity.

    Each column is standardised over windows; the fraction is the between-subject sum of
    squares over the total sum of squares, pooled over columns (one-way ANOVA's eta squared).
    With ``n`` windows of ``g`` subjects, features that carry no subject information give
    about ``(g - 1) / (n - 1)``.
    """
    x = np.asarray(features, np.float64)
    subjects = np.asarray(subjects).astype(str)
    if x.ndim != 2 or len(x) != len(subjects):
        raise ValueError(f"Expected features (n, d) and n subjects; got {x.shape} and "
                         f"{subjects.shape}.")
    sd = x.std(0)
    x = (x[:, sd > 0] - x[:, sd > 0].mean(0)) / sd[sd > 0]
    if not x.size:
        return float("nan")
    from .._grouping import group_means

    _, codes = np.unique(subjects, return_inverse=True)
    means, counts = group_means(x, codes, int(codes.max()) + 1, skipna=False)
    between = float((counts[:, None] * means ** 2).sum())
    return between / float((x ** 2).sum())


def _probe_r2(features: np.ndarray, targets: np.ndarray, subjects: np.ndarray,
              n_splits: int, level: str) -> np.ndarray:
    """Cross-validated R^2 (ridge, folds over subjects) of each target column.

    ``level="subject"`` first averages features and targets over each subject's windows
    (the planted quantities are per subject; a window's band power is mostly estimation
    noise), ``"window"`` fits the windows themselves with folds grouped by subject.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold, KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .._grouping import group_means

    ok = np.isfinite(targets).all(1) & np.isfinite(features).all(1)
    x, y, g = features[ok], targets[ok], subjects[ok]
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    if level == "subject":
        _, codes = np.unique(g, return_inverse=True)
        n_groups = int(codes.max()) + 1
        x = group_means(x, codes, n_groups, skipna=False)[0]
        y = group_means(y, codes, n_groups, skipna=False)[0]
        cv = KFold(n_splits, shuffle=True, random_state=0)
        pred = cross_val_predict(probe, x, y, cv=cv)
    else:
        pred = cross_val_predict(probe, x, y, groups=g, cv=GroupKFold(n_splits))
    return 1.0 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


# ------------------------------------------------------------------------ the scorecard
@dataclass
class Scorecard:
    """Result of :func:`scorecard`.

    Attributes
    ----------
    study : StudyResult
        The downstream study (methods ``<features>/<classifier>``).
    probes : dict of str to dict of str to float
        ``{layer: {band: R^2}}``: cross-validated R^2 of each band's relative power (mean
        over the sensor type x region columns), per encoder block and for the embedding,
        at ``probe_level``.
    planted_bands : list of str
        Bands the cohort's ground truth planted an effect in (empty without ground truth).
    subject_variance : dict of str to float
        Per feature set, the fraction of its variance explained by subject identity (rest
        windows), and ``"chance"``, the value of features without subject information.
    state : str
        The state whose windows the probes and the subject fraction use.
    """

    study: Any
    probes: dict = field(default_factory=dict)
    planted_bands: list = field(default_factory=list)
    subject_variance: dict = field(default_factory=dict)
    state: str = "rest"
    probe_level: str = "subject"

    def auroc(self, name: str) -> float:
        """AUROC of a feature set (its first classifier) or of a full method name."""
        metrics = self.study.metrics
        key = name if name in metrics else next(
            (m for m in metrics if m.split("/")[0] == name), None)
        if key is None:
            raise KeyError(f"No method {name!r}; methods are {list(metrics)}.")
        return float(metrics[key]["auroc"]["value"])

    def planted_probe(self, layer: str = "best") -> float:
        """Mean probe R^2 over the planted bands (``"best"``: the best layer)."""
        if not self.planted_bands:
            raise ValueError("No planted band is known: the scorecard ran without a "
                             "ground_truth.json (pass ground_truth= to megfm.evaluate.scorecard).")
        vals = {k: float(np.mean([v[b] for b in self.planted_bands]))
                for k, v in self.probes.items()}
        return max(vals.values()) if layer == "best" else vals[layer]

    def summary(self) -> dict:
        """JSON-ready dict of everything measured."""
        study = self.study.summary()
        return {"methods": {m: v["auroc"] for m, v in study["methods"].items()},
                "chance": study["chance"], "comparisons": study["comparisons"],
                "n_subjects": study["n_subjects"],
                "probes": self.probes, "planted_bands": self.planted_bands,
                "subject_variance": self.subject_variance, "state": self.state,
                "probe_level": self.probe_level}

    def to_markdown(self) -> str:
        """The scorecard as Markdown tables."""
        s = self.summary()
        lines = [f"# Scorecard ({s['n_subjects']} subjects)", "",
                 "| features | AUROC [95% interval] | p vs chance |", "|---|---|---:|"]
        for m, a in s["methods"].items():
            p = s["chance"].get(m)
            lines.append(f"| {m} | {a['value']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}] | "
                         f"{'n/a' if p is None else f'{p:.4f}'} |")
        if s["comparisons"]:
            lines += ["", "| comparison | difference | p |", "|---|---:|---:|"]
            for c in s["comparisons"]:
                p = "n/a" if c["p_value"] is None else f"{c['p_value']:.4f}"
                lines.append(f"| {c['reference']} - {c['other']} | {c['difference']:+.3f} | {p} |")
        if self.probes:
            bands = list(next(iter(self.probes.values())))
            lines += ["", f"Probe R^2 of relative band power ({self.state} windows, "
                      f"{self.probe_level} level; planted: "
                      f"{', '.join(self.planted_bands) or 'unknown'})", "",
                      "| layer | " + " | ".join(bands) + " |",
                      "|---|" + "---:|" * len(bands)]
            for layer, r2 in self.probes.items():
                lines.append(f"| {layer} | " + " | ".join(f"{r2[b]:.3f}" for b in bands) + " |")
        if self.subject_variance:
            lines += ["", f"Variance explained by subject identity ({self.state} windows)", "",
                      "| features | fraction |", "|---|---:|"]
            lines += [f"| {k} | {v:.3f} |" for k, v in self.subject_variance.items()]
        return "\n".join(lines) + "\n"

    def save(self, out: str | os.PathLike) -> Path:
        """Write ``scorecard.json`` and ``scorecard.md`` (and the study's report) to ``out``."""
        from .._io import atomic_write_text

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "scorecard.json",
                          json.dumps(self.summary(), indent=2, default=float) + "\n")
        atomic_write_text(out / "scorecard.md", self.to_markdown())
        self.study.save(out / "study")
        return out


def scorecard(model, store, *, random_seeds=(0, 1, 2), baselines=("raw", "spectral", "riemann"),
              combine: bool = True, probe_bands="planted", ground_truth=None,
              state: str = "rest", probe_level: str = "subject", task: str = "migraine-vs-HC",
              classifier: str = "logreg",
              n_splits: int = 5, n_permutations: int = 200, n_bootstrap: int = 1000,
              riemann_components: int = 32, seed: int = 0, batch_size: int = 64,
              n_jobs: int | None = None, out=None, progress: bool = True) -> Scorecard:
    """Score a model's features on a labelled store.

    Parameters
    ----------
    model : MaskedSignalModel | path-like | str
        The model or its checkpoint folder (see :func:`megfm.embed`).
    store : path-like | Windows
        Labelled windows (``label`` and ``subject`` metadata).
    random_seeds : sequence of int
        Seeds of encoders of the same configuration with random weights, scored on the same
        folds (``random<seed>``); empty to skip.
    baselines : sequence of str
        Any of ``"raw"`` (:func:`raw_features`), ``"spectral"`` (relative band power,
        :func:`spectral_features`) and ``"riemann"`` (tangent-space covariances,
        :func:`~megfm.evaluate.riemann.covariance_features`).
    combine : bool
        Also score the model's features concatenated with the spectral ones
        (``megfm+spectral``; needs ``"spectral"`` in ``baselines``).
    probe_bands : ``"planted"`` | list of str | None
        Bands whose relative power the probes predict: ``"planted"`` = every band of
        :data:`BANDS`, with the planted ones read from the ground truth (required);
        a list of band names (no ground truth needed); None: no probes.
    ground_truth : path-like | dict | None
        The cohort's ``ground_truth.json`` (default: found from the store's sources).
    state : str
        State of the windows used by the probes and the subject-variance fraction.
    probe_level : ``"subject"`` | ``"window"``
        ``"subject"``: probes fit each subject's mean features to its mean band power
        (5 folds over subjects); ``"window"``: windows, with folds grouped by subject.
    task, classifier, n_splits, n_permutations, n_bootstrap, seed
        Passed to :func:`~megfm.evaluate.run_study`. Comparisons: ``megfm`` against every
        other feature set, and ``megfm+spectral`` against ``spectral``.
    riemann_components : int
        Reduced sensor space of the Riemannian baseline.
    batch_size : int
        Windows per forward pass.
    n_jobs : int | None
        Processes refitting the study's label permutations (see
        :func:`~megfm.evaluate.run_study`).
    out : path-like | None
        Folder for ``scorecard.json``, ``scorecard.md`` and the study report.
    progress : bool
        Show progress bars.

    Returns
    -------
    scorecard : Scorecard

    Raises
    ------
    ValueError
        ``probe_bands="planted"`` on a store without a ground truth (its message names
        ``ground_truth.json``), unknown bands or baselines, or no window of ``state``.
    """

    from ..embedding import embed, load_model
    from .baselines import raw_features, spectral_features
    from .classification import run_study
    from .riemann import TangentSpaceBlocks, covariance_features

    if probe_level not in ("subject", "window"):
        raise ValueError(f"Invalid value for 'probe_level': expected 'subject' or 'window'; "
                         f"got {probe_level!r}.")
    unknown = sorted(set(baselines) - {"raw", "spectral", "riemann"})
    if unknown:
        raise ValueError(f"Unknown baseline(s) {unknown}; choose from 'raw', 'spectral', "
                         "'riemann'.")
    truth = None
    if probe_bands == "planted":
        truth = _load_ground_truth(ground_truth, store)
        if truth is None:
            raise ValueError(
                f"The store {store} carries no ground truth (no ground_truth.json found above "
                "its recordings), so the planted quantities are unknown; pass "
                "ground_truth='COHORT/ground_truth.json' or probe_bands=['theta', ...].")
        bands, planted = list(BANDS), _planted_bands(truth)
    elif probe_bands is None:
        bands, planted = [], []
    else:
        bands, planted = list(probe_bands), []
        bad = sorted(set(bands) - set(BANDS))
        if bad:
            raise ValueError(f"Unknown band(s) {bad}; bands are {list(BANDS)}.")
    windows: Windows = _as_windows(store)
    meta = windows.metadata
    in_state = np.flatnonzero(np.asarray(meta["state"]).astype(str) == state)
    if not len(in_state):
        raise ValueError(f"No window of state {state!r}; states are "
                         f"{sorted(set(np.asarray(meta['state']).astype(str)))}.")
    net = load_model(model)
    layers = layer_features(net, windows, batch_size=batch_size, progress=progress)
    features: dict[str, np.ndarray] = {"megfm": layers["embedding"]}
    for s in random_seeds:
        # only the read-out is used: megfm.embed, not every block's pooled latents
        features[f"random{s}"] = embed(random_encoder(net.config, s), windows,
                                       batch_size=batch_size, progress=progress)[0]
    preprocessors = {}
    if "raw" in baselines:
        from .baselines import RawPCA

        features["raw"] = raw_features(windows)[0]
        preprocessors["raw"] = RawPCA()
    if "spectral" in baselines or bands:
        spectral, spectral_names = spectral_features(windows)
    if "spectral" in baselines:
        features["spectral"] = spectral
        if combine:
            features["megfm+spectral"] = np.concatenate([features["megfm"], spectral], axis=1)
    if "riemann" in baselines:
        features["riemann"] = covariance_features(windows, n_components=riemann_components)[0]
        preprocessors["riemann"] = TangentSpaceBlocks(n_channels=riemann_components)
    reference: list = ["megfm"]
    if "megfm+spectral" in features:
        reference.append((f"megfm+spectral/{classifier}", f"spectral/{classifier}"))
    study = run_study(features, meta, task=task, classifiers=[classifier], n_splits=n_splits,
                      n_permutations=n_permutations, n_bootstrap=n_bootstrap, seed=seed,
                      reference=reference, preprocessors=preprocessors, progress=progress,
                      n_jobs=n_jobs)
    subjects = np.asarray(meta["subject"]).astype(str)
    n_subjects = len(np.unique(subjects[in_state]))
    probes: dict[str, dict[str, float]] = {}
    if bands:
        if n_subjects < 2:
            raise ValueError(f"Probes need windows of >= 2 subjects in state {state!r}.")
        band_cols = {band: [i for i, name in enumerate(spectral_names)
                            if name.startswith(f"relpow_{band}_")] for band in bands}
        for band, cols in band_cols.items():
            if not cols:
                raise ValueError(f"Band {band!r} lies above the Nyquist frequency of the store.")
        targets, groups = spectral[in_state], subjects[in_state]
        for layer, x in layers.items():
            x_state = x[in_state]
            probes[layer] = {
                band: float(np.mean(_probe_r2(x_state, targets[:, cols], groups,
                                              min(5, n_subjects), probe_level)))
                for band, cols in band_cols.items()}
    variance = {name: subject_variance_fraction(x[in_state], subjects[in_state])
                for name, x in features.items() if name in ("megfm", "spectral")
                or name.startswith("random")}
    variance["chance"] = (n_subjects - 1) / max(len(in_state) - 1, 1)
    card = Scorecard(study=study, probes=probes, planted_bands=planted,
                     subject_variance=variance, state=state, probe_level=probe_level)
    if out is not None:
        card.save(out)
    return card
