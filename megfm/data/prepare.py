"""`prepare`: recordings (files, folders, a BIDS dataset) -> preprocessed windows -> a store.

For every recording found in ``inputs``: :func:`~megfm.data.read.read_raw` ->
:func:`~megfm.data.preprocess.preprocess` -> :func:`~megfm.data.epochs.make_windows` ->
:func:`~megfm.data.store.write_store` (appended one recording at a time, so memory holds one
recording only). Per recording:

* ``state``: the ``state`` argument when given, else the BIDS ``task`` entity
  (``task-<state>`` in the file name);
* ``subject``: ``sub-<id>`` from the file name (else the file name itself), ``session``
  from ``ses-<id>``;
* ``label``: the ``group`` column of a ``participants.tsv`` found in or above the
  recording's folder (or the ``participants`` argument).

A lab's own trigger codes reach the windows through ``events`` (the event codes of each
state, windows starting ``tmin`` seconds from each event); without an entry, a state uses
:data:`~megfm.data.epochs.DEFAULT_EVENT_IDS` (``auditory``: code 1, ``somatosensory``: code
2) or fixed-length windows. A recording that holds several states in sequence is cut by
its annotations with ``segments`` (annotation description -> state).

Re-running is safe: every shard records its ``source`` (the resolved recording path) and
the settings it was made with (including the events and segments of its states), and a
recording already in the store with the same settings is skipped, so a re-run after a
crash completes the store without duplicates.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import re
import time
from collections import Counter
from pathlib import Path

from .epochs import make_segment_windows, make_windows, state_event_id
from .preprocess import PreprocessConfig, preprocess
from .read import find_bids_root, read_raw

__all__ = ["find_recordings", "parse_entities", "parse_events", "parse_segments", "prepare",
           "read_participants"]

logger = logging.getLogger(__name__)

_RAW_SUFFIXES = (".fif", ".fif.gz", ".con", ".sqd", ".bin")
# FIF files that are not raw recordings (events, transforms, evoked, covariance, ...)
_NOT_RAW = re.compile(
    r"[-_](eve|trans|ave|cov|fwd|inv|epo|proj|bem|sol|src|annot|dip|morph|ica|evoked)"
    r"\.fif(\.gz)?$", re.IGNORECASE)
# continuation files of split FIF recordings (MNE reads them from the first part)
_SPLIT_PART = re.compile(r"(-\d+\.fif(\.gz)?$)|(_split-0*[2-9]\d*_)", re.IGNORECASE)


def _is_recording(path: Path) -> bool:
    name = path.name.lower()
    if path.is_dir():
        return name.endswith(".ds")
    if name.startswith("c,rf"):
        return True
    if not name.endswith(_RAW_SUFFIXES) or _NOT_RAW.search(name) or _SPLIT_PART.search(name):
        return False
    if name.endswith(".bin"):  # FIL OPM data come as *_meg.bin
        return name.endswith("_meg.bin")
    return True


def find_recordings(inputs) -> list[Path]:
    """List the MEG recordings in files and folders (searched recursively).

    Parameters
    ----------
    inputs : str | pathlib.Path | list of (str | pathlib.Path)
        Recordings (files or CTF ``.ds`` folders) and folders to search, e.g. a BIDS root.
        ``derivatives`` folders and hidden folders are not searched.

    Returns
    -------
    paths : list of pathlib.Path
        The recordings, sorted within each input, without duplicates.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"Input {path} does not exist.")
        if path.is_file() or path.name.lower().endswith(".ds"):
            found.append(path)
            continue
        matches = []
        stack = [path]
        while stack:
            folder = stack.pop()
            for child in sorted(folder.iterdir()):
                if child.name.startswith(".") or child.name == "derivatives":
                    continue
                if _is_recording(child):
                    matches.append(child)
                elif child.is_dir():
                    stack.append(child)
        found.extend(sorted(matches))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def parse_entities(path: str | Path) -> dict[str, str]:
    """Read BIDS-style ``key-value`` entities (sub, ses, task, run, ...) from a file name.

    Parameters
    ----------
    path : str | pathlib.Path
        A file name or path.

    Returns
    -------
    entities : dict of str to str
        e.g. ``{"sub": "001", "task": "rest"}`` for ``sub-001_task-rest_raw.fif``.
    """
    name = Path(path).name
    return {m.group(1): m.group(2) for m in re.finditer(r"(?:^|_)([a-z]+)-([A-Za-z0-9]+)", name)}


