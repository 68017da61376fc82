"""State-aware windows: fixed-length for rest, event-locked for task states.

:func:`make_windows` cuts a preprocessed recording into :class:`~megfm.data.windows.Windows`
of one duration, whatever the state, so windows of several recordings and states
concatenate and share one store:

* ``"rest"`` (or any state with ``event_id=None`` and no default ids): windows tile each
  stretch of data between ``BAD*`` annotations, ``window_seconds`` long with ``overlap``;
* task states: one window per event, starting at ``event + tmin``. Events come from a stim
  channel when the recording has one, otherwise from annotations (whose description is the
  event name, e.g. ``"tone"``, or its code, e.g. ``"1"``, as :func:`megfm.preprocess`
  writes). Each window keeps its ``event`` code, its ``repetition`` (order of that event
  in the recording, from 0) and its ``block`` (a gap longer than twice the median
  inter-event interval starts a new block), so habituation across repetitions can be
  studied.

A recording that holds several states in sequence is cut by its annotations
(:func:`find_segments`, :func:`make_segment_windows`): each stretch is windowed as its
state, into one :class:`~megfm.data.windows.Windows`.
"""

from __future__ import annotations

import logging

import mne
import numpy as np

from .geometry import SENSOR_TYPES, SensorGeometry
from .preprocess import SCALINGS, TEMP_KEY, is_scaled
from .windows import Windows

__all__ = ["DEFAULT_EVENT_IDS", "find_segments", "make_segment_windows", "make_windows",
           "state_event_id"]

logger = logging.getLogger(__name__)

#: Event ids assumed for the built-in task states when ``event_id`` is None.
DEFAULT_EVENT_IDS: dict[str, dict[str, int]] = {
    "auditory": {"tone": 1},
    "somatosensory": {"stim": 2},
}
_REJECT_ALIASES = {"grad": "planar_grad"}


def state_event_id(state: str, event_id: dict[str, int] | None = None) -> dict[str, int] | None:
    """The events windows of ``state`` lock to: ``event_id``, else the built-in ids, else None.

    None means fixed-length windows (``"rest"`` and other states without events).
    """
    return event_id if event_id is not None else DEFAULT_EVENT_IDS.get(state)


def _bad_spans(raw: mne.io.BaseRaw) -> np.ndarray:
    """(n, 2) sample spans [start, stop) of ``BAD*`` annotations, in raw.times samples."""
    ann = raw.annotations
    offset = raw.first_time if ann.orig_time is not None else 0.0
    sfreq = raw.info["sfreq"]
    spans = [
        (int(np.floor((a["onset"] - offset) * sfreq)),
         int(np.ceil((a["onset"] - offset + a["duration"]) * sfreq)))
        for a in ann if a["description"].lower().startswith("bad")
    ]
    if not spans:
        return np.zeros((0, 2), np.int64)
    return np.clip(np.array(spans, np.int64), 0, raw.n_times)


def _overlaps_bad(starts: np.ndarray, n: int, spans: np.ndarray) -> np.ndarray:
    if len(spans) == 0:
        return np.zeros(len(starts), bool)
    stops = starts + n
    return ((starts[:, None] < spans[None, :, 1]) & (stops[:, None] > spans[None, :, 0])).any(1)


def _rest_starts(raw: mne.io.BaseRaw, n: int, step: int, lo: int, hi: int) -> np.ndarray:
    """Window starts tiling the good stretches between BAD spans, inside samples [lo, hi)."""
    spans = _bad_spans(raw)
    good = np.zeros(raw.n_times + 1, bool)
    good[lo:hi] = True
    for a, b in spans:
        good[a:b] = False
    edges = np.diff(np.concatenate([[0], good.astype(np.int8)]))
    seg_starts = np.flatnonzero(edges == 1)
    seg_stops = np.flatnonzero(edges == -1)
    starts = [np.arange(a, b - n + 1, step)
              for a, b in zip(seg_starts, seg_stops, strict=True) if b - a >= n]
    return np.concatenate(starts).astype(np.int64) if starts else np.zeros(0, np.int64)


