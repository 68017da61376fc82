"""Preprocessing: MEG sensors only, bad channels flagged, filtered, resampled, in fT.

:func:`preprocess` turns a recording from :func:`megfm.read_raw` into what
:func:`megfm.make_windows` expects. Every step uses MNE's own functions
(:meth:`mne.io.Raw.notch_filter`, :meth:`~mne.io.Raw.filter`, :meth:`~mne.io.Raw.resample`,
:class:`mne.Annotations`); the steps and their order:

1. stim-channel events become annotations (so they survive channel picking and resampling);
2. MEG sensors are picked (reference sensors dropped, bad channels kept);
3. when downsampling, the signal is resampled first (MNE's FFT resampling low-passes at
   the new Nyquist frequency), so the filters run on 5x fewer samples;
4. notch at the line frequency and its harmonics below the Nyquist frequency;
5. band-pass;
6. (when upsampling, the resampling comes here);
7. flat and noisy channels are detected per channel type and added to ``info["bads"]``
   (they stay in the data and in the sensor geometry, flagged);
8. the data are scaled to fT (magnetometers, axial gradiometers, OPM) and fT/cm (planar
   gradiometers);
9. spans where a good channel exceeds the amplitude threshold are annotated
   ``BAD_amplitude``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from pathlib import Path

import mne
import numpy as np

from .._io import atomic_write_text

__all__ = ["SCALINGS", "PreprocessConfig", "is_scaled", "preprocess"]

logger = logging.getLogger(__name__)

#: Factors from MNE's SI units to megfm's units, per MNE channel type:
#: T -> fT and T/m -> fT/cm.
SCALINGS: dict[str, float] = {"mag": 1e15, "grad": 1e13}

_RESAMPLE_METHODS = ("auto", "polyphase", "fft")

#: Key of ``raw.info["temp"]`` where :func:`preprocess` records what it did.
TEMP_KEY = "megfm"


@dataclass
class PreprocessConfig:
    """Parameters of :func:`preprocess` (serialisable to JSON, stored with every store).

    Parameters
    ----------
    line_freq : float | None
        Power-line frequency in Hz (50 in Europe, 60 in North America); it and its
        harmonics below the Nyquist frequency are notched. None skips the notch.
    l_freq : float | None
        High-pass edge of the band-pass in Hz; None for no high-pass.
    h_freq : float | None
        Low-pass edge in Hz; None for no low-pass. Skipped (with a log message) when it is
        not below the Nyquist frequency of the recording.
    sfreq : float | None
        Target sampling frequency in Hz; None keeps the recording's rate.
    flat_ratio : float | None
        A channel whose standard deviation is below ``flat_ratio`` times the median of
        its channel type is marked bad (flat). None disables the check.
    noisy_z : float | None
        A channel whose log standard deviation lies more than ``noisy_z`` robust z-units
        (median / MAD of its channel type) above the median is marked bad (noisy).
    bad_amplitude_z : float | None
        Samples where a good channel deviates from its median by more than
        ``bad_amplitude_z`` robust standard deviations of that channel are annotated
        ``BAD_amplitude``. None disables this relative threshold.
    bad_amplitude : dict | None
        Absolute thresholds on ``|signal - median|`` per MNE channel type in megfm units,
        e.g. ``{"mag": 5000.0, "grad": 4000.0}`` (fT, fT/cm). None disables it.
    bad_amplitude_pad : float
        Seconds added on each side of a high-amplitude span.
    resample_method : ``"auto"`` | ``"polyphase"`` | ``"fft"``
        Method of :meth:`mne.io.Raw.resample`. ``"auto"`` uses ``"polyphase"`` (about
        twice as fast on long recordings) when the rate ratio is a simple fraction such as
        1000 -> 200 Hz, and ``"fft"`` otherwise.
    """

    line_freq: float | None = 50.0  # Hz; 60.0 in North America
    l_freq: float | None = 0.5  # Hz high-pass: removes slow drifts
    h_freq: float | None = 80.0  # Hz low-pass: keeps delta to low gamma
    sfreq: float | None = 200.0  # Hz after resampling (Nyquist 100 Hz > h_freq)
    flat_ratio: float | None = 0.01  # flat: std < 1% of the type's median std
    noisy_z: float | None = 6.0  # noisy: log-std robust z-score above this
    bad_amplitude_z: float | None = 12.0  # BAD_amplitude: > 12 robust std from the median
    bad_amplitude: dict | None = field(default=None)  # absolute limits, fT / fT/cm
    bad_amplitude_pad: float = 0.1  # s widened on each side of a bad span
    resample_method: str = "auto"  # "auto" | "polyphase" | "fft"

    def __post_init__(self) -> None:
        for name in ("line_freq", "l_freq", "h_freq", "sfreq", "flat_ratio", "noisy_z",
                     "bad_amplitude_z"):
            value = getattr(self, name)
            if value is not None and (not np.isscalar(value) or not float(value) > 0):
                raise ValueError(
                    f"Invalid value for '{name}': expected a positive number or None; "
                    f"got {value!r}."
                )
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise ValueError(
                f"Invalid band-pass: l_freq={self.l_freq} Hz must be below h_freq={self.h_freq} Hz."
            )
        if self.sfreq is not None and self.h_freq is not None and self.h_freq >= self.sfreq / 2:
            raise ValueError(
                f"Invalid value for 'h_freq': {self.h_freq} Hz is not below the Nyquist "
                f"frequency {self.sfreq / 2:g} Hz of sfreq={self.sfreq} Hz; lower h_freq or "
                "raise sfreq."
            )
        if self.bad_amplitude is not None:
            unknown = set(self.bad_amplitude) - set(SCALINGS)
            if unknown:
                raise ValueError(
                    f"Invalid keys in 'bad_amplitude': {sorted(unknown)}; expected MNE "
                    f"channel types {sorted(SCALINGS)}."
                )
        if self.resample_method not in _RESAMPLE_METHODS:
            raise ValueError(
                f"Invalid value for 'resample_method': expected one of {_RESAMPLE_METHODS}; "
                f"got {self.resample_method!r}."
            )
        if self.bad_amplitude_pad < 0:
            raise ValueError(
                f"Invalid value for 'bad_amplitude_pad': expected >= 0 s; got {self.bad_amplitude_pad}."
            )

    def to_dict(self) -> dict:
        """Return the parameters as a plain dict (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        """Build a config from a dict, refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"Unknown PreprocessConfig keys {sorted(unknown)}; expected some of {sorted(known)}."
            )
        return cls(**d)

    def to_json(self, path: str | Path | None = None) -> str:
        """Return the config as JSON, and write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> PreprocessConfig:
        """Read a config from a JSON string or a JSON file."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            path = Path(text_or_path)
            if not path.is_file():
                raise FileNotFoundError(f"Preprocessing config {path} does not exist.")
            text = path.read_text()
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Preprocessing config is not valid JSON: {exc}") from exc
        if not isinstance(d, dict):
            raise ValueError("Preprocessing config must be a JSON object.")
        return cls.from_dict(d)


def _resample_method(config: PreprocessConfig, sfreq_in: float, sfreq_out: float) -> str:
    """Polyphase for simple rate ratios (up/down <= 50), FFT otherwise."""
    if config.resample_method != "auto":
        return config.resample_method
    ratio = Fraction(sfreq_out / sfreq_in).limit_denominator(50)
    simple = abs(float(ratio) - sfreq_out / sfreq_in) < 1e-9 and ratio.numerator <= 50
    return "polyphase" if simple else "fft"


def is_scaled(raw: mne.io.BaseRaw) -> bool:
    """Return True when ``raw`` was scaled to fT / fT/cm by :func:`preprocess`."""
    temp = raw.info.get("temp")
    return isinstance(temp, dict) and bool(temp.get(TEMP_KEY, {}).get("scaled"))


def _stim_to_annotations(raw: mne.io.BaseRaw) -> int:
    """Add stim-channel events to ``raw.annotations`` (description = event code)."""
    if len(mne.pick_types(raw.info, meg=False, stim=True)) == 0:
        return 0
    try:
        events = mne.find_events(raw, shortest_event=1, initial_event=True, verbose=False)
    except ValueError as exc:  # e.g. odd stim channels
        logger.warning("Could not read events from the stim channel: %s", exc)
        return 0
    if len(events) == 0:
        return 0
    orig_time = raw.annotations.orig_time
    offset = raw.first_time if orig_time is not None else 0.0
    onsets = (events[:, 0] - raw.first_samp) / raw.info["sfreq"] + offset
    ann = mne.Annotations(onsets, np.zeros(len(events)), [str(int(c)) for c in events[:, 2]],
                          orig_time=orig_time)
    raw.set_annotations(raw.annotations + ann)
    return len(events)


def _robust_stats(data: np.ndarray, max_samples: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel median and robust standard deviation (1.4826 x MAD).

    Computed on at most ``max_samples`` evenly strided samples per channel (100 s at 200
    Hz): plenty for a median, and it keeps the cost flat on long recordings.
    """
    sub = data[:, :: max(1, data.shape[1] // max_samples)]
    centre = np.median(sub, axis=1, keepdims=True)
    return centre, 1.4826 * np.median(np.abs(sub - centre), axis=1)


def _find_bad_channels(raw: mne.io.BaseRaw, robust_std: np.ndarray,
                       config: PreprocessConfig) -> tuple[list, list]:
    """Flat and noisy channels, per channel type, from robust standard deviations.

    A robust (MAD-based) spread is used so that a short artefact does not make a good
    channel look noisy; the artefact is annotated instead.
    """
    types = np.array(raw.get_channel_types())
    flat: list[str] = []
    noisy: list[str] = []
    for ch_type in np.unique(types):
        idx = np.flatnonzero(types == ch_type)
        s = robust_std[idx]
        med = np.median(s[s > 0]) if np.any(s > 0) else 0.0
        is_flat = s <= 0
        if config.flat_ratio is not None:
            is_flat |= s < config.flat_ratio * med
        flat += [raw.ch_names[i] for i in idx[is_flat]]
        if config.noisy_z is not None and np.sum(~is_flat) >= 3:
            log_s = np.log(s[~is_flat])
            centre = np.median(log_s)
            # spread floored at 0.1 (10%), so that in a very homogeneous array a channel
            # needs exp(0.1 * noisy_z) (1.8x for z=6) the typical level to count as noisy
            mad = max(1.4826 * np.median(np.abs(log_s - centre)), 0.1)
            z = (log_s - centre) / mad
            noisy += [raw.ch_names[i] for i in idx[~is_flat][z > config.noisy_z]]
    return flat, noisy


def _amplitude_limits(raw: mne.io.BaseRaw, robust_std: np.ndarray,
                      config: PreprocessConfig) -> np.ndarray:
    """Per-channel limit on ``|signal - median|`` (inf where none; bad channels: inf)."""
    limit = np.full(len(raw.ch_names), np.inf)
    if config.bad_amplitude_z is not None:
        limit = np.where(robust_std > 0, config.bad_amplitude_z * robust_std, np.inf)
    types = np.array(raw.get_channel_types())
    for ch_type, value in (config.bad_amplitude or {}).items():
        limit[types == ch_type] = np.minimum(limit[types == ch_type], float(value))
    limit[[raw.ch_names.index(ch) for ch in raw.info["bads"] if ch in raw.ch_names]] = np.inf
    return limit


def _annotate_amplitude(raw: mne.io.BaseRaw, centre: np.ndarray, limits: np.ndarray,
                        pad_seconds: float) -> int:
    """Annotate spans where a good channel is beyond its amplitude limit."""
    good = np.flatnonzero(np.isfinite(limits))
    if len(good) == 0:
        return 0
    limit = limits[good]
    bad = (np.abs(raw._data[good] - centre[good]) > limit[:, None]).any(axis=0)
    if not bad.any():
        return 0
    sfreq = raw.info["sfreq"]
    pad = int(round(pad_seconds * sfreq))
    edges = np.diff(np.concatenate([[0], bad.astype(np.int8), [0]]))
    starts = np.maximum(np.flatnonzero(edges == 1) - pad, 0)
    stops = np.minimum(np.flatnonzero(edges == -1) + pad, raw.n_times)
    # merge spans that overlap after padding
    merged: list[list[int]] = []
    for a, b in zip(starts, stops, strict=True):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    spans = np.array(merged)
    orig_time = raw.annotations.orig_time
    offset = raw.first_time if orig_time is not None else 0.0
    ann = mne.Annotations(spans[:, 0] / sfreq + offset, (spans[:, 1] - spans[:, 0]) / sfreq,
                          "BAD_amplitude", orig_time=orig_time)
    raw.set_annotations(raw.annotations + ann)
    return len(spans)


def preprocess(raw: mne.io.BaseRaw, config: PreprocessConfig | None = None, *,
               copy: bool = True, verbose=None) -> mne.io.BaseRaw:
    """Preprocess a MEG recording for megfm (see the module docstring for the steps).

    Parameters
    ----------
    raw : mne.io.Raw
        A recording from :func:`megfm.read_raw` (data in T and T/m).
    config : PreprocessConfig | None
        Parameters; None uses the defaults.
    copy : bool
        Work on a copy (default) or modify ``raw`` in place.
    verbose : bool | str | int | None
        MNE verbosity of the filter and resampling steps (quiet when None).

    Returns
    -------
    raw : mne.io.Raw
        MEG sensors only, in fT and fT/cm, with flat/noisy channels in ``info["bads"]``,
        stim events and ``BAD_amplitude`` spans as annotations. ``info["temp"]["megfm"]``
        records the config, the scalings and the channels found bad.
    """
    if config is None:
        config = PreprocessConfig()
    elif isinstance(config, dict):
        config = PreprocessConfig.from_dict(config)
    elif not isinstance(config, PreprocessConfig):
        raise TypeError(
            f"Invalid type for 'config': expected PreprocessConfig, dict or None; got "
            f"{type(config).__name__}."
        )
    if not isinstance(raw, mne.io.BaseRaw):
        raise TypeError(f"Invalid type for 'raw': expected mne.io.Raw; got {type(raw).__name__}.")
    if is_scaled(raw):
        raise ValueError("This recording was already preprocessed by megfm (it is in fT); "
                         "preprocess the original recording instead.")
    mne_verbose = verbose if verbose is not None else "error"
    picks = mne.pick_types(raw.info, meg=True, ref_meg=False, exclude=[])
    if len(picks) == 0:
        raise ValueError(
            "The recording has no MEG channels (reference channels do not count); megfm "
            "models MEG sensors only."
        )
    if not raw.preload:
        # load only the MEG sensors, and the stim channels for the events
        keep = np.union1d(picks, mne.pick_types(raw.info, meg=False, stim=True, exclude=[]))
        raw = raw.copy().pick(keep) if copy else raw.pick(keep)
        raw.load_data(verbose=mne_verbose)
        copy = False
    if copy:
        raw = raw.copy()
    n_events = _stim_to_annotations(raw)
    raw.pick(mne.pick_types(raw.info, meg=True, ref_meg=False, exclude=[]))
    raw_sfreq = raw.info["sfreq"]
    target = config.sfreq if config.sfreq is not None else raw_sfreq
    downsample = target < raw_sfreq
    method = _resample_method(config, raw_sfreq, target)
    if downsample:
        raw.resample(target, method=method, verbose=mne_verbose)
    sfreq = raw.info["sfreq"]
    nyquist = sfreq / 2
    if config.line_freq is not None:
        freqs = np.arange(config.line_freq, nyquist, config.line_freq)
        freqs = freqs[freqs < nyquist - 1.0]  # leave room for the notch width
        if len(freqs):
            raw.notch_filter(freqs, verbose=mne_verbose)
    h_freq = config.h_freq
    if h_freq is not None and h_freq >= nyquist:
        logger.info("h_freq=%g Hz is not below the Nyquist frequency %g Hz of the recording; "
                    "low-pass skipped.", h_freq, nyquist)
        h_freq = None
    if config.l_freq is not None or h_freq is not None:
        raw.filter(config.l_freq, h_freq, verbose=mne_verbose)
    if target > raw.info["sfreq"]:
        raw.resample(target, method=method, verbose=mne_verbose)
    types = raw.get_channel_types()
    scales = np.array([SCALINGS[t] for t in types])
    raw._data *= scales[:, None]
    centre, robust_std = _robust_stats(raw._data)
    flat, noisy = _find_bad_channels(raw, robust_std, config)
    new_bads = [ch for ch in flat + noisy if ch not in raw.info["bads"]]
    raw.info["bads"] = list(raw.info["bads"]) + new_bads
    limits = _amplitude_limits(raw, robust_std, config)
    n_spans = _annotate_amplitude(raw, centre, limits, config.bad_amplitude_pad)
    temp = raw.info.get("temp")
    temp = dict(temp) if isinstance(temp, dict) else {}
    temp[TEMP_KEY] = {"scaled": True, "config": config.to_dict(), "units": {"mag": "fT",
                      "grad": "fT/cm"}, "flat": flat, "noisy": noisy,
                      "original_sfreq": raw_sfreq,
                      # make_windows drops windows beyond these, whatever the annotations
                      "amplitude_centre": centre[:, 0].tolist(),
                      "amplitude_limit": limits.tolist()}
    raw.info["temp"] = temp
    logger.info("Preprocessed: %d MEG channels (%d flat, %d noisy), %g -> %g Hz, %d stim "
                "events, %d BAD_amplitude spans", len(raw.ch_names), len(flat), len(noisy),
                raw_sfreq, raw.info["sfreq"], n_events, n_spans)
    return raw