def read_participants(path: str | Path) -> dict[str, str]:
    """Map ``participant_id`` to ``group`` from a BIDS ``participants.tsv``.

    Parameters
    ----------
    path : str | pathlib.Path
        The ``participants.tsv`` file.

    Returns
    -------
    groups : dict of str to str
        Keys are participant ids as written (e.g. ``"sub-001"``).
    """
    path = Path(path)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and ("participant_id" not in rows[0] or "group" not in rows[0]):
        raise ValueError(
            f"{path} needs the columns 'participant_id' and 'group'; it has "
            f"{sorted(rows[0])}."
        )
    return {r["participant_id"].strip(): (r["group"] or "").strip() for r in rows}


def _find_participants(path: Path) -> Path | None:
    """participants.tsv in the recording's folder or above (stops at a BIDS root)."""
    root = find_bids_root(path.parent)
    for folder in path.parents:
        candidate = folder / "participants.tsv"
        if candidate.is_file():
            return candidate
        if root is not None and folder == root:
            break
    return None


def _label(subject: str, groups: dict[str, str]) -> str:
    bare = subject[4:] if subject.startswith("sub-") else subject
    for key in (subject, f"sub-{bare}", bare):
        if key in groups:
            return groups[key]
    return ""


#: ``Windows.info`` keys that `prepare` sets: a recording already in the store with the
#: same values (and the same ``source``) is not written again.
#: A key missing from an older store's info is not compared.
_SETTINGS_KEYS = ("state", "window_seconds", "overlap", "reject", "min_valid_fraction",
                  "preprocess", "event_id", "tmin", "segments")


def _settings(info: dict) -> dict:
    """The prepare settings in a shard's info, JSON-normalised (tuples -> lists, ...)."""
    settings = {k: info[k] for k in _SETTINGS_KEYS if k in info}
    if "event_id" in settings and settings["event_id"] is None:
        settings.pop("tmin", None)  # fixed-length windows: the event offset plays no part
    return json.loads(json.dumps(settings, default=str))


_EVENTS_FORMAT = ("expected STATE=CODE[,CODE...] with integer codes or NAME:CODE items "
                  "(e.g. auditory=5,6 or auditory=tone:5), or a JSON file of "
                  '{"STATE": [CODE, ...]}')


def _event_codes(state: str, value) -> dict[str, int]:
    """One state's events as ``{name: code}`` from a code, a list of items or a dict."""
    items = value.items() if isinstance(value, dict) else (
        [value] if isinstance(value, (int, str)) else value)
    if not isinstance(value, dict) and not isinstance(items, (list, tuple)):
        raise ValueError(f"Invalid events of state {state!r}: {value!r}; {_EVENTS_FORMAT}.")
    mapping: dict[str, int] = {}
    for item in items:
        if isinstance(item, tuple):
            name, code = item
        elif isinstance(item, str) and ":" in item:
            name, code = item.rsplit(":", 1)
        else:
            name, code = None, item
        try:
            if isinstance(code, (bool, float)):  # 5.0 or True is not a trigger code
                raise ValueError
            code = int(str(code).strip())
        except ValueError:
            raise ValueError(
                f"Invalid event code {code!r} of state {state!r}; {_EVENTS_FORMAT}.") from None
        name = str(code) if name is None else str(name).strip()
        if not name or name in mapping:
            raise ValueError(f"Invalid events of state {state!r}: event name {name!r} is "
                             f"empty or given twice; {_EVENTS_FORMAT}.")
        mapping[name] = code
    if not mapping:
        raise ValueError(f"No event codes given for state {state!r}; {_EVENTS_FORMAT}.")
    return mapping


