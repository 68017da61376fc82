"""Embeddings: a pretrained megfm model turns MEG windows into feature vectors.

:func:`embed` streams windows (from memory or from a store, with bounded memory) through
the encoder and pools its latents; :func:`aggregate_by_subject` averages window features
per subject (and state); :class:`Embedder` wraps both as a scikit-learn transformer.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._grouping import group_means
from .data.batch import Batch
from .data.dataset import check_batch, naming_windows
from .data.from_mne import as_windows
from .data.geometry import SensorGeometry
from .data.store import (
    StoreReader,
    is_window_source,
    open_store,
    reading,
    require_window_source,
)
from .data.windows import Windows

__all__ = ["POOLINGS", "Embedder", "aggregate_by_subject", "data_sfreq", "embed",
           "iter_batches", "load_model", "store_metadata"]

logger = logging.getLogger(__name__)

#: Pooling modes of :func:`embed`.
POOLINGS = ("mean", "state_concat", "attention")
#: Poolings of :class:`Embedder`, one row per window (``state_concat`` gives one per subject).
WINDOW_POOLINGS = tuple(p for p in POOLINGS if p != "state_concat")


# ---------------------------------------------------------------------- inputs
def load_model(model: Any) -> torch.nn.Module:
    """Return a model from a model (as is), a checkpoint folder or a preset name.

    Parameters
    ----------
    model : MaskedSignalModel | path-like | str
        A model instance, the folder written by ``save_pretrained`` / ``megfm pretrain``
        (``OUT`` or ``OUT/model``), or a preset name (``"tiny"``...) for an untrained,
        seeded model (only useful as a baseline or in tests).
    """
    from .models import PRESETS, MaskedSignalModel, ModelConfig, load_pretrained

    if isinstance(model, torch.nn.Module):
        return model
    if isinstance(model, str) and model in PRESETS and not Path(model).exists():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return MaskedSignalModel(ModelConfig.preset(model)).eval()
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"Checkpoint folder {path} does not exist.")
        return load_pretrained(path).eval()  # a run folder resolves to RUN/model
    raise TypeError(
        "Invalid value for 'model': expected a MaskedSignalModel, a checkpoint folder or a "
        f"preset name; got {type(model).__name__}."
    )


def store_metadata(store: str | os.PathLike) -> dict[str, np.ndarray]:
    """Metadata columns of every window of a store, in global window order.

    Reads only the small ``meta/`` datasets of each shard (never the signals);
    ``recording`` is the shard index.
    """
    require_window_source(store)
    with open_store(store) as reader:
        return {k: np.asarray(v) for k, v in reader.metadata.items()}


def iter_batches(windows_or_store, *, batch_size: int = 64, indices=None, num_workers: int = 0):
    """Yield the window count, then the batches (:class:`~megfm.data.batch.Batch`), in order.

    :func:`megfm.data.batch.iter_batches` (the one batch builder) preceded by the number of
    windows it will yield, for progress bars.

    Parameters
    ----------
    windows_or_store : Windows | path-like | StoreReader
        In-memory windows, or a store (its folder, a LitData export of it, or an open reader
        of either; streamed with :class:`megfm.WindowDataset`).
    batch_size : int
        Windows per batch.
    indices : array of int | None
        Global window indices to visit (default all), in this order.
    num_workers : int
        DataLoader workers when streaming a store.

    Returns
    -------
    n_windows : int
        Number of windows that will be yielded (first value of the generator).
    """
    from .data.batch import iter_batches as batches

    stream = batches(windows_or_store, batch_size=batch_size, indices=indices,
                     num_workers=num_workers)
    if indices is not None:
        n = len(np.asarray(indices).reshape(-1))
    elif isinstance(windows_or_store, Windows):
        n = windows_or_store.n_windows
    elif isinstance(windows_or_store, StoreReader):
        n = len(windows_or_store)
    elif is_window_source(windows_or_store):
        with open_store(windows_or_store) as reader:
            n = len(reader)
    else:
        n = 0  # not a source: the stream's first step raises the error that says so
    yield n
    yield from stream


def _window_metadata(windows_or_store, indices) -> dict[str, np.ndarray]:
    if isinstance(windows_or_store, (Windows, StoreReader)):
        meta = windows_or_store.metadata
    else:
        meta = store_metadata(windows_or_store)
    if indices is None:
        return {k: np.asarray(v).copy() for k, v in meta.items()}
    idx = np.asarray(indices, dtype=np.int64)
    return {k: np.asarray(v)[idx] for k, v in meta.items()}


# ---------------------------------------------------------------------- pooling
def data_sfreq(windows_or_store) -> float | None:
    """Sampling rate of a Windows, a store or an open store reader (None when unknown)."""
    if isinstance(windows_or_store, (Windows, StoreReader)):
        return float(windows_or_store.sfreq)
    if isinstance(windows_or_store, (str, os.PathLike)):
        with open_store(windows_or_store) as reader:
            return float(reader.sfreq)
    return None


def _pool(model, batch: Batch, pooling: str, sfreq: float | None = None) -> torch.Tensor:
    feats = model.forward_features(**batch.inputs(), sfreq=sfreq)  # (B, P, K, D)
    if pooling == "attention":
        # Parameter-free attention pooling: tokens weighted by their softmax similarity
        # to the mean token (scaled dot product), so salient latents count more.
        tokens = feats.flatten(1, 2)  # (B, N, D)
        query = tokens.mean(dim=1, keepdim=True)  # (B, 1, D)
        weights = torch.softmax((tokens * query).sum(-1) / tokens.shape[-1] ** 0.5, dim=1)
        return (weights[..., None] * tokens).sum(dim=1)
    return model.forward_head(feats, pre_logits=True)  # (B, D): mean over time and latents


def embed(
    model: Any,
    windows_or_store,
    *,
    pooling: str = "mean",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    indices=None,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Embed MEG windows with a pretrained model.

    Parameters
    ----------
    model : MaskedSignalModel | path-like | str
        The model, its checkpoint folder, or a preset name (see :func:`load_model`).
    windows_or_store : Windows | mne.Epochs | mne.io.Raw | path-like
        In-memory windows, MNE data (see :func:`megfm.data.from_mne.windows_from_mne`) or
        a store folder; a store is streamed batch by batch, so memory
        stays bounded by ``batch_size`` windows plus the features.
    pooling : ``"mean"`` | ``"state_concat"`` | ``"attention"``
        ``"mean"``: the model's pooled features (mean over time patches and latents), one
        row per window. ``"attention"``: latents weighted by their softmax similarity to
        their mean, one row per window. ``"state_concat"``: one row per subject (and session):
        the mean window embedding of each state, concatenated over the states present (sorted
        by name); a subject without windows in a state gets zeros there, and the metadata
        column ``n_windows_<state>`` says how many windows each block averages.
    batch_size : int
        Windows per forward pass.
    device : str | torch.device | None
        Device of the computation (default: CUDA when available, else CPU).
    indices : array of int | None
        Embed only these global window indices (default all).
    num_workers : int
        DataLoader workers when streaming a store.
    progress : bool
        Show a progress bar.

    Returns
    -------
    features : array, shape (n, dim)
        float32 features.
    metadata : dict of str to array, shape (n,)
        Per-row metadata: the window metadata columns (plus ``index``, the global window
        index), or for ``"state_concat"`` the subject-level columns ``subject``, ``session``,
        ``label`` and ``n_windows_<state>``.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"Invalid value for 'pooling': expected one of {POOLINGS}; got {pooling!r}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"Invalid value for 'batch_size': expected an integer >= 1; got {batch_size!r}.")
    net = load_model(model)
    windows_or_store = as_windows(windows_or_store, net)  # mne.Epochs / mne.io.Raw
    was_training = net.training
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    net = net.to(device).eval()
    # a store is opened once: its manifest and metadata serve the batches, the sampling
    # rate, the error messages and the returned metadata
    try:
        with reading(windows_or_store) as source:
            batches = iter_batches(source, batch_size=batch_size, indices=indices,
                                   num_workers=num_workers)
            n = next(batches)
            sfreq = data_sfreq(source)
            chunks, order = [], []
            with torch.inference_mode(), tqdm(total=n, desc="embed", unit="win",
                                              disable=not progress) as bar, naming_windows(source):
                for batch in batches:
                    index = batch.index
                    check_batch(batch, "embed")  # name unusable windows by store index
                    batch = batch.to(device)
                    pooled = _pool(net, batch, "attention" if pooling == "attention" else "mean",
                                   sfreq)
                    chunks.append(pooled.float().cpu().numpy())
                    order.append(index.numpy())
                    bar.update(len(index))
            dim = chunks[0].shape[1] if chunks else 0
            features = (np.concatenate(chunks).astype(np.float32) if chunks
                        else np.zeros((0, dim), np.float32))
            index = np.concatenate(order) if order else np.zeros(0, np.int64)
            metadata = _window_metadata(source, index)
    finally:
        net.train(was_training)
    metadata["index"] = index
    if pooling == "state_concat":
        return _state_concat(features, metadata)
    return features, metadata


def _state_concat(features: np.ndarray, metadata: dict) -> tuple[np.ndarray, dict]:
    states = sorted(set(metadata["state"].tolist()))
    session = metadata.get("session", np.full(len(features), ""))
    keys = sorted(set(zip(metadata["subject"].tolist(), session.tolist(), strict=True)))
    dim = features.shape[1]
    out = np.zeros((len(keys), dim * len(states)), np.float32)
    counts = np.zeros((len(keys), len(states)), np.int64)
    labels = []
    for row, (subject, sess) in enumerate(keys):
        sel = (metadata["subject"] == subject) & (session == sess)
        labels.append(_one_label(metadata, sel, subject))
        for j, state in enumerate(states):
            rows = sel & (metadata["state"] == state)
            counts[row, j] = rows.sum()
            if counts[row, j]:
                out[row, j * dim:(j + 1) * dim] = features[rows].mean(axis=0)
    meta = {"subject": np.array([k[0] for k in keys], dtype=str),
            "session": np.array([k[1] for k in keys], dtype=str),
            "label": np.array(labels, dtype=str)}
    for j, state in enumerate(states):
        meta[f"n_windows_{state}"] = counts[:, j]
    return out, meta


def _one_label(metadata: dict, sel: np.ndarray, subject: str) -> str:
    if "label" not in metadata:
        return ""
    labels = sorted(set(metadata["label"][sel].tolist()))
    if len(labels) > 1:
        raise ValueError(
            f"Subject {subject!r} has windows with several labels {labels}; a subject must "
            "have one label (fix participants.tsv or the store metadata)."
        )
    return labels[0] if labels else ""


def aggregate_by_subject(
    features: np.ndarray, metadata: dict, *, per_state: bool = True
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Average window features per subject (and per state).

    Parameters
    ----------
    features : array, shape (n_windows, dim)
        Window features, e.g. from :func:`embed`.
    metadata : dict of str to array, shape (n_windows,)
        Must hold ``subject``; ``state`` when ``per_state``; ``label`` is carried along.
    per_state : bool
        One row per (subject, state) when True, one row per subject otherwise.

    Returns
    -------
    features : array, shape (n_groups, dim)
        Mean feature of each group, float32; rows sorted by subject, then state. A NaN
        feature makes its group's mean NaN (nothing is skipped).
    metadata : dict of str to array, shape (n_groups,)
        ``subject``, ``state`` (when ``per_state``), ``label`` and ``n_windows``.

    See Also
    --------
    megfm.evaluate.classification.subject_state_matrix : the same means in wide format
        (one row per subject, the states side by side), NaN-skipping, for classifiers.
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must have shape (n_windows, dim); got {features.shape}.")
    n = features.shape[0]
    for key, col in metadata.items():
        if np.shape(col) != (n,) and key in ("subject", "state", "label"):
            raise ValueError(
                f"metadata[{key!r}] has {len(col)} entries but features have {n} rows; "
                "pass the metadata returned with these features."
            )
    if "subject" not in metadata:
        raise ValueError("metadata has no 'subject' column; cannot aggregate by subject.")
    if per_state and "state" not in metadata:
        raise ValueError("metadata has no 'state' column; use per_state=False.")
    subjects = np.asarray(metadata["subject"]).astype(str)
    states = np.asarray(metadata["state"]).astype(str) if per_state else np.full(n, "")
    pairs = list(zip(subjects.tolist(), states.tolist(), strict=True))
    keys = sorted(set(pairs))
    pos = {key: row for row, key in enumerate(keys)}
    codes = np.array([pos[key] for key in pairs], dtype=np.int64)
    means, counts = group_means(features, codes, len(keys), skipna=False)
    out = means.astype(np.float32)
    label_of = {s: _one_label(metadata, subjects == s, s) for s in dict.fromkeys(k[0] for k in keys)}
    labels = [label_of[subject] for subject, _ in keys]
    meta = {"subject": np.array([k[0] for k in keys], dtype=str)}
    if per_state:
        meta["state"] = np.array([k[1] for k in keys], dtype=str)
    meta["label"] = np.array(labels, dtype=str)
    meta["n_windows"] = counts
    return out, meta


# ---------------------------------------------------------------------- scikit-learn
class Embedder(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: MEG windows -> megfm embeddings.

    Parameters
    ----------
    checkpoint : path-like | MaskedSignalModel | str | None
        Checkpoint folder (``save_pretrained`` / ``megfm pretrain`` output), a model, or a
        preset name. ``None`` uses an untrained ``"tiny"`` model with a fixed seed (a
        baseline for tests, not a useful feature extractor).
    pooling : ``"mean"`` | ``"attention"``
        Window-level pooling (see :func:`embed`; ``"state_concat"`` is subject-level and
        therefore not a window transformer).
    batch_size : int
        Windows per forward pass.
    device : str
        Torch device.
    geometry : SensorGeometry | None
        Sensor geometry of array input ``X`` (required for arrays, ignored for Windows).
    sfreq : float | None
        Sampling rate of array input; checked against the model's when both are known.

    Attributes
    ----------
    model_ : torch.nn.Module
        The loaded model.
    n_features_in_ : int
        ``n_sensors * n_times`` of the array input seen in ``fit``.
    n_sensors_, n_times_ : int
        Window shape seen in ``fit``.
    embedding_dim_ : int
        Length of the output features.

    Notes
    -----
    ``X`` is a :class:`megfm.Windows`, an array of shape (n_windows, n_sensors, n_times), or
    that array flattened to (n_windows, n_sensors * n_times) (what scikit-learn tools pass
    around). ``mne.Epochs`` and ``mne.io.Raw`` are converted at the model's rate and patch
    length (:func:`megfm.data.from_mne.windows_from_mne`). ``fit`` loads and validates the
    model and learns nothing from ``X``.
    """

    def __init__(self, checkpoint=None, pooling: str = "mean", batch_size: int = 64,
                 device: str = "cpu", geometry: SensorGeometry | None = None,
                 sfreq: float | None = None) -> None:
        self.checkpoint = checkpoint
        self.pooling = pooling
        self.batch_size = batch_size
        self.device = device
        self.geometry = geometry
        self.sfreq = sfreq

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.non_deterministic = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        # X carries a signal per (sensor, time): NaN is invalid, negative values are normal.
        tags.input_tags.allow_nan = False
        return tags

    # -------------------------------------------------------------- helpers
    def _as_windows(self, X, *, fitting: bool) -> Windows:
        X = as_windows(X, self.model_)  # mne.Epochs / mne.io.Raw
        if isinstance(X, Windows):
            return X
        from sklearn.utils.validation import check_array

        if self.geometry is None:
            raise ValueError(
                "Embedder got an array but no sensor geometry: pass geometry=SensorGeometry "
                "(e.g. SensorGeometry.from_info(raw.info)), or give a megfm.Windows."
            )
        if not isinstance(self.geometry, SensorGeometry):
            raise TypeError(
                f"Invalid value for 'geometry': expected a SensorGeometry; got {type(self.geometry).__name__}."
            )
        X = np.asarray(X) if not hasattr(X, "toarray") else X
        n_sensors = self.geometry.n_sensors
        if getattr(X, "ndim", 2) == 3:
            if X.shape[1] != n_sensors:
                raise ValueError(
                    f"X has {X.shape[1]} sensors but the geometry has {n_sensors}; they must match."
                )
            flat = X.reshape(X.shape[0], -1)
        else:
            flat = X
        flat = check_array(flat, dtype=np.float32, ensure_min_samples=1)
        if flat.shape[1] % n_sensors:
            raise ValueError(
                f"X has {flat.shape[1]} features, not a multiple of the {n_sensors} sensors of "
                "the geometry; pass (n_windows, n_sensors, n_times) or its flattened form."
            )
        if not fitting and flat.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {flat.shape[1]} features, but Embedder is expecting "
                f"{self.n_features_in_} features as input (n_sensors * n_times of fit)."
            )
        data = flat.reshape(flat.shape[0], n_sensors, -1)
        patch = self.model_.config.patch_samples if hasattr(self, "model_") else None
        if patch and data.shape[2] < patch:
            raise ValueError(
                f"Windows of {data.shape[2]} samples are shorter than one patch ({patch} "
                "samples) of the model; use longer windows."
            )
        sfreq = self.sfreq if self.sfreq is not None else (_model_sfreq(self.model_) or 1.0)
        return Windows(data=data, sfreq=sfreq, geometries=[self.geometry], metadata={})

    # -------------------------------------------------------------- API
    def fit(self, X, y=None):
        """Load and validate the model (nothing is learned from ``X``).

        Parameters
        ----------
        X : Windows | array, shape (n_windows, n_sensors, n_times) or (n_windows, n_features)
            Windows to check.
        y : None
            Ignored.

        Returns
        -------
        self : Embedder
        """
        if self.pooling not in WINDOW_POOLINGS:
            raise ValueError(
                f"Invalid value for 'pooling': expected one of {WINDOW_POOLINGS} (window-level); "
                f"got {self.pooling!r}. Use megfm.embed(pooling='state_concat') for subject rows."
            )
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"Invalid value for 'batch_size': expected an integer >= 1; got {self.batch_size!r}.")
        source = "tiny" if self.checkpoint is None else self.checkpoint
        # A private copy: fit must not mutate the `checkpoint` parameter (scikit-learn rule).
        self.model_ = copy.deepcopy(source).eval() if isinstance(source, torch.nn.Module) \
            else load_model(source)
        model_sfreq = _model_sfreq(self.model_)
        windows = self._as_windows(X, fitting=True)
        if model_sfreq and abs(windows.sfreq - model_sfreq) > 1e-6 and (
            isinstance(X, Windows) or self.sfreq is not None
        ):
            raise ValueError(
                f"Sampling rate {windows.sfreq:g} Hz differs from the model's {model_sfreq:g} Hz; "
                "resample the recordings (PreprocessConfig.sfreq) to the model's rate."
            )
        self.n_sensors_, self.n_times_ = windows.data.shape[1], windows.n_times
        self.n_features_in_ = self.n_sensors_ * self.n_times_
        self.embedding_dim_ = int(self._transform(windows[:1]).shape[1])
        return self

    def _transform(self, windows: Windows) -> np.ndarray:
        features, _ = embed(self.model_, windows, pooling=self.pooling,
                            batch_size=int(self.batch_size), device=self.device, progress=False)
        return features

    def transform(self, X) -> np.ndarray:
        """Embed windows.

        Parameters
        ----------
        X : Windows | array, shape (n_windows, n_sensors, n_times) or (n_windows, n_features)

        Returns
        -------
        features : array, shape (n_windows, embedding_dim_)
        """
        check_is_fitted(self, "model_")
        return self._transform(self._as_windows(X, fitting=False))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names ``embedder0``, ``embedder1``, ... of the output features."""
        check_is_fitted(self, "embedding_dim_")
        return np.array([f"embedder{i}" for i in range(self.embedding_dim_)], dtype=object)


def _model_sfreq(model) -> float | None:
    value = getattr(getattr(model, "config", None), "sfreq", None)
    return float(value) if value else None
