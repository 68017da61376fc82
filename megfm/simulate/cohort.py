"""Simulate a cohort: subjects x states -> FIF (or BIDS) files + ground truth."""

from __future__ import annotations

import csv
import datetime
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import mne
import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from .._io import atomic_path, atomic_write_text
from .arrays import ARRAY_KINDS, sensor_array
from .effects import SUBJECT_SD, GroupEffects, effect_list, resolve_groups
from .sources import REGIONS, make_subject_anatomy, region_field
from .states import EVENT_IDS, STATE_DESIGNS, STATES, simulate_state

__all__ = ["simulate_cohort"]

logger = logging.getLogger(__name__)

STIM_CHANNEL = "STI 014"
_MEAS_DATE = datetime.datetime(2024, 1, 1, 9, 0, tzinfo=datetime.timezone.utc)


_PARTICIPANT_COLUMNS = {
    "participant_id": {"Description": "subject identifier"},
    "group": {"Description": "simulated group (HC = healthy control)"},
    "age": {"Description": "age (simulated)", "Units": "years"},
    "sex": {"Description": "sex (simulated)", "Levels": {"M": "male", "F": "female"}},
    "head_dx_mm": {"Description": "head shift in the helmet along x (right)", "Units": "mm"},
    "head_dy_mm": {"Description": "head shift along y (anterior)", "Units": "mm"},
    "head_dz_mm": {"Description": "head shift along z (up)", "Units": "mm"},
    "alpha_peak_hz": {"Description": "individual alpha peak frequency", "Units": "Hz"},
    "habituation_slope": {"Description": "relative change of evoked amplitude per block"},
    "gating_ratio": {"Description": "second / first somatosensory response amplitude"},
}


def _log_level(verbose) -> int:
    if isinstance(verbose, bool):
        return logging.INFO if verbose else logging.WARNING
    if isinstance(verbose, str):
        return logging.getLevelName(verbose.upper())
    return int(verbose)


def _subject_id(index: int) -> str:
    return f"{index + 1:03d}"


def _draw_subject(group: GroupEffects, rng: np.random.Generator) -> dict:
    """Draw one subject's parameters around its group means (independent of the group's
    values: the same seed gives the same deviations whatever the effect scale)."""
    sd = SUBJECT_SD
    z = rng.standard_normal(8)
    return {
        "habituation_slope": group.habituation_slope + sd["habituation_slope"] * z[0],
        "gating_ratio": max(0.05, group.gating_ratio + sd["gating_ratio"] * z[1]),
        "theta_scale": float(np.exp(sd["log_theta_power"] * z[2] / 2)),
        "alpha_scale": float(np.exp(sd["log_alpha_power"] * z[3] / 2)),
        "alpha_peak_hz": float(np.clip(10.0 + sd["alpha_peak_hz"] * z[4], 8.0, 12.5)),
        "theta_peak_hz": float(np.clip(6.0 + 0.5 * z[5], 4.5, 7.5)),
        "evoked_scale": float(np.exp(sd["log_evoked_amplitude"] * z[6])),
        "m100_latency": float(np.clip(0.1 + 0.008 * z[7], 0.08, 0.12)),
        "m20_latency": 0.02,
        "theta_power": dict(group.theta_power),
        "alpha_power": dict(group.alpha_power),
    }


def _with_stim(info: mne.Info) -> mne.Info:
    """Copy of ``info`` with the stim channel appended."""
    stim = mne.create_info([STIM_CHANNEL], info["sfreq"], "stim", verbose=False)["chs"][0]
    out = info.copy()
    with out._unlock(update_redundant=True, check_after=True):
        out["chs"].append(stim)
    return out