def _events_json(path: Path) -> dict:
    try:
        loaded = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"Events file {path} is not valid JSON ({exc}); {_EVENTS_FORMAT}.") \
            from None
    if not isinstance(loaded, dict):
        raise ValueError(f"Events file {path} must hold a JSON object; {_EVENTS_FORMAT}.")
    return loaded


def parse_events(events) -> dict[str, dict[str, int]]:
    """Normalise the event mapping per state of :func:`prepare` / ``megfm prepare --events``.

    Parameters
    ----------
    events : dict | str | pathlib.Path | list of str | None
        ``{state: codes}`` where codes is an int, a list of ints or ``"NAME:CODE"``
        strings, or a ``{name: code}`` dict; the path of a JSON file of that dict; or a
        list of command-line items ``"STATE=CODE,CODE"`` / ``"STATE=NAME:CODE,..."`` and
        JSON file paths. A state may be given once.

    Returns
    -------
    events : dict of str to (dict of str to int)
        ``{state: {event name: code}}``; a bare code is named after itself (``"5"``), which
        is also how :func:`megfm.preprocess` names stim-channel events in annotations.
    """
    if events is None:
        return {}
    if isinstance(events, (str, Path)):
        events = [events]
    if isinstance(events, dict):
        parts = [events]
    elif isinstance(events, (list, tuple)):
        parts = []
        for item in events:
            if isinstance(item, Path) or (isinstance(item, str) and "=" not in item):
                path = Path(item).expanduser()
                if not path.is_file():
                    raise ValueError(f"Invalid events item {str(item)!r}: not a file, and "
                                     f"not STATE=CODES; {_EVENTS_FORMAT}.")
                parts.append(_events_json(path))
            elif isinstance(item, str):
                state, _, codes = item.partition("=")
                parts.append({state.strip(): codes.split(",")})
            else:
                raise ValueError(f"Invalid events item {item!r}; {_EVENTS_FORMAT}.")
    else:
        raise TypeError(f"Invalid type for 'events': expected a dict, a JSON path or a list "
                        f"of STATE=CODES items; got {type(events).__name__}.")
    mapping: dict[str, dict[str, int]] = {}
    for part in parts:
        for state, value in part.items():
            state = str(state).strip()
            if not state:
                raise ValueError(f"Invalid events: a state name is empty; {_EVENTS_FORMAT}.")
            if state in mapping:
                raise ValueError(f"The events of state {state!r} are given twice; give each "
                                 "state once, with all its codes.")
            mapping[state] = _event_codes(state, value)
    return mapping


def parse_segments(segments) -> dict[str, str] | None:
    """Normalise the ``segments`` of :func:`prepare` / ``megfm prepare --segment``.

    Parameters
    ----------
    segments : dict | list of str | None
        ``{annotation description: state}``, or a list of ``"DESCRIPTION=STATE"`` items
        and bare state names (annotations named after their state).

    Returns
    -------
    segments : dict of str to str | None
    """
    if segments is None:
        return None
    if isinstance(segments, str):
        segments = [segments]
    if isinstance(segments, dict):
        pairs = list(segments.items())
    elif isinstance(segments, (list, tuple)):
        pairs = []
        for item in segments:
            description, sep, state = str(item).partition("=")
            pairs.append((description, state if sep else description))
    else:
        raise TypeError(f"Invalid type for 'segments': expected a dict or a list of "
                        f"DESCRIPTION=STATE items; got {type(segments).__name__}.")
    mapping: dict[str, str] = {}
    for description, state in pairs:
        description, state = str(description).strip(), str(state).strip()
        if not description or not state or description in mapping:
            raise ValueError(
                f"Invalid segment {description!r}={state!r}: expected DESCRIPTION=STATE or "
                "a state name (an annotation named after it), each description once."
            )
        mapping[description] = state
    if not mapping:
        raise ValueError("Invalid value for 'segments': no segment given.")
    return mapping


