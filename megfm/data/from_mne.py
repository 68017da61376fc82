"""MNE objects in: a researcher's own ``mne.Epochs`` or ``mne.io.Raw`` -> :class:`Windows`.

:func:`windows_from_mne` is the one conversion; :func:`as_windows` applies it for the entry
points that take a model (:func:`megfm.embed`, :class:`megfm.Embedder`,
:func:`megfm.explain.attention_maps`, :mod:`megfm.explain.attribution`), reading the
sampling rate and patch length from the model.

What happens to each kind of input, and why:

* ``mne.io.Raw``: the continuous recording goes through :func:`megfm.preprocess` (MEG
  sensors, notch, band-pass, resampling to the model's rate, bad channels, fT units) and
  :func:`megfm.make_windows`, the exact pipeline a store is prepared with, so its windows
  look like the ones the model was pretrained on (and ``embed(model, raw)`` equals
  ``embed(model, store)`` of ``megfm prepare`` on the same file). Filtering belongs to the
  continuous data (no edge effects), which is why it happens here and not for epochs.
* ``mne.Epochs``: used as the researcher made them (their filters, baseline, rejection);
  only the MEG sensors are kept and the units scaled to fT / fT/cm. Epochs are not
  resampled: a rate other than the model's is refused with the fix
  (``epochs.resample(...)``), because resampling short epochs has edge effects the
  researcher should choose to accept. Each epoch becomes one window, cut to the largest
  multiple of the model's patch length (MNE's ``tmax`` is inclusive, so a -0.2..0.5 s
  epoch at 200 Hz has 141 samples; the last one is dropped).
"""

from __future__ import annotations

import logging

import mne
import numpy as np

from .epochs import _blocks, make_windows
from .geometry import SensorGeometry
from .preprocess import SCALINGS, PreprocessConfig, is_scaled, preprocess
from .windows import Windows

__all__ = ["DEFAULT_WINDOW_SECONDS", "as_windows", "windows_from_mne"]

logger = logging.getLogger(__name__)

#: Window duration of a continuous recording when none is given: the default of
#: ``megfm prepare --window`` (10 patches of the default model).
DEFAULT_WINDOW_SECONDS = 2.0
#: ``min_valid_fraction`` of ``megfm prepare``, so a Raw gives the windows a store would.
_MIN_VALID_FRACTION = 0.5


def _is_mne(obj) -> bool:
    return isinstance(obj, (mne.io.BaseRaw, mne.BaseEpochs))


def _check_rate(have: float, want: float | None, fix: str) -> None:
    if want is not None and abs(have - want) > 1e-6 * want:
        raise ValueError(
            f"The data are sampled at {have:g} Hz but the model expects {want:g} Hz; "
            f"resample them first: {fix}({want:g})."
        )


def _preprocess_config(preprocess_arg, sfreq: float | None) -> PreprocessConfig | None:
    """The PreprocessConfig to apply to a Raw (None: use the Raw as it is)."""
    if preprocess_arg is False:
        return None
    if preprocess_arg is None or preprocess_arg is True:
        if sfreq is None:
            return PreprocessConfig()
        # the default low-pass (80 Hz) needs a rate above 160 Hz; below, resampling's own
        # anti-alias filter at the new Nyquist frequency is the low-pass
        h_freq = PreprocessConfig.h_freq if PreprocessConfig.h_freq < sfreq / 2 else None
        return PreprocessConfig(sfreq=sfreq, h_freq=h_freq)
    if isinstance(preprocess_arg, dict):
        return PreprocessConfig.from_dict(preprocess_arg)
    if isinstance(preprocess_arg, PreprocessConfig):
        return preprocess_arg
    raise TypeError(
        "Invalid type for 'preprocess': expected None, True, False, a PreprocessConfig or a "
        f"dict; got {type(preprocess_arg).__name__}."
    )


def _window_samples(window_seconds: float | None, n_samples: int | None, sfreq: float,
                    patch_samples: int | None, available: int | None) -> int:
    """Samples per window: given, or (epochs) the largest multiple of the patch that fits."""
    if window_seconds is not None and n_samples is not None:
        raise ValueError("Give 'window_seconds' or 'n_samples', not both.")
    if window_seconds is not None:
        if not window_seconds > 0:
            raise ValueError(f"Invalid value for 'window_seconds': expected > 0; got {window_seconds}.")
        n_samples = int(round(window_seconds * sfreq))
    if n_samples is None:
        if available is None:
            n_samples = int(round(DEFAULT_WINDOW_SECONDS * sfreq))
        else:
            n_samples = available - available % patch_samples if patch_samples else available
    n_samples = int(n_samples)
    if available is not None and not 0 < n_samples <= available:
        raise ValueError(
            f"Windows of {n_samples} samples do not fit epochs of {available} samples; ask for "
            f"at most {available} (n_samples= or window_seconds=)."
        )
    if patch_samples and (n_samples < patch_samples or n_samples % patch_samples):
        raise ValueError(
            f"Windows of {n_samples} samples ({n_samples / sfreq:g} s) do not split into the "
            f"model's patches of {patch_samples} samples ({patch_samples / sfreq:g} s); use "
            "epochs or a window_seconds of at least one patch."
        )
    return n_samples


