"""Reconstruction evaluation of a pretrained model on held-out windows, against baselines.

For each masking mode (random sensor-patches, whole sensors, whole time blocks) the model
reconstructs the hidden sensor-patches of every window; NMSE and Pearson r are computed on
the hidden samples only, in the model's per-sensor normalised units (so magnetometers and
gradiometers weigh alike), overall and per state. Baselines get the same windows and masks:

* ``zero``: the per-sensor centre of the window (0 in normalised units);
* ``mean``: the mean of the visible samples of the same sensor in the window;
* ``spline`` (``time`` and ``random`` modes): cubic-spline interpolation of each sensor
  across its hidden samples (:class:`scipy.interpolate.CubicSpline` through every visible
  sample; nearest visible value beyond the ends). Across long gaps of noisy signals it
  overshoots badly, so ``pchip`` (shape-preserving piecewise cubic,
  :class:`scipy.interpolate.PchipInterpolator`) is reported too;
* ``mne`` (``sensor`` mode): MNE's own field interpolation of the hidden sensors from the
  visible ones (:meth:`mne.Epochs.interpolate_bads`, ``mode="accurate"``). The
  :class:`mne.Info` is rebuilt from the store's :class:`SensorGeometry`
  (:meth:`SensorGeometry.to_info`), with the origin at the centre of the sphere best fitting
  the sensor positions. Pass ``info`` to use the recording's own ``mne.Info``.

Event-locked windows (``event >= 0``) also give an evoked-response check: each window is
reconstructed from leave-blocks-out time masks (every time patch hidden exactly once), the
reconstructions are averaged per state, and the evoked field is compared with the true
evoked field (correlation and latency error of the global-field-power peak).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.interpolate import CubicSpline, PchipInterpolator
from tqdm.auto import tqdm

from ..data.geometry import SENSOR_TYPES, SensorGeometry, fit_sphere
from ..data.store import StoreReader, open_store, reading
from ..data.windows import Windows
from ..embedding import data_sfreq, iter_batches, load_model
from ..masking import SINGLE_MASK_MODES

__all__ = ["evaluate_reconstruction", "info_from_geometry", "plot_reconstruction"]

logger = logging.getLogger(__name__)

_MODES = SINGLE_MASK_MODES
# physical unit of megfm data -> SI for MNE: fT -> T, fT/cm -> T/m
_SI = {"mag": 1e-15, "planar_grad": 1e-13, "axial_grad": 1e-15, "opm": 1e-15}


# ---------------------------------------------------------------------- geometry -> MNE
def info_from_geometry(geometry: SensorGeometry, sfreq: float):
    """Build an :class:`mne.Info` from a :class:`SensorGeometry`: :meth:`SensorGeometry.to_info`.

    Parameters
    ----------
    geometry : SensorGeometry
        Sensor positions, orientations and types (device frame).
    sfreq : float
        Sampling rate.

    Returns
    -------
    info : mne.Info
    """
    return geometry.to_info(sfreq)


class _MNEInterpolator:
    """MNE field interpolation of hidden sensors, per recording layout (info cached)."""

    def __init__(self, sfreq: float, info=None) -> None:
        self.sfreq, self.user_info, self._cache = sfreq, info, {}

    def _layout(self, geometry: SensorGeometry):
        key = id(geometry)
        if key not in self._cache:
            if self.user_info is not None:
                import mne

                info = mne.pick_info(self.user_info, [self.user_info["ch_names"].index(n)
                                                      for n in geometry.names])
                with info._unlock():
                    info["bads"] = [n for n, b in zip(geometry.names, geometry.bads, strict=True) if b]
            else:
                info = geometry.to_info(self.sfreq)
            scale = np.array([_SI[k] for k in geometry.type_names])
            origin, _ = fit_sphere(geometry.positions)
            trans = info.get("dev_head_t")
            if geometry.frame == "device" and trans is not None:
                # MNE takes the origin in head coordinates
                origin = trans["trans"][:3, :3] @ origin + trans["trans"][:3, 3]
            self._cache[key] = (info, scale, origin)
        return self._cache[key]

    def __call__(self, data: np.ndarray, geometry: SensorGeometry, hidden: np.ndarray) -> np.ndarray:
        """Rebuild sensors ``hidden`` (bool, (S,)) of ``data`` (S, T) in physical units."""
        import mne

        info, scale, origin = self._layout(geometry)
        info = info.copy()
        with info._unlock():
            info["bads"] = sorted(set(info["bads"]) | {geometry.names[i] for i in np.flatnonzero(hidden)})
        epochs = mne.EpochsArray(data[None] * scale[:, None], info, verbose=False)
        epochs.interpolate_bads(reset_bads=True, mode="accurate", origin=origin, verbose=False)
        return epochs.get_data()[0] / scale[:, None]


# ---------------------------------------------------------------------- baselines
def _spline_fill(x: np.ndarray, hidden: np.ndarray, kind: str = "spline") -> np.ndarray:
    """Cubic interpolation of each row of ``x`` (S, T) across ``hidden`` (S, T).

    ``kind="spline"``: :class:`scipy.interpolate.CubicSpline` through every visible sample;
    ``"pchip"``: shape-preserving piecewise cubic (no overshoot in long gaps).
    """
    out = x.copy()
    t = np.arange(x.shape[1], dtype=np.float64)
    for s in np.flatnonzero(hidden.any(1)):
        vis = ~hidden[s]
        if vis.sum() < 2:
            out[s, hidden[s]] = x[s, vis].mean() if vis.any() else 0.0
            continue
        tv = t[vis]
        cls = CubicSpline if kind == "spline" else PchipInterpolator
        spline = cls(tv, x[s, vis].astype(np.float64), extrapolate=False)
        filled = spline(t[hidden[s]])
        th = t[hidden[s]]
        filled = np.where(th < tv[0], x[s, vis][0], filled)
        filled = np.where(th > tv[-1], x[s, vis][-1], filled)
        out[s, hidden[s]] = filled
    return out


class _Accumulator:
    """Running sums for NMSE and Pearson r over hidden samples."""

    def __init__(self) -> None:
        self.n = 0
        self.st = self.st2 = self.sp = self.sp2 = self.spt = self.sse = 0.0

    def add(self, pred: np.ndarray, true: np.ndarray) -> None:
        pred, true = pred.astype(np.float64).ravel(), true.astype(np.float64).ravel()
        self.n += true.size
        self.st += true.sum()
        self.st2 += (true ** 2).sum()
        self.sp += pred.sum()
        self.sp2 += (pred ** 2).sum()
        self.spt += (pred * true).sum()
        self.sse += ((pred - true) ** 2).sum()

    def result(self) -> dict:
        if self.n == 0:
            return {"nmse": float("nan"), "r": float("nan"), "n_samples": 0}
        sst = self.st2 - self.st ** 2 / self.n
        spp = self.sp2 - self.sp ** 2 / self.n
        cov = self.spt - self.st * self.sp / self.n
        r = cov / np.sqrt(sst * spp) if sst > 0 and spp > 0 else float("nan")
        return {"nmse": float(self.sse / sst) if sst > 0 else float("nan"), "r": float(r),
                "n_samples": int(self.n)}


# ---------------------------------------------------------------------- main entry
def _geometries_and_meta(data) -> tuple[list[SensorGeometry], dict[str, np.ndarray], list[float]]:
    """Geometries, metadata and the event-relative start (tmin, s) of each recording."""
    if isinstance(data, Windows):
        tmin = float(data.info.get("tmin") or 0.0)
        return data.geometries, data.metadata, [tmin] * len(data.geometries)
    if isinstance(data, StoreReader):  # left open: its owner closes it
        tmins = [float(si.get("tmin") or 0.0) for si in data.shard_infos]
        return data.geometries, dict(data.metadata), tmins
    if isinstance(data, (str, os.PathLike)):  # opening it names what is wrong with it
        with open_store(data) as reader:
            return _geometries_and_meta(reader)
    raise TypeError(f"Expected a megfm.Windows or a store folder; got {type(data).__name__}.")


def evaluate_reconstruction(
    model: Any,
    store_or_windows,
    *,
    subjects=None,
    modes: tuple[str, ...] = _MODES,
    ratio: float = 0.5,
    seed: int = 0,
    batch_size: int = 16,
    max_windows: int | None = None,
    baselines: bool = True,
    evoked: bool = True,
    peak_window: tuple[float, float] = (0.015, 0.3),
    info=None,
    figure: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = False,
) -> dict:
    """Score masked reconstruction against simple and MNE baselines.

    Parameters
    ----------
    model : MaskedSignalModel | path-like
        Pretrained model or its folder.
    store_or_windows : path-like | Windows
        Held-out data (a store is streamed).
    subjects : list of str | None
        Evaluate only these subjects (e.g. the held-out ones); default all.
    modes : tuple of str
        Masking modes among ``"random"``, ``"sensor"``, ``"time"``.
    ratio : float
        Fraction of sensor-patches hidden.
    seed : int
        Seed of the masks (the same masks are given to every method). With the same
        ``seed`` and ``batch_size`` the masks of a mode are the same in every call.
    batch_size : int
        Windows per forward pass.
    max_windows : int | None
        Use at most this many windows (a seeded random subset, in store order).
    baselines : bool
        Also score the baselines (MNE interpolation costs a few ms to a second per window).
    evoked : bool
        Evoked-response check on event-locked windows.
    peak_window : tuple of float
        Latencies (s, relative to the event; windows start at the ``tmin`` recorded in the
        store) searched for the evoked peak: the default covers M20/M50 and M100.
    info : mne.Info | None
        The recordings' own info for MNE interpolation (channels matched by name); default
        an info rebuilt from the geometry (see the module notes).
    figure : path-like | None
        Write a PNG of original vs reconstructed traces (and evoked topomaps) here.
    device : str | None
        Torch device (default CUDA when available).
    progress : bool
        Show a progress bar.

    Returns
    -------
    result : dict
        ``{"ratio", "seed", "n_windows", "subjects", "modes": {mode: {method: {"nmse",
        "r", "n_samples"}, ..., "per_state": {state: {method: {...}}}}}, "evoked": {state:
        {method: {"r", "peak_latency_error_ms", "n_windows"}}}, "figure": path | None}``;
        methods are ``model``, ``zero``, ``mean``, ``spline`` and ``pchip`` (random, time)
        and ``mne`` (sensor).
    """
    bad_modes = [m for m in modes if m not in _MODES]
    if bad_modes or not modes:
        raise ValueError(f"Invalid value for 'modes': expected a subset of {_MODES}; got {modes!r}.")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"Invalid value for 'ratio': expected a number in (0, 1); got {ratio!r}.")
    net = load_model(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    net = net.to(device).eval()
    # a store is opened once: its manifest and metadata serve every read below
    with reading(store_or_windows) as source:
        geometries, meta, tmins = _geometries_and_meta(source)
        sfreq = data_sfreq(source)
        n_total = len(meta["subject"])
        keep = np.ones(n_total, bool)
        if subjects is not None:
            subjects = [str(s) for s in subjects]
            missing = sorted(set(subjects) - set(meta["subject"].tolist()))
            if missing:
                raise ValueError(f"Subjects {missing} have no windows in the data.")
            keep &= np.isin(meta["subject"], subjects)
        indices = np.flatnonzero(keep)
        if max_windows is not None and len(indices) > max_windows:
            rng = np.random.default_rng(seed)
            indices = np.sort(rng.choice(indices, size=int(max_windows), replace=False))
        if len(indices) == 0:
            raise ValueError("No windows to evaluate.")
        states = meta["state"].astype(str)
        interpolate = _MNEInterpolator(sfreq or 1.0, info) if baselines and "sensor" in modes else None
        acc: dict = {}

        def add(mode: str, method: str, state: str, pred, true) -> None:
            for key in ((mode, method, None), (mode, method, state)):
                acc.setdefault(key, _Accumulator()).add(pred, true)

        generator = torch.Generator(device=device)
        evoked_sums: dict = {}
        example = None
        batches = iter_batches(source, batch_size=batch_size, indices=indices)
        n = next(batches)
        with torch.inference_mode(), tqdm(total=n * len(modes), desc="reconstruct", unit="win",
                                          disable=not progress) as bar:
            for batch in batches:
                index = batch.index.numpy()
                x = batch.x.float().numpy()
                inputs = batch.to(device).inputs()
                for mode in modes:
                    # masks depend on (seed, mode, batch position) only, not on the other modes
                    generator.manual_seed(int(seed) * 1_000_003 + _MODES.index(mode) * 7919
                                          + int(index[0]))
                    out = net(**inputs, mask_mode=mode, mask_ratio=ratio, generator=generator, sfreq=sfreq)
                    pred = out["pred"].float().cpu().numpy()  # (B, S, P, L) normalised
                    target = out["target"].float().cpu().numpy()
                    mask = out["mask"].cpu().numpy()  # (B, S, P)
                    center = out["stats"].center.float().cpu().numpy()  # (B, S, 1)
                    scale = out["stats"].scale.float().cpu().numpy()
                    b, s, p, l_ = target.shape
                    for i in range(b):
                        hid = mask[i]
                        if not hid.any():
                            continue
                        state = states[index[i]]
                        true = target[i][hid]
                        add(mode, "model", state, pred[i][hid], true)
                        if example is None and mode == modes[0]:
                            example = {"x": target[i], "pred": pred[i], "mask": hid, "mode": mode}
                        if not baselines:
                            continue
                        add(mode, "zero", state, np.zeros_like(true), true)
                        vis = ~hid
                        denom = np.maximum(vis.sum(1) * l_, 1)
                        mean = (target[i] * vis[..., None]).sum((1, 2)) / denom  # (S,)
                        add(mode, "mean", state, np.broadcast_to(mean[:, None, None], target[i].shape)[hid], true)
                        hidden_t = np.repeat(hid, l_, axis=1)  # (S, P*L)
                        flat = target[i].reshape(s, p * l_)
                        if mode in ("time", "random"):
                            for kind in ("spline", "pchip"):
                                filled = _spline_fill(flat, hidden_t, kind).reshape(s, p, l_)
                                add(mode, kind, state, filled[hid], true)
                        if mode == "sensor" and interpolate is not None:
                            geom = geometries[int(meta["recording"][index[i]])]
                            ns = geom.n_sensors
                            phys = x[i, :ns, :p * l_]
                            rebuilt = interpolate(phys, geom, hid[:ns].any(1))
                            norm = (rebuilt - center[i, :ns]) / scale[i, :ns]
                            norm = norm.reshape(ns, p, l_)
                            # padding rows are never hidden, so the hidden samples line up
                            add(mode, "mne", state, norm[hid[:ns]], true)
                    bar.update(b)
                if evoked:
                    _evoked_batch(net, inputs, index, meta, sfreq, evoked_sums, baselines)
    result: dict = {"ratio": float(ratio), "seed": int(seed), "n_windows": int(n),
                    "subjects": sorted(set(meta["subject"][indices].tolist())), "modes": {}}
    for mode in modes:
        entry: dict = {"per_state": {}}
        for (m, method, state), a in sorted(acc.items(), key=lambda kv: str(kv[0])):
            if m != mode:
                continue
            if state is None:
                entry[method] = a.result()
            else:
                entry["per_state"].setdefault(state, {})[method] = a.result()
        result["modes"][mode] = entry
    result["evoked"] = _evoked_scores(evoked_sums, sfreq, tmins, peak_window)
    result["figure"] = None
    if figure is not None and example is not None:
        result["figure"] = str(plot_reconstruction(example, evoked_sums, figure, sfreq=sfreq,
                                                   geometries=geometries))
    return result


# ---------------------------------------------------------------------- evoked responses
def _evoked_batch(net, inputs, index, meta, sfreq, sums, baselines) -> None:
    """Leave-blocks-out reconstruction of event-locked windows, summed per state."""
    event = meta.get("event")
    if event is None:
        return
    sel = np.flatnonzero((event[index] >= 0) & (meta["state"][index] != "rest"))
    if sel.size == 0:
        return
    x, valid = inputs["x"], inputs["sensor_mask"].bool()
    b, s, t = x.shape
    p = t // net.config.patch_samples
    n_groups = 2
    if p < n_groups:
        return
    full = None
    spline_full = None
    for g in range(n_groups):
        hide_t = (torch.arange(p, device=x.device) % n_groups) == g
        if not bool(hide_t.any()):
            continue
        mask = valid[:, :, None] & hide_t[None, None, :]
        out = net(**inputs, mask=mask, sfreq=sfreq)
        from ..tokenize import denormalize

        phys = denormalize(out["pred"].float(), out["stats"]).reshape(b, s, -1).cpu().numpy()
        hid = np.repeat(mask.cpu().numpy(), net.config.patch_samples, axis=2)
        full = phys if full is None else np.where(hid, phys, full)
        if baselines:
            xs = x[..., : hid.shape[2]].float().cpu().numpy()
            filled = np.stack([_spline_fill(xs[i], hid[i]) for i in range(b)])
            spline_full = filled if spline_full is None else np.where(hid, filled, spline_full)
    true = x[..., : full.shape[2]].float().cpu().numpy()
    types = inputs["sensor_type"].cpu().numpy()
    for i in sel:
        state = str(meta["state"][index[i]])
        entry = sums.setdefault(state, {"n": 0, "true": 0.0, "model": 0.0, "spline": 0.0,
                                        "types": types[i], "valid": valid[i].cpu().numpy(),
                                        "recording": int(meta["recording"][index[i]])})
        if entry["true"] is not None and np.shape(entry["true"]) not in ((), true[i].shape):
            continue  # a different layout: evoked averages need one sensor layout
        entry["n"] += 1
        entry["true"] = entry["true"] + true[i]
        entry["model"] = entry["model"] + full[i]
        if spline_full is not None:
            entry["spline"] = entry["spline"] + spline_full[i]


def _gfp_peak(evoked: np.ndarray, rows: np.ndarray, span: tuple[int, int] | None = None) -> int:
    """Sample of the global-field-power maximum (within ``span`` when given)."""
    gfp = np.sqrt((evoked[rows] ** 2).mean(0))
    lo, hi = (0, gfp.size) if span is None else span
    lo, hi = max(0, lo), min(gfp.size, hi)
    if hi <= lo:
        lo, hi = 0, gfp.size
    return lo + int(np.argmax(gfp[lo:hi]))


def _evoked_scores(sums: dict, sfreq: float | None, tmins: list[float],
                   peak_window: tuple[float, float]) -> dict:
    scores = {}
    sfreq = sfreq or 1.0
    for state, e in sums.items():
        if e["n"] == 0:
            continue
        true = e["true"] / e["n"]
        counts = np.bincount(e["types"][e["valid"]], minlength=len(SENSOR_TYPES))
        rows = e["valid"] & (e["types"] == int(np.argmax(counts)))
        tmin = tmins[e["recording"]] if e["recording"] < len(tmins) else 0.0
        span = (int(round((peak_window[0] - tmin) * sfreq)),
                int(round((peak_window[1] - tmin) * sfreq)) + 1)
        e["span"] = span  # reused by the figure
        peak = _gfp_peak(true, rows, span)
        out = {}
        for method in ("model", "spline"):
            if np.ndim(e[method]) == 0:
                continue
            rec = e[method] / e["n"]
            r = np.corrcoef(true[rows].ravel(), rec[rows].ravel())[0, 1]
            err = abs(_gfp_peak(rec, rows, span) - peak) / sfreq * 1000.0
            out[method] = {"r": float(r), "peak_latency_error_ms": float(err),
                           "n_windows": int(e["n"])}
        out["peak_latency_ms"] = float((peak / sfreq + tmin) * 1000.0)
        scores[state] = out
    return scores


# ---------------------------------------------------------------------- figure
def _project(positions: np.ndarray) -> np.ndarray:
    """Azimuthal equidistant projection of sensor positions around the fitted sphere centre."""
    rel = positions - fit_sphere(positions)[0]
    rel /= np.linalg.norm(rel, axis=1, keepdims=True)
    theta = np.arccos(np.clip(rel[:, 2], -1, 1))
    phi = np.arctan2(rel[:, 1], rel[:, 0])
    return np.c_[theta * np.cos(phi), theta * np.sin(phi)]


def plot_reconstruction(example: dict, evoked_sums: dict, fname: str | os.PathLike, *,
                        sfreq: float | None = None,
                        geometries: list[SensorGeometry] | None = None) -> Path:
    """Figure: original vs reconstructed traces (hidden spans shaded) and evoked topomaps.

    Parameters
    ----------
    example : dict
        ``x`` and ``pred`` (S, P, L) normalised, ``mask`` (S, P) and ``mode`` of one window.
    evoked_sums : dict
        Per-state sums from the evoked check (may be empty).
    fname : path-like
        PNG path (written through a temporary file).

    Returns
    -------
    fname : Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fname = Path(fname)
    s, p, l_ = example["x"].shape
    rows = np.argsort(-example["mask"].sum(1))[: min(4, s)]
    states = [st for st, e in evoked_sums.items() if e["n"] and geometries is not None
              and np.ndim(e["model"])]
    n_top = len(states[:2])
    fig = plt.figure(figsize=(9, 1.8 * len(rows) + 2.6 * n_top))
    grid = fig.add_gridspec(len(rows) + n_top, 2,
                            height_ratios=[1.0] * len(rows) + [1.6] * n_top)
    t = np.arange(p * l_) / (sfreq or 1.0)
    trace_axes = []
    for k, row in enumerate(rows):
        ax = fig.add_subplot(grid[k, :])
        trace_axes.append(ax)
        ax.plot(t, example["x"][row].ravel(), color="k", lw=0.8, label="original")
        ax.plot(t, example["pred"][row].ravel(), color="C1", lw=0.8, label="megfm")
        for j in np.flatnonzero(example["mask"][row]):
            ax.axvspan(t[j * l_], t[min((j + 1) * l_, p * l_ - 1)], color="C0", alpha=0.15, lw=0)
        ax.set_ylabel(f"sensor {row}\n(norm.)")
        if k == 0:
            ax.set_title(f"Masked reconstruction ({example['mode']} masking; shaded = hidden)")
            ax.legend(loc="upper right", fontsize=7)
    trace_axes[-1].set_xlabel("time (s)")
    if n_top:
        import mne

        for k, state in enumerate(states[:2]):
            e = evoked_sums[state]
            geom = geometries[e["recording"]]
            ns = geom.n_sensors
            true, rec = e["true"][:ns] / e["n"], e["model"][:ns] / e["n"]
            counts = np.bincount(geom.types, minlength=len(SENSOR_TYPES))
            sel = (geom.types == int(np.argmax(counts))) & ~geom.bads
            peak = _gfp_peak(true, sel, e.get("span"))
            pos = _project(geom.positions[sel])
            vlim = (-np.abs(true[sel, peak]).max(), np.abs(true[sel, peak]).max())
            for j, (data, title) in enumerate(((true, "true"), (rec, "megfm"))):
                ax = fig.add_subplot(grid[len(rows) + k, j])
                mne.viz.plot_topomap(data[sel, peak], pos, axes=ax, show=False, vlim=vlim,
                                     sphere=np.pi / 2 * 1.1)
                ax.set_title(f"{state} evoked, {title}, {1000 * peak / (sfreq or 1):.0f} ms",
                             fontsize=8)
    fig.tight_layout()
    tmp = fname.with_name(fname.name + ".tmp.png")
    fname.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, fname)
    return fname