def _present_ids(raw: mne.io.BaseRaw, stim_events: np.ndarray | None) -> list[str]:
    present = set()
    if stim_events is not None:
        present.update(str(int(c)) for c in np.unique(stim_events[:, 2]))
    present.update(d for d in raw.annotations.description if not d.lower().startswith("bad"))
    return sorted(present)


def _missing_events_hint(state: str, present: list[str]) -> str:
    """How to map ``state`` to the codes a recording has, on the command line and in Python."""
    codes = [p for p in present if p.lstrip("-").isdigit()]
    example = ",".join(codes[:3]) if codes else "NAME:CODE"
    return (f"map the state to its events: megfm prepare --events {state}={example}, "
            f"megfm.prepare(events={{{state!r}: ...}}) or make_windows(event_id=...); or use "
            "state 'rest' for fixed-length windows.")


def _find_events(raw: mne.io.BaseRaw, event_id: dict[str, int],
                 stim_channel: str | list[str] | None, verbose, state: str) -> np.ndarray:
    """Events (sample in raw.times, 0, code) for the wanted ids, from stim or annotations."""
    stim_events = None
    has_stim = len(mne.pick_types(raw.info, meg=False, stim=True)) > 0
    if stim_channel is not None or has_stim:
        try:
            stim_events = mne.find_events(raw, stim_channel=stim_channel, shortest_event=1,
                                          initial_event=True, verbose=verbose or False)
        except ValueError as exc:
            if stim_channel is not None:
                raise ValueError(f"Could not read events from stim channel {stim_channel!r}: "
                                 f"{exc}") from exc
            logger.warning("Could not read events from the stim channel: %s", exc)
    codes = np.array(list(event_id.values()), np.int64)
    events = np.zeros((0, 3), np.int64)
    if stim_events is not None and len(stim_events):
        events = stim_events[np.isin(stim_events[:, 2], codes)].copy()
        events[:, 0] -= raw.first_samp
    if len(events) == 0 and len(raw.annotations):
        mapping = {}
        for name, code in event_id.items():
            for desc in (name, str(code)):
                if desc in raw.annotations.description:
                    mapping[desc] = int(code)
        if mapping:
            ev, _ = mne.events_from_annotations(raw, event_id=mapping,
                                                verbose=verbose or False)
            ev[:, 0] -= raw.first_samp
            events = ev.astype(np.int64)
    if len(events) == 0:
        present = _present_ids(raw, stim_events)
        raise ValueError(
            f"No events with id {event_id} in this recording; event ids present: "
            f"{present or 'none'}; {_missing_events_hint(state, present)}"
        )
    absent = [name for name, code in event_id.items() if code not in set(events[:, 2].tolist())]
    if absent:
        logger.warning("Events %s of the %r state are absent from this recording.", absent,
                       state)
    # the same event may be listed twice (a stim channel turned into annotations by
    # preprocess, plus the events.tsv annotations of a BIDS dataset): keep one
    events = np.unique(events[:, [0, 2]], axis=0)
    events = np.c_[events[:, 0], np.zeros(len(events), np.int64), events[:, 1]]
    return events[np.argsort(events[:, 0], kind="stable")]


def _blocks(samples: np.ndarray) -> np.ndarray:
    """Block index per event: a gap > 2x the median inter-event interval starts a block."""
    if len(samples) < 3:
        return np.zeros(len(samples), np.int64)
    gaps = np.diff(samples)
    median = np.median(gaps)
    return np.concatenate([[0], np.cumsum(gaps > 2 * median)]).astype(np.int64)


def _reject_limits(reject: dict | None, geometry: SensorGeometry) -> np.ndarray | None:
    """Per-sensor peak-to-peak limit (inf when none) from a per-type dict."""
    if not reject:
        return None
    limits = np.full(geometry.n_sensors, np.inf)
    for key, value in reject.items():
        name = _REJECT_ALIASES.get(key, key)
        if name not in SENSOR_TYPES:
            raise ValueError(
                f"Invalid key {key!r} in 'reject': expected sensor types {SENSOR_TYPES} "
                "(or 'grad' for planar_grad)."
            )
        limits[geometry.types == SENSOR_TYPES.index(name)] = float(value)
    return limits