def _from_epochs(epochs: mne.BaseEpochs, *, sfreq, patch_samples, window_seconds, n_samples,
                 state, subject, session, label) -> Windows:
    if len(mne.pick_types(epochs.info, meg=True, ref_meg=False, exclude=[])) == 0:
        raise ValueError(
            "The epochs have no MEG channels (reference channels do not count); megfm models "
            "MEG sensors only: epoch a recording that has them."
        )
    rate = float(epochs.info["sfreq"])
    _check_rate(rate, sfreq, "epochs.resample")
    n = _window_samples(window_seconds, n_samples, rate, patch_samples, len(epochs.times))
    if n < len(epochs.times):
        logger.info("Epochs of %d samples cut to their first %d (a multiple of the model's "
                    "patch).", len(epochs.times), n)
    if not epochs.preload:  # a copy: applies the rejection, leaves the caller's epochs alone
        epochs = epochs.copy().load_data()
    if len(epochs) == 0:
        raise ValueError("No epochs left (all were dropped, see epochs.drop_log); nothing to "
                         "turn into windows.")
    geometry = SensorGeometry.from_info(epochs.info)
    picks = mne.pick_channels(epochs.ch_names, geometry.names, ordered=True)
    data = epochs.get_data(picks=picks)[:, :, :n]
    if not is_scaled(epochs):
        types = epochs.get_channel_types(picks=picks)
        data = data * np.array([SCALINGS[t] for t in types])[:, None]
    events = epochs.events
    codes = events[:, 2].astype(np.int64)
    if state is None:
        names = {code: name for name, code in epochs.event_id.items()}
        states = np.array([names.get(int(c), str(int(c))) for c in codes])
    else:
        states = np.full(len(codes), state)
    repetition = np.zeros(len(codes), np.int64)
    for code in np.unique(codes):
        repetition[codes == code] = np.arange(int((codes == code).sum()))
    m = len(data)
    return Windows(
        data=data.astype(np.float32), sfreq=rate, geometries=[geometry],
        metadata={"subject": np.full(m, subject), "session": np.full(m, session),
                  "state": states, "label": np.full(m, label),
                  # MNE's event samples count from the start of acquisition (first_samp)
                  "onset": events[:, 0] / rate + epochs.tmin, "event": codes,
                  "repetition": repetition, "block": _blocks(events[:, 0]),
                  "recording": np.zeros(m, np.int64)},
        info={"source": "mne.Epochs", "state": state, "window_seconds": n / rate,
              "window_samples": n, "tmin": float(epochs.tmin),
              "event_id": dict(epochs.event_id), "baseline": epochs.baseline,
              "preprocess": None},
    )


def _from_raw(raw: mne.io.BaseRaw, *, sfreq, patch_samples, window_seconds, n_samples,
              preprocess_arg, state, event_id, tmin, overlap, subject, session, label,
              verbose) -> Windows:
    config = None if is_scaled(raw) else _preprocess_config(preprocess_arg, sfreq)
    if config is not None:
        _check_rate(config.sfreq or raw.info["sfreq"], sfreq, "PreprocessConfig(sfreq=...) or "
                    "raw.resample")
        raw = preprocess(raw, config, verbose=verbose)
    _check_rate(float(raw.info["sfreq"]), sfreq, "raw.resample")
    rate = float(raw.info["sfreq"])
    n = _window_samples(window_seconds, n_samples, rate, patch_samples, None)
    if state is None:
        state = "rest" if event_id is None else "task"
    windows = make_windows(raw, state=state, window_seconds=n / rate,
                           overlap=overlap, event_id=event_id, tmin=tmin, subject=subject,
                           session=session, label=label,
                           min_valid_fraction=_MIN_VALID_FRACTION, verbose=verbose)
    if windows.n_windows == 0:
        raise ValueError("No windows left (every one overlaps a BAD span or has too few "
                         "valid sensors); check raw.annotations and raw.info['bads'].")
    windows.info["source"] = "mne.io.Raw"
    return windows