def _make_raw(info: mne.Info, data: np.ndarray, stim: np.ndarray, subject: str, sex: int
              ) -> mne.io.RawArray:
    """Raw of the MEG ``data`` and the stim channel (``info`` already has the stim channel)."""
    full = np.empty((data.shape[0] + 1, data.shape[1]))
    full[:-1] = data
    full[-1] = stim
    raw = mne.io.RawArray(full, info, copy=None, verbose=False)
    with raw.info._unlock():
        raw.info["subject_info"] = {"his_id": f"sub-{subject}", "sex": sex}
        raw.info["line_freq"] = 50.0
    raw.set_meas_date(_MEAS_DATE)
    return raw


def _simulate_subject(index, group_name, group, info, states, duration, sfreq, block_size,
                      paired_pulse, seed_seq, tmp_dir, bem=None, trans=None):
    """Worker: simulate every state of one subject, save FIFs into ``tmp_dir``."""
    subject_seq, *state_seqs = seed_seq.spawn(1 + len(STATES))
    rng = np.random.default_rng(subject_seq)
    subject = _draw_subject(group, rng)
    anatomy = make_subject_anatomy(info, rng, bem=bem, trans=trans)
    sex = int(rng.integers(1, 3))
    age = int(np.clip(round(rng.normal(35, 10)), 18, 65))
    sub = _subject_id(index)
    raw_info = _with_stim(anatomy.info)
    written = []
    for state in states:
        state_rng = np.random.default_rng(state_seqs[STATES.index(state)])
        data, stim, events = simulate_state(state, anatomy, subject, sfreq=sfreq,
                                            duration=duration, block_size=block_size,
                                            paired_pulse=paired_pulse, rng=state_rng)
        raw = _make_raw(raw_info, data, stim, sub, sex)
        del data
        fname = Path(tmp_dir) / f"sub-{sub}_task-{state}_raw.fif"
        raw.save(fname, fmt="single", overwrite=True, verbose=False)
        written.append(dict(state=state, tmp=str(fname), n_events=int(len(events))))
    row = dict(participant_id=f"sub-{sub}", group=group_name, age=age,
               sex="M" if sex == 1 else "F",
               head_dx_mm=round(1000 * anatomy.head_offset[0], 2),
               head_dy_mm=round(1000 * anatomy.head_offset[1], 2),
               head_dz_mm=round(1000 * anatomy.head_offset[2], 2),
               alpha_peak_hz=round(subject["alpha_peak_hz"], 3),
               habituation_slope=round(subject["habituation_slope"], 4),
               gating_ratio=round(subject["gating_ratio"], 4))
    return row, written


def _check_states(states) -> list[str]:
    if isinstance(states, str):
        states = [s.strip() for s in states.split(",") if s.strip()]
    states = list(states)
    bad = [s for s in states if s not in STATES]
    if bad or not states:
        raise ValueError(f"Invalid value for 'states': expected some of {', '.join(STATES)}; "
                         f"got {bad or states!r}.")
    return list(dict.fromkeys(states))