def _stored_recordings(out: Path) -> dict[str, list[dict]]:
    """``{source: [settings, ...]}`` of the shards already in the store at ``out``."""
    from .store import MANIFEST_NAME, _load_manifest

    if not (out / MANIFEST_NAME).is_file():
        return {}
    stored: dict[str, list[dict]] = {}
    for entry in _load_manifest(out)["shards"]:
        info = entry.get("info") or {}
        if info.get("source"):
            stored.setdefault(str(info["source"]), []).append(_settings(info))
    return stored


def _check_usable_sensors(prep, min_valid_fraction: float | None) -> None:
    """Refuse a recording with too few usable (not bad) MEG sensors, naming the bad ones."""
    n = len(prep.ch_names)
    bads = [ch for ch in prep.ch_names if ch in prep.info["bads"]]
    need = max(1, math.ceil((min_valid_fraction or 0.0) * n))
    if n - len(bads) >= need:
        return
    shown = ", ".join(bads[:5]) + (", ..." if len(bads) > 5 else "")
    raise ValueError(
        f"{len(bads)} of {n} MEG sensors are bad (flat, noisy or marked bad: {shown}), "
        f"leaving {n - len(bads)} usable where {need} are needed "
        f"(min_valid_fraction={min_valid_fraction}); repair the recording, leave it out, or "
        "skip it with --skip-errors."
    )


def _recording_windows(path: Path, *, state: str | None, subject: str, session: str,
                       label: str, config: PreprocessConfig, window_seconds: float,
                       overlap: float, events: dict, tmin: float, segments: dict | None,
                       reject: dict | None, min_valid_fraction: float | None,
                       store_sfreq: float | None, verbose):
    """Read, preprocess and window one recording; raise ValueError when it is unusable."""
    raw = read_raw(path, verbose=verbose)
    prep = preprocess(raw, config, copy=False, verbose=verbose)
    del raw
    if store_sfreq is not None and prep.info["sfreq"] != store_sfreq:
        raise ValueError(
            f"sampling rate {prep.info['sfreq']:g} Hz differs from the {store_sfreq:g} "
            "Hz of the recordings before it; set PreprocessConfig.sfreq so all "
            "recordings are resampled to one rate."
        )
    _check_usable_sensors(prep, min_valid_fraction)
    common = dict(window_seconds=window_seconds, overlap=overlap, tmin=tmin, reject=reject,
                  subject=subject, session=session, label=label,
                  min_valid_fraction=min_valid_fraction, verbose=verbose)
    if segments is not None:
        windows = make_segment_windows(prep, segments=segments, event_id=events, **common)
    else:
        windows = make_windows(prep, state=state, event_id=events.get(state), **common)
    if windows.n_windows == 0:
        raise ValueError("no windows left after rejection; relax 'reject' or check "
                         "the BAD_amplitude spans (PreprocessConfig.bad_amplitude_z).")
    return windows


def _wanted_settings(rec_state: str | None, *, events: dict, segments: dict | None,
                     tmin: float, window_seconds: float, overlap: float, reject: dict | None,
                     min_valid_fraction: float | None, config: PreprocessConfig) -> dict:
    """The settings a shard of this recording records (as make_windows and
    make_segment_windows write them into ``Windows.info``)."""
    if segments is not None:
        event_id = {s: state_event_id(s, events.get(s)) for s in sorted(set(segments.values()))}
    else:
        event_id = state_event_id(rec_state, events.get(rec_state))
    return _settings({"state": rec_state, "window_seconds": float(window_seconds),
                      "overlap": float(overlap), "reject": dict(reject) if reject else None,
                      "min_valid_fraction": min_valid_fraction,
                      "preprocess": config.to_dict(), "event_id": event_id,
                      "tmin": float(tmin), "segments": segments})