def windows_from_mne(
    inst: mne.io.BaseRaw | mne.BaseEpochs,
    *,
    sfreq: float | None = None,
    patch_samples: int | None = None,
    window_seconds: float | None = None,
    n_samples: int | None = None,
    preprocess: PreprocessConfig | dict | bool | None = None,
    state: str | None = None,
    event_id: dict[str, int] | None = None,
    tmin: float = -0.2,
    overlap: float = 0.0,
    subject: str = "",
    session: str = "",
    label: str = "",
    verbose=None,
) -> Windows:
    """Turn MNE epochs or a continuous recording into megfm windows.

    Parameters
    ----------
    inst : mne.Epochs | mne.io.Raw
        Epochs (each becomes one window) or a continuous recording (cut into windows).
    sfreq : float | None
        Sampling rate the windows must have (the model's ``config.sfreq``). Epochs at
        another rate are refused (resample them with ``epochs.resample``); a Raw is
        resampled to it by the preprocessing. None: the data's own rate.
    patch_samples : int | None
        The model's ``config.patch_samples``: windows must be a multiple of it.
    window_seconds, n_samples : float | int | None
        Window length (give one at most). Raw: default :data:`DEFAULT_WINDOW_SECONDS`.
        Epochs: default the largest multiple of ``patch_samples`` that fits an epoch; the
        window starts at the epoch's start (``epochs.tmin``).
    preprocess : None | bool | PreprocessConfig | dict
        Raw only. None or True: :func:`megfm.preprocess` with its defaults and ``sfreq``
        as target rate (what ``megfm prepare`` does; no low-pass beyond the resampling's
        when the rate is too low for the default one); a config: that preprocessing; False:
        the Raw as it is (it must be at ``sfreq`` already). A Raw that megfm already
        preprocessed is never preprocessed again. Epochs are always used as they are.
    state : str | None
        ``metadata["state"]`` of every window. None: for epochs the event name of each
        epoch (``epochs.event_id``), for a Raw ``"rest"`` (``"task"`` with ``event_id``).
    event_id : dict of str to int | None
        Raw only: lock windows to these events (see :func:`megfm.make_windows`), starting
        ``tmin`` seconds from each; None tiles the recording (or uses the built-in ids of
        ``state``).
    tmin : float
        Raw only: start of an event-locked window relative to its event, in seconds.
    overlap : float
        Raw only: overlap of fixed-length windows in seconds.
    subject, session, label : str
        Metadata of every window.
    verbose : bool | str | int | None
        MNE verbosity.

    Returns
    -------
    windows : Windows
        One geometry; data in fT and fT/cm; ``info["source"]`` is ``"mne.Epochs"`` or
        ``"mne.io.Raw"``. For epochs, ``metadata["event"]`` is each epoch's code and
        ``onset`` its start in seconds on MNE's event clock (``events[:, 0] / sfreq +
        tmin``).
    """
    if isinstance(inst, mne.BaseEpochs):
        if preprocess not in (None, True, False):
            raise TypeError(
                "'preprocess' applies to a continuous recording only: epochs are used as "
                "they are. Filter the Raw before epoching, or pass the Raw instead."
            )
        if event_id is not None:
            raise TypeError("'event_id' applies to a continuous recording only: the epochs "
                            "already carry their events.")
        return _from_epochs(inst, sfreq=sfreq, patch_samples=patch_samples,
                            window_seconds=window_seconds, n_samples=n_samples, state=state,
                            subject=subject, session=session, label=label)
    if isinstance(inst, mne.io.BaseRaw):
        return _from_raw(inst, sfreq=sfreq, patch_samples=patch_samples,
                         window_seconds=window_seconds, n_samples=n_samples,
                         preprocess_arg=preprocess, state=state, event_id=event_id,
                         tmin=tmin, overlap=overlap, subject=subject, session=session,
                         label=label, verbose=verbose)
    raise TypeError(
        f"Invalid type for 'inst': expected mne.Epochs or mne.io.Raw; got {type(inst).__name__}."
    )


def _model_rate_and_patch(model) -> tuple[float, int]:
    """``config.sfreq`` and ``config.patch_samples`` of a model, or of a classifier's
    ``model`` (``EncoderClassifier``); the data layer reads them without importing models."""
    for candidate in (model, getattr(model, "model", None)):
        config = getattr(candidate, "config", None)
        if hasattr(config, "sfreq") and hasattr(config, "patch_samples"):
            return float(config.sfreq), int(config.patch_samples)
    raise TypeError(
        f"Cannot read the sampling rate and patch length of a {type(model).__name__} (no "
        "config.sfreq / config.patch_samples); convert the MNE data first: "
        "megfm.data.from_mne.windows_from_mne(inst, sfreq=..., patch_samples=...)."
    )


def as_windows(data, model):
    """``data`` as Windows for ``model`` when it is an MNE object; anything else unchanged.

    Parameters
    ----------
    data : mne.Epochs | mne.io.Raw | object
        What an entry point was given.
    model : MaskedSignalModel | torch.nn.Module
        The model, or a classifier whose ``model`` is one (``EncoderClassifier``): its
        ``config.sfreq`` and ``config.patch_samples`` set the rate and the window length.

    Returns
    -------
    data : Windows | object
        :func:`windows_from_mne` of ``data`` with the model's defaults, or ``data``.
    """
    if not _is_mne(data):
        return data
    sfreq, patch_samples = _model_rate_and_patch(model)
    return windows_from_mne(data, sfreq=sfreq, patch_samples=patch_samples)