def _write_participants(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fid:
        writer = csv.DictWriter(fid, fieldnames=list(rows[0]), delimiter="\t",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _write_bids(tmp_fif: str, out_dir: Path, sub: str, state: str) -> Path:
    try:
        from mne_bids import BIDSPath, write_raw_bids
    except ImportError as exc:  # pragma: no cover - mne-bids is a dependency
        raise ImportError("bids=True needs mne-bids: pip install mne-bids") from exc
    raw = mne.io.read_raw_fif(tmp_fif, verbose=False)
    bids_path = BIDSPath(subject=sub, task=state, datatype="meg", root=out_dir)
    events = mne.find_events(raw, stim_channel=STIM_CHANNEL, shortest_event=1, verbose=False)
    event_id = None
    if len(events):
        names = {1: "tone", 2: "stim", 3: "stim2"}
        event_id = {names[c]: c for c in np.unique(events[:, 2]) if c in names}
    # mne-bids looks for KIT head-position coils with a reader that accepts only RawKIT
    # files; a simulated KIT-like array has none, which is what its RuntimeError means.
    with mock.patch("mne.chpi.extract_chpi_locs_kit", side_effect=RuntimeError("no cHPI")):
        write_raw_bids(raw, bids_path, events=events if len(events) else None,
                       event_id=event_id, overwrite=True, verbose=False)
    return Path(bids_path.fpath)


def simulate_cohort(
    out_dir,
    n_subjects: int = 20,
    *,
    groups=("HC", "migraine"),
    states=STATES,
    array="vectorview",
    duration: float = 120.0,
    sfreq: float = 1000.0,
    effect_scale: float = 1.0,
    block_size: int = 20,
    paired_pulse: bool = True,
    bids: bool = False,
    n_jobs: int = 1,
    seed: int = 0,
    bem=None,
    trans=None,
    verbose=None,
) -> dict:
    """Simulate a multi-state MEG cohort with planted group effects.

    Parameters
    ----------
    out_dir : path-like
        Output folder (created). Existing files of the same names are replaced.
    n_subjects : int
        Number of subjects; groups are assigned in turn (sub-001 to the first group, ...).
    groups : list of str | dict
        Group names from :data:`megfm.simulate.GROUPS` (``"HC"``, ``"migraine"``, ``"APTH"``,
        ``"PPTH"``), a comma-separated string of them, or a dict name -> parameters
        (:class:`megfm.simulate.GroupEffects` or a dict of its fields).
    states : list of str
        Recording states, some of ``"rest"``, ``"auditory"``, ``"somatosensory"``.
    array : str | mne.Info
        Sensor array (see :func:`megfm.simulate.sensor_array`).
    duration : float
        Length of each recording (s). Must hold at least one stimulus block of every task
        state.
    sfreq : float
        Sampling frequency (Hz).
    effect_scale : float
        Multiplies every group difference from controls (>= 0; 0 = no group effect).
    block_size : int
        Stimuli per block in the task states.
    paired_pulse : bool
        Somatosensory stimuli come in pairs 500 ms apart (gating), event 3 on the second.
    bids : bool
        Write a BIDS layout (``sub-001/meg/sub-001_task-rest_meg.fif``) with mne-bids instead
        of flat ``sub-001_task-rest_raw.fif`` files.
    n_jobs : int
        Parallel workers over subjects (joblib).
    seed : int
        Seed; the same seed gives identical files. Each subject (and state) draws from its own
        child of ``numpy.random.SeedSequence(seed)``, so a subject's data do not depend on
        ``n_jobs``, on the number of subjects or on which states are simulated.
    bem : str | path-like | mne.bem.ConductorModel | None
        Head model for the forward solution: None (default) is a sphere model; otherwise a
        BEM solution (file or ``ConductorModel``) as :func:`mne.make_forward_solution` takes
        it. The named regions are placed for an average adult head in head coordinates, so
        the BEM must contain them.
    trans : str | mne.transforms.Transform | None
        Head <-> MRI transform of ``bem`` (None: identity).
    verbose : bool | str | int | None
        Log level (MNE convention); also shows the progress bar when not ``False``.

    Returns
    -------
    result : dict
        ``out_dir``, ``recordings`` (list of dicts ``subject``, ``group``, ``state``,
        ``path``, ``n_events``), ``participants`` (path of participants.tsv),
        ``ground_truth_path`` and ``ground_truth`` (the dict written to ground_truth.json).
    """
    if verbose is not None:
        logger.setLevel(_log_level(verbose))
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, (int, np.integer)) or \
            n_subjects < 1:
        raise ValueError(f"Invalid value for 'n_subjects': expected an int >= 1; "
                         f"got {n_subjects!r}.")
    for name, value in (("duration", duration), ("sfreq", sfreq)):
        if not isinstance(value, (int, float, np.number)) or not math.isfinite(value) or \
                value <= 0:
            raise ValueError(f"Invalid value for {name!r}: expected a positive number; "
                             f"got {value!r}.")
    if not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"Invalid value for 'block_size': expected an int >= 1; "
                         f"got {block_size!r}.")
    states = _check_states(states)
    resolved = resolve_groups(groups, effect_scale)
    for state in states:
        if state in STATE_DESIGNS:
            need = STATE_DESIGNS[state].min_duration(block_size)
            if duration < need:
                raise ValueError(
                    f"Invalid value for 'duration': {duration} s is shorter than one stimulus "
                    f"block of the {state!r} state ({block_size} stimuli every "
                    f"{STATE_DESIGNS[state].isi} s: at least {need:.1f} s); use a longer "
                    "duration or a smaller block_size.")
    if isinstance(array, str) and array not in ARRAY_KINDS:
        raise ValueError(f"Invalid value for 'array': expected one of {', '.join(ARRAY_KINDS)} "
                         f"or an mne.Info; got {array!r}.")
    info = sensor_array(array, sfreq=float(sfreq))
    array_name = array if isinstance(array, str) else "custom"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    group_names = list(resolved)
    seqs = np.random.SeedSequence(int(seed)).spawn(int(n_subjects))
    tmp_dir = Path(tempfile.mkdtemp(prefix=".megfm-sim-", dir=out_dir))
    try:
        jobs = (delayed(_simulate_subject)(
            i, group_names[i % len(group_names)], resolved[group_names[i % len(group_names)]],
            info, states, float(duration), float(sfreq), int(block_size), bool(paired_pulse),
            seqs[i], tmp_dir, bem, trans) for i in range(n_subjects))
        results = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
        rows, recordings = [], []
        for row, written in tqdm(results, total=n_subjects, desc="simulate subjects",
                                 unit="subject", disable=verbose is False):
            rows.append(row)
            sub = row["participant_id"][4:]
            for item in written:
                if bids:
                    path = _write_bids(item["tmp"], out_dir, sub, item["state"])
                    os.remove(item["tmp"])
                else:
                    path = out_dir / Path(item["tmp"]).name
                    os.replace(item["tmp"], path)
                recordings.append(dict(subject=row["participant_id"], group=row["group"],
                                       state=item["state"], path=str(path),
                                       n_events=item["n_events"]))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    participants = out_dir / "participants.tsv"
    _write_participants(participants, rows)
    if bids:
        atomic_write_text(out_dir / "participants.json", json.dumps(_PARTICIPANT_COLUMNS,
                                                                     indent=2))
    truth = _ground_truth(info, array_name, sfreq, seed, effect_scale, resolved, states)
    truth_path = out_dir / "ground_truth.json"
    atomic_write_text(truth_path, json.dumps(truth, indent=2))
    logger.info("simulated %d subjects x %d states into %s", n_subjects, len(states), out_dir)
    return dict(out_dir=str(out_dir), recordings=recordings, participants=str(participants),
                ground_truth_path=str(truth_path), ground_truth=truth)


