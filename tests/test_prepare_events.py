"""A lab's own trigger codes and a recording of several states: prepare --events / --segment."""

from __future__ import annotations

import json
import logging
import shutil

import mne
import numpy as np
import pytest
from cli_helpers import one_error_line

import megfm
from megfm.data import store
from megfm.data.prepare import parse_events, parse_segments, prepare

SFREQ = 200.0
LAB_CODES = {1: 5, 2: 32, 3: 33}  # the simulator's tone / stim / second pulse -> a lab's


def _recode(src, dst, codes=LAB_CODES):
    """Copy a simulated recording with its stim-channel codes replaced by ``codes``."""
    raw = mne.io.read_raw_fif(src, preload=True, verbose=False)
    stim = mne.pick_types(raw.info, meg=False, stim=True)[0]
    old = raw._data[stim].copy()
    for a, b in codes.items():
        raw._data[stim, old == a] = b
    raw.save(dst, verbose=False)
    return raw


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """One simulated subject in three states (tones and stimuli from 1 s on, 12 each)."""
    root = tmp_path_factory.mktemp("sim")
    result = megfm.simulate_cohort(root, 1, states=["rest", "auditory", "somatosensory"],
                                   duration=20.0, sfreq=SFREQ, block_size=6, seed=2)
    return {r["state"]: r for r in result["recordings"]}


@pytest.fixture
def lab(simulated, tmp_path):
    """The recordings with the lab's codes: tone = 5, stimulus = 32, second pulse = 33."""
    folder = tmp_path / "lab"
    folder.mkdir()
    for state, rec in simulated.items():
        _recode(rec["path"], folder / f"sub-001_task-{state}_raw.fif")
    return folder


def _mixed(simulated, path, *, markers=False):
    """rest (0-20 s) then auditory (20-40 s) in one recording, its states as annotations."""
    rest = mne.io.read_raw_fif(simulated["rest"]["path"], preload=True, verbose=False)
    aud = mne.io.read_raw_fif(simulated["auditory"]["path"], preload=True, verbose=False)
    length = rest.n_times / SFREQ
    raw = mne.concatenate_raws([rest, aud], verbose=False)  # (appends to rest in place)
    durations = [0.0, 0.0] if markers else [length, length]
    raw.set_annotations(raw.annotations + mne.Annotations(
        [0.0, length], durations, ["rest", "auditory"], orig_time=raw.annotations.orig_time))
    raw.save(path, verbose=False)
    return length


def test_lab_codes_reach_the_windows(lab, simulated, tmp_path):
    summary = prepare(lab, tmp_path / "s", events={"auditory": [5], "somatosensory": [32]},
                      tmin=-0.1, window_seconds=0.6, progress=False)
    assert summary["windows_per_state"]["auditory"] == simulated["auditory"]["n_events"]
    assert summary["windows_per_state"]["somatosensory"] == 6  # one per pair, not the 33s
    w = store.read_store(tmp_path / "s")
    meta = w.metadata
    assert set(meta["event"][meta["state"] == "auditory"]) == {5}
    assert set(meta["event"][meta["state"] == "somatosensory"]) == {32}
    assert set(meta["event"][meta["state"] == "rest"]) == {-1}
    # windows start tmin before each event: the first tone is at 1 s
    assert meta["onset"][meta["state"] == "auditory"].min() == pytest.approx(0.9)
    infos = store.open_store(tmp_path / "s").shard_infos
    assert {i["state"]: i["event_id"] for i in infos} == {
        "auditory": {"5": 5}, "somatosensory": {"32": 32}, "rest": None}