def _amplitude_limits(raw: mne.io.BaseRaw,
                      picks: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-sensor (centre, limit) of ``|signal - centre|`` set by :func:`megfm.preprocess`.

    None when the recording was not preprocessed by megfm (or the limits are unknown).
    Bad sensors have an infinite limit.
    """
    temp = raw.info.get("temp")
    rec = temp.get(TEMP_KEY, {}) if isinstance(temp, dict) else {}
    if "amplitude_limit" not in rec or len(rec["amplitude_limit"]) != len(raw.ch_names):
        return None
    limit = np.asarray(rec["amplitude_limit"], float)[picks]
    limit[np.isin(np.asarray(raw.ch_names)[picks], raw.info["bads"])] = np.inf
    return np.asarray(rec["amplitude_centre"], float)[picks], limit


def make_windows(
    raw: mne.io.BaseRaw,
    *,
    state: str,
    window_seconds: float = 2.0,
    overlap: float = 0.0,
    event_id: dict[str, int] | None = None,
    tmin: float = -0.2,
    baseline: tuple[float | None, float | None] | None = None,
    reject: dict[str, float] | None = None,
    subject: str = "",
    session: str = "",
    label: str = "",
    stim_channel: str | list[str] | None = None,
    min_valid_fraction: float | None = None,
    span: tuple[float, float] | None = None,
    verbose=None,
) -> Windows:
    """Cut a recording into windows of one state.

    Parameters
    ----------
    raw : mne.io.Raw
        Preferably the output of :func:`megfm.preprocess` (data in fT, fT/cm). A raw in
        MNE's SI units (T, T/m) is scaled to megfm's units on the fly.
    state : str
        Recording state, e.g. ``"rest"``, ``"auditory"``, ``"somatosensory"``.
    window_seconds : float
        Duration of every window in seconds.
    overlap : float
        Overlap of consecutive resting-state windows in seconds (``0 <= overlap <
        window_seconds``).
    event_id : dict of str to int | None
        Events to lock windows to. None uses :data:`DEFAULT_EVENT_IDS` for the built-in
        task states, and fixed-length windows for ``"rest"`` and other states.
    tmin : float
        Start of an event-locked window relative to the event, in seconds.
    baseline : tuple of (float | None, float | None) | None
        Event-locked windows only: subtract each sensor's mean over this interval
        (seconds relative to the event; None means the window edge). None: no correction.
    reject : dict of str to float | None
        Peak-to-peak limits per sensor type (keys in ``SENSOR_TYPES``, ``"grad"`` meaning
        ``"planar_grad"``) in fT or fT/cm; a window exceeding one on a good sensor is
        dropped.
    subject, session, label : str
        Metadata of every window (``label`` is the subject's group).
    stim_channel : str | list of str | None
        Stim channel(s) to read events from; None picks MNE's default stim channel when
        the recording has one, otherwise annotations are used.
    min_valid_fraction : float | None
        Drop windows in which fewer than this fraction of the sensors are valid (not
        marked bad, and not flat within the window: a peak-to-peak range above 1e-3 of the
        median one of the good sensors); counted in ``info["n_few_sensors"]``.
        None keeps every window.
    span : tuple of (float, float) | None
        Only windows inside this stretch (``start``, ``stop`` in seconds of ``raw.times``)
        and the events inside it: the part of a recording in one state, see
        :func:`make_segment_windows`. None: the whole recording.
    verbose : bool | str | int | None
        MNE verbosity.

    Returns
    -------
    windows : Windows
        ``data (n_windows, n_sensors, n_times)`` float32 with one geometry; ``info`` holds
        the windowing parameters, the preprocessing config when known, and the counts of
        windows dropped: ``n_dropped_bad_span`` (over a ``BAD*`` span or the edge),
        ``n_amplitude`` (a good sensor beyond the amplitude limits that
        :func:`megfm.preprocess` set, after filtering), ``n_few_sensors`` and
        ``n_rejected`` (peak-to-peak).
    """
    if not isinstance(raw, mne.io.BaseRaw):
        raise TypeError(f"Invalid type for 'raw': expected mne.io.Raw; got {type(raw).__name__}.")
    if not isinstance(state, str) or not state:
        raise ValueError(f"Invalid value for 'state': expected a non-empty string; got {state!r}.")
    if not window_seconds > 0:
        raise ValueError(f"Invalid value for 'window_seconds': expected > 0; got {window_seconds}.")
    if not 0 <= overlap < window_seconds:
        raise ValueError(
            f"Invalid value for 'overlap': expected 0 <= overlap < window_seconds "
            f"({window_seconds}); got {overlap}."
        )
    sfreq = raw.info["sfreq"]
    n = int(round(window_seconds * sfreq))
    if abs(n - window_seconds * sfreq) > 1e-6 * max(n, 1):
        logger.info("window_seconds=%g s is %.3f samples at %g Hz; using %d samples.",
                    window_seconds, window_seconds * sfreq, sfreq, n)
    lo, hi = 0, raw.n_times
    if span is not None:
        lo = max(int(round(span[0] * sfreq)), 0)
        hi = min(int(round(span[1] * sfreq)), raw.n_times)
    if hi - lo < n:
        what = "recording" if span is None else f"{state!r} segment at {lo / sfreq:.2f} s"
        raise ValueError(
            f"The {what} is shorter ({max(hi - lo, 0) / sfreq:.2f} s) than one window "
            f"({window_seconds} s); use a shorter window_seconds or a longer recording."
        )
    if event_id is not None and (not isinstance(event_id, dict) or not event_id):
        raise TypeError(
            f"Invalid value for 'event_id': expected a dict such as {{'tone': 1}} or None; "
            f"got {event_id!r}."
        )
    event_id = state_event_id(state, event_id)
    geometry = SensorGeometry.from_info(raw.info)
    picks = mne.pick_channels(raw.ch_names, geometry.names, ordered=True)
    limits = _reject_limits(reject, geometry)

    if event_id is None:
        step = max(int(round((window_seconds - overlap) * sfreq)), 1)
        starts = _rest_starts(raw, n, step, lo, hi)
        events = np.full(len(starts), -1, np.int64)
        repetition = np.full(len(starts), -1, np.int64)
        block = np.full(len(starts), -1, np.int64)
        # windows the BAD spans cost: a tiling of the whole recording (span) minus the
        # tiling of the good stretches (never more windows than the whole)
        n_bad_span = len(range(lo, hi - n + 1, step)) - len(starts)
    else:
        ev = _find_events(raw, event_id, stim_channel, verbose, state)
        if span is not None:
            ev = ev[(ev[:, 0] >= lo) & (ev[:, 0] < hi)]
            if len(ev) == 0:
                raise ValueError(
                    f"No events with id {event_id} inside the {state!r} segment "
                    f"{lo / sfreq:.2f}-{hi / sfreq:.2f} s; map the state to the codes it "
                    "holds (megfm prepare --events STATE=CODE,...)."
                )
        block_all = _blocks(ev[:, 0])
        repetition_all = np.zeros(len(ev), np.int64)
        for code in np.unique(ev[:, 2]):
            idx = ev[:, 2] == code
            repetition_all[idx] = np.arange(idx.sum())
        starts = ev[:, 0] + int(round(tmin * sfreq))
        inside = (starts >= lo) & (starts + n <= hi)
        clean = inside & ~_overlaps_bad(starts, n, _bad_spans(raw))
        n_bad_span = int((~clean).sum())
        if n_bad_span:
            logger.info("%d of %d events dropped: window outside the recording or over a BAD "
                        "span.", n_bad_span, len(ev))
        starts, events = starts[clean], ev[clean, 2]
        repetition, block = repetition_all[clean], block_all[clean]

    data = raw.get_data(picks=picks, start=lo, stop=hi)
    starts_in_data = starts - lo
    if not is_scaled(raw):
        if np.nanmax(np.abs(data)) > 1e-3:
            logger.info("Raw data look already scaled (values > 1e-3); using them as fT/fT/cm.")
        else:
            logger.info("Raw data are in T and T/m; scaling to fT and fT/cm.")
            types = raw.get_channel_types(picks=picks)
            data = data * np.array([SCALINGS[t] for t in types])[:, None]
    windows = np.stack([data[:, s:s + n] for s in starts_in_data]).astype(np.float32) \
        if len(starts) else np.zeros((0, len(picks), n), np.float32)

    n_amplitude = 0
    limits_amp = _amplitude_limits(raw, picks)
    if limits_amp is not None and len(windows):
        centre, limit = (a.astype(np.float32)[:, None] for a in limits_amp)
        # one window at a time: no copy of all the windows
        over = np.array([bool((np.abs(w - centre) > limit).any()) for w in windows])
        n_amplitude = int(over.sum())
        if n_amplitude:
            logger.info("%d window(s) exceed the amplitude limits of preprocess after "
                        "filtering; dropped.", n_amplitude)
        keep = ~over
        windows, starts, events = windows[keep], starts[keep], events[keep]
        repetition, block = repetition[keep], block[keep]

    if baseline is not None and event_id is not None and len(windows):
        b0 = tmin if baseline[0] is None else baseline[0]
        b1 = tmin + n / sfreq if baseline[1] is None else baseline[1]
        i0 = max(int(round((b0 - tmin) * sfreq)), 0)
        i1 = min(int(round((b1 - tmin) * sfreq)), n)
        if i1 <= i0:
            raise ValueError(
                f"Invalid 'baseline' {baseline}: it must lie inside the window "
                f"[{tmin}, {tmin + n / sfreq:g}] s relative to the event."
            )
        windows -= windows[:, :, i0:i1].mean(axis=2, keepdims=True)

    n_few_sensors = 0
    if min_valid_fraction is not None and len(windows):
        if not 0.0 < min_valid_fraction <= 1.0:
            raise ValueError(
                f"Invalid value for 'min_valid_fraction': expected a fraction in (0, 1]; "
                f"got {min_valid_fraction!r}."
            )
        # flat in the window: a peak-to-peak range under 1e-3 of the window's typical one
        ptp = np.ptp(windows, axis=2)
        good = ~geometry.bads
        typical = np.median(ptp[:, good], axis=1, keepdims=True) if good.any() else 0.0
        valid = good[None, :] & (ptp > 1e-3 * typical)
        keep = valid.sum(axis=1) >= min_valid_fraction * geometry.n_sensors
        n_few_sensors = int((~keep).sum())
        windows, starts, events = windows[keep], starts[keep], events[keep]
        repetition, block = repetition[keep], block[keep]

    n_rejected = 0
    if limits is not None and len(windows):
        ptp = windows.max(axis=2) - windows.min(axis=2)
        over = (ptp > limits[None, :]) & ~geometry.bads[None, :]
        keep = ~over.any(axis=1)
        n_rejected = int((~keep).sum())
        windows, starts, events = windows[keep], starts[keep], events[keep]
        repetition, block = repetition[keep], block[keep]

    m = len(windows)
    temp = raw.info.get("temp")
    prep = temp.get(TEMP_KEY, {}).get("config") if isinstance(temp, dict) else None
    info = {
        "state": state, "window_seconds": float(window_seconds), "window_samples": n,
        "overlap": float(overlap), "event_id": event_id, "tmin": float(tmin),
        "baseline": list(baseline) if baseline is not None else None,
        "reject": dict(reject) if reject else None, "n_rejected": n_rejected,
        "n_dropped_bad_span": n_bad_span, "n_amplitude": n_amplitude,
        "n_few_sensors": n_few_sensors,
        "min_valid_fraction": min_valid_fraction, "preprocess": prep,
    }
    if m == 0:
        logger.warning("No %s windows left after rejection (%d rejected).", state, n_rejected)
    return Windows(
        data=windows, sfreq=sfreq, geometries=[geometry],
        metadata={
            "subject": np.full(m, subject), "session": np.full(m, session),
            "state": np.full(m, state), "label": np.full(m, label),
            "onset": starts / sfreq, "event": events, "repetition": repetition,
            "block": block, "recording": np.zeros(m, np.int64),
        },
        info=info,
    )


def find_segments(raw: mne.io.BaseRaw, segments: dict[str, str]) -> list[tuple[str, float, float]]:
    """The stretches of a recording in each state, read from its annotations.

    Parameters
    ----------
    raw : mne.io.Raw
        A recording whose annotations mark the states it holds in sequence.
    segments : dict of str to str
        Annotation description -> state, e.g. ``{"rest": "rest", "tones": "auditory"}``.
        An annotation with a duration covers ``[onset, onset + duration)``; one without
        (a marker) runs until the next segment annotation or the end of the recording.

    Returns
    -------
    spans : list of (str, float, float)
        ``(state, start, stop)`` in seconds of ``raw.times``, in time order.
    """
    ann = raw.annotations
    offset = raw.first_time if ann.orig_time is not None else 0.0
    marks = sorted((float(a["onset"]) - offset, float(a["duration"]), a["description"])
                   for a in ann if a["description"] in segments)
    if not marks:
        present = sorted({d for d in ann.description if not d.lower().startswith("bad")})
        raise ValueError(
            f"No annotation named {sorted(segments)} in this recording (annotations present: "
            f"{present or 'none'}); name the segments after them (--segment DESCRIPTION=STATE)."
        )
    end = raw.n_times / raw.info["sfreq"]
    spans = []
    for i, (onset, duration, description) in enumerate(marks):
        stop = onset + duration if duration > 0 else (marks[i + 1][0] if i + 1 < len(marks)
                                                      else end)
        spans.append((segments[description], max(onset, 0.0), min(stop, end)))
    for (s0, a0, b0), (s1, a1, _) in zip(spans, spans[1:], strict=False):
        if a1 < b0 - 1e-9:
            raise ValueError(
                f"The {s0!r} segment ({a0:.2f}-{b0:.2f} s) overlaps the {s1!r} segment "
                f"starting at {a1:.2f} s; fix the annotations so each moment has one state."
            )
    return spans


def make_segment_windows(
    raw: mne.io.BaseRaw,
    *,
    segments: dict[str, str],
    window_seconds: float = 2.0,
    event_id: dict[str, dict[str, int] | None] | None = None,
    **kwargs,
) -> Windows:
    """Cut a recording that holds several states in sequence, by its annotations.

    Each stretch found by :func:`find_segments` is windowed by :func:`make_windows` with
    its state (fixed-length windows, or windows locked to the state's events); a stretch
    shorter than one window is skipped with a warning.

    Parameters
    ----------
    raw : mne.io.Raw
        Preferably the output of :func:`megfm.preprocess`.
    segments : dict of str to str
        Annotation description -> state (see :func:`find_segments`).
    window_seconds : float
        Duration of every window in seconds.
    event_id : dict of str to (dict of str to int | None) | None
        Events per state (``{"auditory": {"tone": 5}}``); a state without an entry uses
        the defaults of :func:`make_windows`.
    **kwargs
        Passed to :func:`make_windows` (``overlap``, ``tmin``, ``reject``, ``subject``, ...).

    Returns
    -------
    windows : Windows
        One geometry, windows of every segment in time order. ``repetition`` and ``block``
        count within each segment; ``info["state"]`` is None, ``info["event_id"]`` maps
        each state to its events, ``info["segments"]`` is ``segments``, and the dropped
        counts are summed over the segments.
    """
    event_id = event_id or {}
    sfreq = raw.info["sfreq"]
    n = int(round(window_seconds * sfreq))
    parts = []
    for state, start, stop in find_segments(raw, segments):
        if (stop - start) * sfreq < n:
            logger.warning("The %r segment at %.2f s is shorter (%.2f s) than one window; "
                           "skipped.", state, start, stop - start)
            continue
        parts.append(make_windows(raw, state=state, window_seconds=window_seconds,
                                  event_id=event_id.get(state), span=(start, stop), **kwargs))
    if not parts:
        raise ValueError(
            f"Every segment is shorter than one window ({window_seconds} s); use a shorter "
            "window_seconds."
        )
    info = dict(parts[0].info)
    # every state of the mapping, present or not: the same settings for every recording
    info.update(state=None, segments=dict(segments),
                event_id={state: state_event_id(state, event_id.get(state))
                          for state in sorted(set(segments.values()))})
    for key in ("n_rejected", "n_dropped_bad_span", "n_amplitude", "n_few_sensors"):
        info[key] = int(sum(p.info[key] for p in parts))
    return Windows(
        data=np.concatenate([p.data for p in parts]), sfreq=sfreq,
        geometries=parts[0].geometries,
        metadata={k: np.concatenate([p.metadata[k] for p in parts]) for k in parts[0].metadata},
        info=info,
    )
