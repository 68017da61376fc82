"""Spatial attention maps and attention rollout of a :class:`~megfm.MaskedSignalModel`.

The model compresses the sensors of each time patch into ``K`` latent tokens with a
cross-attention whose weights ``attention["spatial"]`` (B, P, K, S) sum to 1 over the valid
sensors of a window. Averaged over latents, time patches and windows they give one weight
per sensor that sums to 1: the spatial attention map. Attention rollout (Abnar & Zuidema,
2020) follows the temporal transformer blocks ``attention["temporal"]`` (list of
(B, H, N, N), latent token ``n = p * K + k``) to weigh each latent token by how much it
feeds the output, and maps that back to sensors through the spatial weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import mne
import numpy as np

from ..data.batch import iter_batches
from ..data.from_mne import as_windows
from ..data.geometry import SensorGeometry
from ._common import (
    _feature_kwargs,
    _group_keys,
    _load_windows,
    _model_device,
    _split_attention,
    _union_geometry,
    geometry_to_info,
)
from .alignment import alignment_score

__all__ = ["AttentionMaps", "attention_maps", "attention_rollout", "geometry_to_info",
           "increase_over_baseline"]

logger = logging.getLogger(__name__)


def attention_rollout(temporal: Sequence, *, residual: float = 0.5) -> np.ndarray:
    """Relevance of each latent token after rolling attention out through the blocks.

    Each block's attention is averaged over heads, mixed with the identity for the residual
    path (``(1 - residual) * A + residual * I``), rows renormalised, and the blocks chained
    (``R = A_L ... A_1``). The relevance of input token ``j`` is the mean over output tokens
    of ``R[:, j]``.

    Parameters
    ----------
    temporal : list of array, shape (n_windows, n_heads, n_tokens, n_tokens)
        Attention weights of each block (rows sum to 1).
    residual : float
        Weight of the residual (identity) path, in [0, 1].

    Returns
    -------
    relevance : array, shape (n_windows, n_tokens)
        Non-negative, each row sums to 1.
    """
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"'residual' must lie in [0, 1]; got {residual!r}.")
    blocks = [np.asarray(_numpy(a), dtype=np.float64) for a in temporal]
    if not blocks:
        raise ValueError("No temporal attention blocks to roll out.")
    b, _, n, _ = blocks[0].shape
    eye = np.eye(n)
    rollout = np.broadcast_to(eye, (b, n, n)).copy()
    for att in blocks:
        if att.ndim != 4 or att.shape[2:] != (n, n):
            raise ValueError(
                f"Temporal attention blocks must have shape (B, H, N, N) with N={n}; "
                f"got {att.shape}."
            )
        a = (1.0 - residual) * att.mean(axis=1) + residual * eye
        a /= a.sum(axis=-1, keepdims=True)
        rollout = a @ rollout
    relevance = rollout.mean(axis=1)
    return relevance / relevance.sum(axis=1, keepdims=True)


def _numpy(t) -> np.ndarray:
    if hasattr(t, "detach"):
        return t.detach().float().cpu().numpy()
    return np.asarray(t)


@dataclass
class AttentionMaps:
    """Per-sensor attention weights per group of windows (e.g. per state).

    Attributes
    ----------
    geometry : SensorGeometry
        The sensors of the maps (union over recordings, by channel name).
    by : tuple of str
        Metadata columns that define the groups.
    patch_weights : dict of tuple to array, shape (n_patches, n_sensors)
        Mean spatial attention per time patch; each row sums to 1 over the sensors present
        in the group (sensors absent from all its windows are NaN).
    weights : dict of tuple to array, shape (n_sensors,)
        Mean over time patches of ``patch_weights``; sums to 1 (NaN for absent sensors).
    rollout : dict of tuple to array, shape (n_sensors,) | None
        Sensor map of attention rollout; sums to 1 (NaN for absent sensors).
    n_windows : dict of tuple to int
        Windows averaged in each group.
    patch_seconds : float
        Duration of one time patch (s), the "sampling period" of :meth:`to_evoked`.
    """

    geometry: SensorGeometry
    by: tuple[str, ...]
    patch_weights: dict[tuple, np.ndarray]
    weights: dict[tuple, np.ndarray]
    rollout: dict[tuple, np.ndarray] | None
    n_windows: dict[tuple, int]
    patch_seconds: float = 1.0
    info: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ access
    @property
    def names(self) -> list[str]:
        """Channel names, in the order of the weight arrays."""
        return list(self.geometry.names)

    @property
    def keys(self) -> list[tuple]:
        """Group keys (tuples of the ``by`` column values)."""
        return list(self.weights)

    def _key(self, key) -> tuple:
        k = (key,) if isinstance(key, str) else tuple(str(v) for v in key)
        if k not in self.weights:
            available = ", ".join(repr(v[0] if len(v) == 1 else v) for v in self.keys)
            what = self.by[0] if len(self.by) == 1 else "group"
            raise ValueError(
                f"Invalid {what} {key!r}: absent from the data; available: {available}."
            )
        return k

    def get(self, key, *, kind: str = "spatial") -> np.ndarray:
        """Sensor map of one group.

        Parameters
        ----------
        key : str | tuple of str
            The group, e.g. ``"auditory"`` when ``by=("state",)``.
        kind : ``"spatial"`` | ``"rollout"`` | ``"event"``
            Mean spatial attention, the attention-rollout map, or the event-related change
            (:meth:`event_related` with the windows' ``tmin``).

        Returns
        -------
        weights : array, shape (n_sensors,)
            Sums to 1 over present sensors; NaN for absent ones.
        """
        k = self._key(key)
        if kind == "spatial":
            return self.weights[k]
        if kind == "event":
            return self.event_related(k)
        if kind == "rollout":
            if self.rollout is None:
                raise ValueError("These maps were computed with rollout=False; recompute "
                                 "with attention_maps(..., rollout=True).")
            return self.rollout[k]
        raise ValueError(
            f"Invalid value for 'kind': expected 'spatial', 'rollout' or 'event'; got {kind!r}."
        )

    __getitem__ = get

    def alignment(self, expected, key=None, *, kind: str = "spatial"):
        """Alignment scores (:func:`~megfm.explain.alignment_score`) with expected sensors.

        Parameters
        ----------
        expected : dict of str to list of str | list of str
            ``{state: channel names}`` (the simulator's ``ground_truth.json``
            ``expected_sensors``), or the channel names for the one group ``key``.
        key : str | tuple of str | None
            The group, when ``expected`` is a list.
        kind : ``"spatial"`` | ``"rollout"``
            Which map to score.

        Returns
        -------
        scores : dict of str to float | float
            With a dict: one score per group whose first ``by`` value (the state) has an
            expected set (groups are named ``"state"`` or ``"state/label"``); groups without
            one are left out. With a list: the score of ``key``.
        """
        if isinstance(expected, Mapping):
            out = {}
            for k in self.keys:
                names = expected.get(k[0])
                if names:
                    out["/".join(k)] = alignment_score(self.get(k, kind=kind), list(names),
                                                       names=self.names)
            return out
        if key is None:
            raise ValueError("Pass the group 'key' with a list of expected sensors, or a dict "
                             "{state: sensors}.")
        return alignment_score(self.get(key, kind=kind), list(expected), names=self.names)

    def event_related(self, key, *, tmin: float | None = None, patch: int | None = None,
                      ) -> np.ndarray:
        """Event-related attention change of one group of event-locked windows.

        The spatial attention of a post-event time patch relative to the mean of the
        pre-event patches, ``max(0, w_post / w_pre - 1)``, normalised to sum to 1: the sensors
        whose share of attention *grows* after the stimulus (like an event-related power
        change in sensor space). The static part of the map, the sensors a model attends to
        in every state, cancels out.

        Parameters
        ----------
        key : str | tuple of str
            The group, e.g. ``"auditory"``; its windows must be event-locked.
        tmin : float | None
            Start of the windows relative to the event (s), as given to
            :func:`megfm.prepare` / :func:`megfm.make_windows`; default the ``tmin``
            recorded with the windows (``info["tmin"]``), else -0.2.
        patch : int | None
            The post-event patch (index from the window start); default the first patch that
            starts at or after the event.

        Returns
        -------
        change : array, shape (n_sensors,)
            Sums to 1 over present sensors (all zeros when attention grows nowhere); NaN for
            absent ones.
        """
        k = self._key(key)
        locked = self.info.get("event_locked")
        if locked is not None and "/".join(k) not in locked:
            raise ValueError(
                f"Invalid group {key!r} for an event-related map: its windows are not locked to "
                "stimulus events (e.g. resting state); use an event-locked state such as "
                f"{', '.join(map(repr, locked)) or 'auditory'}."
            )
        pw = self.patch_weights[k]
        if tmin is None:
            tmin = float(self.info.get("tmin", -0.2))
        n_pre = int(round(-float(tmin) / self.patch_seconds))
        if n_pre < 1:
            raise ValueError(
                f"Invalid value for 'tmin' ({tmin}): the windows need at least one time patch "
                f"({self.patch_seconds:g} s) before the event to serve as the baseline; use "
                "tmin <= -patch length when preparing the windows."
            )
        post = n_pre if patch is None else int(patch)
        if not n_pre <= post < pw.shape[0]:
            raise ValueError(
                f"Invalid value for 'patch' ({post}): expected a post-event patch index in "
                f"[{n_pre}, {pw.shape[0] - 1}]."
            )
        return increase_over_baseline(pw, n_pre=n_pre, patch=post)

    # ------------------------------------------------------------------ MNE
    def to_evoked(self, key, *, kind: str = "spatial") -> mne.EvokedArray:
        """The map of one group as an :class:`mne.EvokedArray` (plots with ``plot_topomap``).

        Parameters
        ----------
        key : str | tuple of str
            The group, e.g. ``"auditory"``.
        kind : ``"spatial"`` | ``"rollout"``
            ``"spatial"``: one time point per time patch (``times`` = patch onsets in s);
            ``"rollout"``: a single time point.

        Returns
        -------
        evoked : mne.EvokedArray
            Data are attention weights (dimensionless), on an Info built by
            :func:`geometry_to_info`; sensors absent from the group are left out.
        """
        k = self._key(key)
        if kind == "spatial":
            data = self.patch_weights[k].T
        else:
            data = self.get(key, kind=kind)[:, None]
        present = np.all(np.isfinite(data), axis=1)
        info = geometry_to_info(self.geometry, sfreq=1.0 / self.patch_seconds)
        info = mne.pick_info(info, np.flatnonzero(present))
        with info._unlock():
            info["bads"] = []
        comment = "/".join(k) + f" ({kind} attention)"
        return mne.EvokedArray(data[present], info, tmin=0.0, comment=comment,
                               nave=max(1, int(self.n_windows[k])), verbose=False)

    def to_dict(self) -> dict:
        """Plain structure for JSON: per group the weights with channel names."""
        out: dict = {"by": list(self.by), "names": self.names,
                     "patch_seconds": self.patch_seconds, "groups": {}}
        for k in self.keys:
            label = k[0] if len(k) == 1 else "/".join(k)
            entry = {
                "key": list(k),
                "n_windows": int(self.n_windows[k]),
                "weights": _jsonable(self.weights[k]),
                "patch_weights": [_jsonable(row) for row in self.patch_weights[k]],
            }
            if self.rollout is not None:
                entry["rollout"] = _jsonable(self.rollout[k])
            out["groups"][label] = entry
        return out

    def __repr__(self) -> str:
        groups = ", ".join("/".join(k) for k in self.keys)
        return (f"<AttentionMaps | {self.geometry.n_sensors} sensors, by={self.by}, "
                f"groups: {groups}>")


def _jsonable(a: np.ndarray) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=np.float64)]


def increase_over_baseline(patch_maps: np.ndarray, *, n_pre: int, patch: int) -> np.ndarray:
    """``max(0, m[patch] / mean(m[:n_pre]) - 1)`` per sensor, normalised to sum to 1.

    The event-related change of any per-patch sensor map ``m`` (n_patches, n_sensors):
    attention in :meth:`AttentionMaps.event_related`, or signal power as a reference. NaN
    (absent sensors) stays NaN.
    """
    base = np.nanmean(patch_maps[:n_pre], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.clip(patch_maps[patch] / base - 1.0, 0.0, None)
    change[~np.isfinite(patch_maps[patch])] = np.nan
    return _normalise_rows(change)


def _normalise_rows(a: np.ndarray) -> np.ndarray:
    total = np.nansum(a, axis=-1, keepdims=True)
    return a / np.where(total > 0, total, 1.0)


def attention_maps(model, windows_or_store, *, by: Sequence[str] = ("state",),
                   states: Sequence[str] | None = None, rollout: bool = True,
                   batch_size: int = 16, verbose=None) -> AttentionMaps:
    """Per-sensor attention maps of a model over windows, averaged per group.

    For each window the spatial cross-attention ``(P, K, S)`` is averaged over the ``K``
    latents (all heads are already merged in the model's spatial weights) to a
    ``(P, S)`` map whose rows sum to 1 over the window's valid sensors; windows are then
    averaged per group by channel name, so recordings with different or bad sensors mix.

    Parameters
    ----------
    model : MaskedSignalModel
        Any module with ``forward_features(x, pos, ori, sensor_type, sensor_mask,
        return_attention=True)`` following the model contract (``docs/design.md``).
    windows_or_store : Windows | mne.Epochs | mne.io.Raw | path-like
        Windows, or the folder of a store (read with :func:`megfm.read_store`).
    by : sequence of str
        Metadata columns that define the groups (``("state",)``, ``("state", "label")``).
    states : sequence of str | None
        Keep only windows of these states (error if one is absent); all when None.
    rollout : bool
        Also compute the attention-rollout map through the temporal blocks.
    batch_size : int
        Windows per forward pass.
    verbose : bool | str | int | None
        Control the log level (MNE convention).

    Returns
    -------
    maps : AttentionMaps
    """
    import torch
    from tqdm.auto import tqdm

    by = tuple(by)
    if not by:
        raise ValueError("'by' must name at least one metadata column, e.g. ('state',).")
    windows = _load_windows(as_windows(windows_or_store, model))  # also mne.Epochs / Raw
    if windows.n_windows == 0:
        raise ValueError("No windows to explain: the Windows object is empty.")
    indices = np.arange(windows.n_windows)
    if states is not None:
        present = set(windows.metadata["state"].tolist())
        missing = [s for s in states if s not in present]
        if missing:
            raise ValueError(
                f"Invalid value for 'states': {missing} absent from the data; available: "
                f"{sorted(present)}."
            )
        indices = np.flatnonzero(np.isin(windows.metadata["state"], list(states)))
    keys = _group_keys(windows, by)
    union = _union_geometry(windows.geometries)
    col = {n: i for i, n in enumerate(union.names)}
    rec_cols = [np.array([col[n] for n in g.names]) for g in windows.geometries]
    n_union = union.n_sensors

    sums: dict[tuple, np.ndarray] = {}
    roll_sums: dict[tuple, np.ndarray] = {}
    counts: dict[tuple, np.ndarray] = {}
    n_win: dict[tuple, int] = {}
    n_patches = None
    device = _model_device(model)
    fkw = _feature_kwargs(model, windows.sfreq)
    was_training = getattr(model, "training", False)
    model.eval()
    level = verbose if verbose is not None and not isinstance(verbose, bool) else None
    old_level = logger.level
    if level is not None:
        logger.setLevel(level)
    try:
        n_batches = int(np.ceil(len(indices) / max(int(batch_size), 1)))
        with torch.no_grad():
            for batch in tqdm(iter_batches(windows, batch_size=batch_size, indices=indices),
                              total=n_batches, desc="attention maps", disable=verbose is False):
                idx, b = batch.index.numpy(), batch.to(device)
                # positional: any model with megfm's forward_features contract, not only ours
                out = model.forward_features(b.x, b.pos, b.ori, b.sensor_type, b.sensor_mask,
                                             return_attention=True, **fkw)
                _, attn = _split_attention(out)
                spatial = _numpy(attn["spatial"]).astype(np.float64)  # (B, P, K, S)
                if n_patches is None:
                    n_patches = spatial.shape[1]
                patch_maps = spatial.mean(axis=2)  # (B, P, S)
                if rollout:
                    rel = attention_rollout(attn["temporal"])  # (B, P*K)
                    b, p, k, _ = spatial.shape
                    if rel.shape[1] != p * k:
                        raise ValueError(
                            f"Temporal attention has {rel.shape[1]} tokens; expected P*K = {p * k}."
                        )
                    roll_maps = np.einsum("bpk,bpks->bs", rel.reshape(b, p, k), spatial)
                for row, i in enumerate(idx):
                    key = keys[i]
                    rec = int(windows.metadata["recording"][i])
                    cols = rec_cols[rec]
                    s = len(cols)
                    valid = batch.sensor_mask[row, :s].numpy()
                    if key not in sums:
                        sums[key] = np.zeros((n_patches, n_union))
                        roll_sums[key] = np.zeros(n_union)
                        counts[key] = np.zeros(n_union)
                        n_win[key] = 0
                    sums[key][:, cols[valid]] += patch_maps[row][:, :s][:, valid]
                    if rollout:
                        roll_sums[key][cols[valid]] += roll_maps[row, :s][valid]
                    counts[key][cols[valid]] += 1
                    n_win[key] += 1
    finally:
        if was_training:
            model.train()
        logger.setLevel(old_level)

    patch_weights, weights, roll = {}, {}, {}
    for key in sorted(sums):
        absent = counts[key] == 0
        denom = np.where(absent, 1.0, counts[key])
        pw = sums[key] / denom
        pw[:, absent] = np.nan
        patch_weights[key] = _normalise_rows(pw)
        w = np.nan_to_num(patch_weights[key]).mean(axis=0)
        w[absent] = np.nan
        weights[key] = _normalise_rows(w)
        if rollout:
            r = roll_sums[key] / denom
            r[absent] = np.nan
            roll[key] = _normalise_rows(r)
    patch_seconds = windows.n_times / float(n_patches or 1) / windows.sfreq
    events = windows.metadata.get("event")
    locked = set() if events is None else {keys[i] for i in indices if int(events[i]) >= 0}
    event_locked = sorted("/".join(k) for k in locked)
    logger.info("Attention maps for %d groups over %d windows.", len(weights), len(indices))
    return AttentionMaps(geometry=union, by=by, patch_weights=patch_weights, weights=weights,
                         rollout=roll if rollout else None, n_windows=n_win,
                         patch_seconds=patch_seconds,
                         info={"n_patches": n_patches,
                               "tmin": float((windows.info or {}).get("tmin", -0.2)),
                               "event_locked": event_locked})