def test_default_codes_missing_error_names_the_cli_flag(lab, tmp_path, capsys):
    from megfm.cli.main import main

    with pytest.raises(ValueError, match=r"No events with id \{'tone': 1\} .* present: \['5'\]; "
                                         r"map the state to its events: megfm prepare --events "
                                         r"auditory=5, megfm.prepare\(events="):
        prepare(lab / "sub-001_task-auditory_raw.fif", tmp_path / "s", progress=False)
    assert main(["prepare", str(lab / "sub-001_task-auditory_raw.fif"), "--out",
                 str(tmp_path / "t"), "--no-progress"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "--events auditory=5" in line and "event_id=" in line


def test_cli_events_items_and_json_file(lab, tmp_path, capsys):
    from megfm.cli.main import main

    files = [str(lab / f"sub-001_task-{s}_raw.fif") for s in ("auditory", "somatosensory")]
    assert main(["prepare", *files, "--out", str(tmp_path / "a"), "--events", "auditory=tone:5",
                 "--events", "somatosensory=32,33", "--tmin", "-0.2", "--window", "0.6",
                 "--no-progress"]) == 0
    meta = store.read_store(tmp_path / "a").metadata
    assert set(meta["event"][meta["state"] == "somatosensory"]) == {32, 33}
    (tmp_path / "events.json").write_text(json.dumps({"auditory": {"tone": 5},
                                                      "somatosensory": [32, 33]}))
    assert main(["prepare", *files, "--out", str(tmp_path / "b"), "--events",
                 str(tmp_path / "events.json"), "--window", "0.6", "--no-progress"]) == 0
    np.testing.assert_array_equal(store.read_store(tmp_path / "b").data,
                                  store.read_store(tmp_path / "a").data)
    capsys.readouterr()
    # the same settings from the JSON file: every recording already in the store
    assert main(["prepare", *files, "--out", str(tmp_path / "a"), "--events",
                 str(tmp_path / "events.json"), "--window", "0.6", "--no-progress"]) == 0
    assert "2 recording(s); the store now holds" in capsys.readouterr().out


def test_event_mapping_and_tmin_are_rerun_settings(lab, tmp_path):
    out = tmp_path / "s"
    aud, rest = lab / "sub-001_task-auditory_raw.fif", lab / "sub-001_task-rest_raw.fif"
    prepare([aud, rest], out, events={"auditory": 5}, window_seconds=0.6, progress=False)
    again = prepare([aud, rest], out, events={"auditory": [5]}, window_seconds=0.6,
                    progress=False)
    assert again["recordings"] == 0 and len(again["already_in_store"]) == 2
    with pytest.raises(ValueError, match=r"other settings \(event_id\)"):
        prepare(aud, out, events={"auditory": [5, 6]}, window_seconds=0.6, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(tmin\)"):
        prepare(aud, out, events={"auditory": [5]}, tmin=-0.1, window_seconds=0.6,
                progress=False)
    # fixed-length windows do not depend on tmin: the rest recording is still the same
    assert prepare(rest, out, tmin=-0.1, window_seconds=0.6,
                   progress=False)["already_in_store"] == [str(rest)]


def test_absent_codes(lab, tmp_path, caplog):
    aud = lab / "sub-001_task-auditory_raw.fif"
    with pytest.raises(ValueError, match=r"No events with id \{'9': 9\} in this recording; "
                                         r"event ids present: \['5'\]"):
        prepare(aud, tmp_path / "s", events={"auditory": [9]}, progress=False)
    with caplog.at_level(logging.WARNING, logger="megfm.data.epochs"):
        summary = prepare(aud, tmp_path / "t", events={"auditory": [5, 6]},
                          window_seconds=0.6, progress=False)
    assert summary["windows"] == 12
    assert "Events ['6'] of the 'auditory' state are absent" in caplog.text


@pytest.mark.parametrize("markers", [False, True])
def test_recording_of_several_states_is_cut_by_its_annotations(simulated, tmp_path, markers):
    path = tmp_path / "sub-001_task-mixed_raw.fif"
    length = _mixed(simulated, path, markers=markers)
    summary = prepare(path, tmp_path / "s", segments=["rest", "auditory"], window_seconds=1.0,
                      progress=False)
    assert summary["per_recording"][0]["state"] == "rest+auditory"
    meta = store.read_store(tmp_path / "s").metadata
    rest, aud = meta["state"] == "rest", meta["state"] == "auditory"
    assert rest.sum() + aud.sum() == len(meta["state"])
    # each tone once, every window inside its own segment
    assert aud.sum() == simulated["auditory"]["n_events"] and set(meta["event"][aud]) == {1}
    assert meta["onset"][aud].min() >= length and meta["onset"][rest].max() + 1.0 <= length
    assert rest.sum() == int(length)  # 1 s windows tile the rest segment
    info = store.open_store(tmp_path / "s").shard_infos[0]
    assert info["state"] is None and info["segments"] == {"rest": "rest", "auditory": "auditory"}
    assert info["event_id"] == {"auditory": {"tone": 1}, "rest": None}
    # re-run safe; a description -> state mapping is another setting
    assert prepare(path, tmp_path / "s", segments={"rest": "rest", "auditory": "auditory"},
                   window_seconds=1.0, progress=False)["already_in_store"] == [str(path)]
    with pytest.raises(ValueError, match=r"other settings \(.*segments.*\)"):
        prepare(path, tmp_path / "s", segments={"rest": "eyes-open", "auditory": "auditory"},
                window_seconds=1.0, progress=False)


def test_segment_errors(simulated, tmp_path):
    path = tmp_path / "sub-001_task-mixed_raw.fif"
    _mixed(simulated, path)
    with pytest.raises(ValueError, match=r"No annotation named \['eyes'\] in this recording "
                                         r"\(annotations present: \[.*'auditory'.*'rest'"):
        prepare(path, tmp_path / "s", segments=["eyes"], progress=False)
    with pytest.raises(ValueError, match=r"Give 'state' .* or 'segments'"):
        prepare(path, tmp_path / "s", segments=["rest"], state="rest", progress=False)
    with pytest.raises(ValueError, match=r"Invalid segment 'rest'=''"):
        parse_segments(["rest="])
    raw = mne.io.read_raw_fif(path, verbose=False)
    raw.set_annotations(mne.Annotations([0.0, 10.0], [15.0, 10.0], ["rest", "auditory"]))
    from megfm.data.epochs import find_segments
    with pytest.raises(ValueError, match=r"The 'rest' segment \(0.00-15.00 s\) overlaps the "
                                         r"'auditory' segment starting at 10.00 s"):
        find_segments(raw, {"rest": "rest", "auditory": "auditory"})


def test_parse_events_forms():
    assert parse_events(None) == {}
    assert parse_events({"auditory": [5, 6], "somatosensory": 32}) == {
        "auditory": {"5": 5, "6": 6}, "somatosensory": {"32": 32}}
    assert parse_events(["auditory=tone:5,6", "somatosensory=32"]) == {
        "auditory": {"tone": 5, "6": 6}, "somatosensory": {"32": 32}}
    assert parse_events({"auditory": {"tone": 5}}) == {"auditory": {"tone": 5}}


@pytest.mark.parametrize("item, match", [
    ("auditory", r"Invalid events item 'auditory': not a file, and not STATE=CODES"),
    ("auditory=", r"Invalid event code '' of state 'auditory'"),
    ("auditory=x", r"Invalid event code 'x' of state 'auditory'; expected STATE=CODE"),
    ("auditory=5,,6", r"Invalid event code '' of state 'auditory'"),
    ("=5", r"a state name is empty"),
    ("auditory=tone:5,tone:6", r"event name 'tone' is empty or given twice"),
])
def test_malformed_events_one_line_cli_error(lab, tmp_path, capsys, item, match):
    from megfm.cli.main import main

    assert main(["prepare", str(lab), "--out", str(tmp_path / "s"), "--events", item,
                 "--no-progress"]) == 1
    assert pytest.importorskip("re").search(match, one_error_line(capsys.readouterr().err))
    assert not (tmp_path / "s").exists()


def test_events_bad_input(lab, tmp_path, capsys):
    from megfm.cli.main import main

    with pytest.raises(ValueError, match=r"given twice"):
        parse_events(["auditory=5", "auditory=6"])
    with pytest.raises(ValueError, match=r"Invalid event code 5.5"):
        parse_events({"auditory": [5.5]})
    (tmp_path / "bad.json").write_text("{auditory: 5")
    with pytest.raises(ValueError, match=r"bad.json is not valid JSON"):
        parse_events(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=r"Invalid value for 'tmin'"):
        prepare(lab, tmp_path / "s", tmin=float("nan"), progress=False)
    # a state no recording has: a typo does not pass silently
    assert main(["prepare", str(lab), "--out", str(tmp_path / "s"), "--events", "auditroy=5",
                 "--no-progress"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "The events name state(s) ['auditroy'] that no recording has (states: " \
           "['auditory', 'rest', 'somatosensory'])" in line
    assert not (tmp_path / "s").exists()


def test_bids_events_tsv_names_map_to_codes(simulated, tmp_path):
    """Events that reach megfm as named annotations (no stim channel) map by NAME:CODE."""
    raw = mne.io.read_raw_fif(simulated["auditory"]["path"], preload=True, verbose=False)
    events = mne.find_events(raw, verbose=False)
    raw.pick("meg")
    raw.set_annotations(mne.annotations_from_events(events, SFREQ, {1: "beep"},
                                                    orig_time=raw.annotations.orig_time))
    raw.save(tmp_path / "sub-001_task-auditory_raw.fif", verbose=False)
    summary = prepare(tmp_path / "sub-001_task-auditory_raw.fif", tmp_path / "s",
                      events=["auditory=beep:11"], window_seconds=0.6, progress=False)
    assert summary["windows"] == len(events)
    assert set(store.read_store(tmp_path / "s").metadata["event"]) == {11}
    shutil.rmtree(tmp_path / "s")