def _prepare_locked(plans, out: Path, *, groups_given, config, window_seconds, overlap, reject,
                    min_valid_fraction, events, tmin, segments, dtype, compression, skip_errors,
                    progress, verbose) -> dict:
    """The loop of :func:`prepare` over the recordings (the caller holds the store lock)."""
    from tqdm.auto import tqdm

    from .store import _load_manifest, write_store

    rows: list[dict] = []
    skipped: list[dict] = []
    already: list[str] = []
    stored = _stored_recordings(out)
    per_state: Counter = Counter()
    sensors: Counter = Counter()
    store_sfreq = None
    cache: dict[Path, dict[str, str]] = {}
    bar = tqdm(plans, desc="prepare", unit="rec", disable=not progress)
    for path, rec_state, subject, session in bar:
        bar.set_postfix_str(path.name[-40:], refresh=False)
        if groups_given is not None:
            groups = groups_given
        else:
            tsv = _find_participants(path)
            if tsv is not None and tsv not in cache:
                cache[tsv] = read_participants(tsv)
            groups = cache.get(tsv, {}) if tsv is not None else {}
        label = _label(subject, groups)
        source = str(Path(path).resolve())
        wanted = _wanted_settings(rec_state, events=events, segments=segments, tmin=tmin,
                                  window_seconds=window_seconds, overlap=overlap, reject=reject,
                                  min_valid_fraction=min_valid_fraction, config=config)
        olds = stored.get(source, [])
        if any(all(old[k] == wanted[k] for k in old) for old in olds):
            logger.info("%s is already in %s with the same settings; skipped.", path, out)
            already.append(str(path))
            continue
        try:
            if olds:
                differ = sorted({k for old in olds for k in old if old[k] != wanted[k]})
                raise ValueError(
                    f"the store {out} already holds this recording, prepared with other "
                    f"settings ({', '.join(differ)}); prepare it into a new store (--out) or "
                    "with the store's settings."
                )
            windows = _recording_windows(
                path, state=rec_state, subject=subject, session=session, label=label,
                config=config, window_seconds=window_seconds, overlap=overlap, events=events,
                tmin=tmin, segments=segments, reject=reject,
                min_valid_fraction=min_valid_fraction, store_sfreq=store_sfreq,
                verbose=verbose)
            # the shard remembers its recording (e.g. to find a simulator's ground truth)
            windows.info["source"] = source
            write_store(windows, out, dtype=dtype, compression=compression)
        except (ValueError, OSError) as exc:
            if not skip_errors:
                raise ValueError(f"{path}: {exc}") from exc
            logger.warning("Skipping %s: %s", path, exc)
            skipped.append({"file": str(path), "error": str(exc)})
            continue
        store_sfreq = windows.sfreq
        n_sensors = windows.geometry.n_sensors
        states = windows.metadata["state"]
        per_state.update(states.tolist())
        sensors[n_sensors] += 1
        rows.append({
            "file": str(path), "subject": subject, "session": session,
            "state": rec_state or "+".join(dict.fromkeys(states.tolist())),
            "label": label, "windows": int(windows.n_windows), "sensors": int(n_sensors),
            "bad_channels": int(windows.geometry.bads.sum()),
            "rejected": int(windows.info["n_rejected"]),
            "dropped_bad_span": int(windows.info["n_dropped_bad_span"]),
            "amplitude": int(windows.info["n_amplitude"]),
            "few_sensors": int(windows.info["n_few_sensors"]),
        })
    bar.close()
    if not rows and not already:
        raise ValueError(f"No recording could be prepared; skipped: {skipped}")
    manifest = _load_manifest(out)
    if store_sfreq is None:  # nothing new: report the store as it is
        store_sfreq = manifest["sfreq"]
    return {
        "store": str(out),
        "recordings": len(rows),
        "windows": int(sum(r["windows"] for r in rows)),
        "windows_per_state": dict(sorted(per_state.items())),
        "sensors": {int(k): int(v) for k, v in sorted(sensors.items())},
        "rejected": int(sum(r["rejected"] for r in rows)),
        "dropped_bad_span": int(sum(r["dropped_bad_span"] for r in rows)),
        "amplitude": int(sum(r["amplitude"] for r in rows)),
        "few_sensors": int(sum(r["few_sensors"] for r in rows)),
        "bad_channels": int(sum(r["bad_channels"] for r in rows)),
        "sfreq": float(store_sfreq),
        "window_seconds": float(window_seconds),
        "skipped": skipped,
        "already_in_store": already,
        "store_windows": int(manifest["n_windows"]),
        "per_recording": rows,
    }