def _ground_truth(info, array_name, sfreq, seed, effect_scale, groups, states) -> dict:
    state_regions = {s: list(STATE_DESIGNS[s].regions) for s in states if s in STATE_DESIGNS}
    expected = {}
    for state, regions in state_regions.items():
        field = region_field(info, regions)
        expected[state] = [info["ch_names"][i] for i in np.flatnonzero(field > 0.5)]
    return {
        "array": array_name,
        "sfreq": float(sfreq),
        "seed": int(seed),
        "effect_scale": float(effect_scale),
        "states": list(states),
        "event_id": {"auditory": {"tone": EVENT_IDS["tone"]},
                     "somatosensory": {"stim": EVENT_IDS["stim"],
                                       "stim2": EVENT_IDS["stim2"]}},
        "stim_channel": STIM_CHANNEL,
        "groups": {name: g.to_dict() for name, g in groups.items()},
        "subject_sd": dict(SUBJECT_SD),
        "effects": effect_list(groups),
        "regions": {name: {"position": [round(float(v), 5) for v in r["position"]],
                           "orientation": [round(float(v), 5) for v in r["orientation"]],
                           "hemisphere": r["hemisphere"]}
                    for name, r in REGIONS.items()},
        "state_regions": state_regions,
        "expected_sensors": expected,
    }