def prepare(
    inputs,
    out: str | Path,
    *,
    state: str | None = None,
    window_seconds: float = 2.0,
    config: PreprocessConfig | dict | str | Path | None = None,
    participants: str | Path | dict[str, str] | None = None,
    dtype: str = "float32",
    compression: str | None = None,
    overlap: float = 0.0,
    reject: dict[str, float] | None = None,
    min_valid_fraction: float | None = 0.5,
    events=None,
    tmin: float = -0.2,
    segments=None,
    skip_errors: bool = False,
    progress: bool = True,
    verbose=None,
) -> dict:
    """Read, preprocess and window recordings, and append them to a store.

    Parameters
    ----------
    inputs : str | pathlib.Path | list
        Recording files, CTF ``.ds`` folders, folders to search, or a BIDS root.
    out : str | pathlib.Path
        Store folder (created, or appended to when it is already a store).
    state : str | None
        State of every recording (overrides the file names). None reads it from the BIDS
        ``task`` entity (``task-<state>`` in the file name).
    window_seconds : float
        Window duration in seconds (same for every state).
    config : PreprocessConfig | dict | str | pathlib.Path | None
        Preprocessing parameters, or a JSON file of them; None uses the defaults.
    participants : str | pathlib.Path | dict | None
        A ``participants.tsv`` or a ``{participant_id: group}`` dict for the labels. None
        looks for ``participants.tsv`` in and above each recording's folder.
    dtype : ``"float32"`` | ``"float16"``
        On-disk sample type of the store.
    compression : None | ``"gzip"`` | ``"lzf"``
        HDF5 compression of the store.
    overlap : float
        Overlap of resting-state windows in seconds.
    reject : dict | None
        Peak-to-peak rejection limits per sensor type (see :func:`megfm.make_windows`).
    min_valid_fraction : float | None
        A recording with fewer than this fraction of its MEG sensors usable (not flat, noisy
        or marked bad) is refused, and windows with fewer valid sensors (bad, or flat within
        the window) are dropped and counted in ``few_sensors``. None only refuses a
        recording whose every sensor is bad.
    events : dict | str | pathlib.Path | list of str | None
        The event codes of each state, e.g. ``{"auditory": [5, 6], "somatosensory": 32}``,
        ``{"auditory": {"tone": 5}}``, a JSON file of that, or command-line items
        ``["auditory=5,6"]`` (see :func:`parse_events`). The windows of a state with events
        start ``tmin`` seconds from each event. A state without an entry uses
        :data:`~megfm.data.epochs.DEFAULT_EVENT_IDS` (``auditory``: 1, ``somatosensory``:
        2), or fixed-length windows (``rest`` and other states). A state that no
        recording has is refused (a typo would otherwise go unnoticed).
    tmin : float
        Start of an event-locked window relative to its event, in seconds.
    segments : dict | list of str | None
        Cut each recording by its annotations into the states it holds in sequence:
        ``{annotation description: state}``, or a list of state names (annotations named
        after their state) or ``"DESCRIPTION=STATE"`` items. An annotation with a
        duration covers that stretch; one without runs until the next such annotation.
        Excludes ``state``; a recording without such annotations is refused.
    skip_errors : bool
        Skip recordings that fail (listed in the summary) instead of stopping.
    progress : bool
        Show a tqdm progress bar.
    verbose : bool | str | int | None
        MNE verbosity.

    Returns
    -------
    summary : dict
        ``store`` (path), ``recordings`` (count written), ``windows`` (total written),
        ``already_in_store`` (files skipped because the store holds them with the same
        settings), ``store_windows`` (windows in the store afterwards),
        ``windows_per_state``, ``sensors`` (``{system sensor count: recordings}``),
        ``rejected`` (windows dropped by peak-to-peak), ``dropped_bad_span`` (over a
        ``BAD*`` span, e.g. ``BAD_amplitude``, or the edge), ``amplitude`` (beyond the
        amplitude limits after filtering), ``few_sensors`` (too few valid sensors),
        ``bad_channels``, ``skipped`` (``[{"file", "error"}]``), ``seconds``, and
        ``per_recording`` rows.
    """
    from ._lock import LOCK_NAME, store_lock
    from .store import MANIFEST_NAME, _check_store_folder

    t0 = time.perf_counter()
    if config is None:
        config = PreprocessConfig()
    elif isinstance(config, dict):
        config = PreprocessConfig.from_dict(config)
    elif isinstance(config, (str, Path)):
        config = PreprocessConfig.from_json(config)
    elif not isinstance(config, PreprocessConfig):
        raise TypeError(
            "Invalid type for 'config': expected PreprocessConfig, dict, a JSON path or None; "
            f"got {type(config).__name__}."
        )
    if state is not None and (not isinstance(state, str) or not state):
        raise ValueError(f"Invalid value for 'state': expected a non-empty string; got {state!r}.")
    events = parse_events(events)
    segments = parse_segments(segments)
    if segments is not None and state is not None:
        raise ValueError("Give 'state' (one state per recording) or 'segments' (states cut "
                         "from the annotations), not both.")
    if isinstance(tmin, bool) or not isinstance(tmin, (int, float)) or not math.isfinite(tmin):
        raise ValueError(f"Invalid value for 'tmin': expected a number of seconds; got {tmin!r}.")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"Invalid value for 'dtype': expected 'float32' or 'float16'; got {dtype!r}.")
    if min_valid_fraction is not None and not 0.0 < min_valid_fraction <= 1.0:
        raise ValueError(f"Invalid value for 'min_valid_fraction': expected a fraction in (0, 1] "
                         f"or None; got {min_valid_fraction!r}.")
    groups_given = None
    if isinstance(participants, dict):
        groups_given = {str(k): str(v) for k, v in participants.items()}
    elif participants is not None:
        if not Path(participants).is_file():
            raise FileNotFoundError(f"Participants table {participants} does not exist.")
        groups_given = read_participants(participants)

    paths = find_recordings(inputs)
    if not paths:
        raise ValueError(
            f"No MEG recordings found in {inputs}. megfm looks for FIF, CTF .ds, KIT .con/.sqd, "
            "BTi c,rf* and FIL *_meg.bin files."
        )
    # states first, so a missing state stops before anything is written
    plans = []
    for path in paths:
        ent = parse_entities(path)
        rec_state = None if segments is not None else state or ent.get("task")
        if not rec_state and segments is None:
            raise ValueError(
                f"Cannot tell the state of {path}: its name has no 'task-<state>' entity. "
                "Pass state= (--state on the command line), e.g. 'rest', or segments= "
                "(--segment) to cut it by its annotations."
            )
        subject = f"sub-{ent['sub']}" if "sub" in ent else path.name.split(".")[0]
        plans.append((path, rec_state, subject, ent.get("ses", "")))
    known = {plan[1] for plan in plans} | set((segments or {}).values())
    unknown = sorted(set(events) - known)
    if unknown:
        raise ValueError(
            f"The events name state(s) {unknown} that no recording has (states: "
            f"{sorted(s for s in known if s)}); check the spelling, or set the states "
            "(--state, task-<state> in the file names, --segment)."
        )

    out = Path(out)
    _check_store_folder(out)
    created = not out.exists()
    with store_lock(out):  # one writer: the whole run, so no recording is written twice
        try:
            summary = _prepare_locked(
                plans, out, groups_given=groups_given, config=config,
                window_seconds=window_seconds, overlap=overlap, reject=reject,
                min_valid_fraction=min_valid_fraction, events=events, tmin=float(tmin),
                segments=segments, dtype=dtype, compression=compression,
                skip_errors=skip_errors, progress=progress, verbose=verbose)
        except BaseException:
            if created and not (out / MANIFEST_NAME).exists():
                (out / LOCK_NAME).unlink(missing_ok=True)  # leave no empty store behind
                with contextlib.suppress(OSError):
                    out.rmdir()
            raise
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    logger.info("Prepared %d recordings, %d windows into %s", summary["recordings"],
                summary["windows"], out)
    return summary
