"""prepare / megfm prepare: folders, BIDS names, labels, every real recording, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import mne
import numpy as np
import pytest
from cli_helpers import one_error_line
from synthetic_sensors import place_on_circle

from megfm.data import store  # noqa: E402
from megfm.data.epochs import make_windows
from megfm.data.prepare import find_recordings, parse_entities, prepare, read_participants
from megfm.data.preprocess import PreprocessConfig, preprocess
from megfm.data.read import read_raw

SFREQ = 400.0


def _raw(seconds=8.0, sfreq=SFREQ, n_mag=4, n_grad=4, seed=0, events=()):
    rng = np.random.default_rng(seed)
    names = [f"MAG{i}" for i in range(n_mag)] + [f"GRA{i}" for i in range(n_grad)] + ["STI 014"]
    types = ["mag"] * n_mag + ["grad"] * n_grad + ["stim"]
    info = mne.create_info(names, sfreq, types)
    place_on_circle(info, np.arange(len(info["chs"])))
    data = rng.normal(size=(len(names), int(seconds * sfreq)))
    data[:n_mag] *= 1e-13
    data[n_mag:-1] *= 1e-11
    data[-1] = 0
    for sample, code in events:
        data[-1, sample:sample + 4] = code
    return mne.io.RawArray(data, info, verbose=False)


@pytest.fixture
def cohort(tmp_path):
    """Two subjects (HC, migraine), rest + auditory, flat simulator-like layout."""
    folder = tmp_path / "cohort"
    folder.mkdir()
    tones = [(int(SFREQ * (0.5 + 0.5 * k)), 1) for k in range(12)]
    for k, sub in enumerate(["001", "002"]):
        _raw(seed=k).save(folder / f"sub-{sub}_task-rest_raw.fif", verbose=False)
        _raw(seed=10 + k, events=tones).save(folder / f"sub-{sub}_task-auditory_raw.fif",
                                             verbose=False)
    (folder / "participants.tsv").write_text(
        "participant_id\tgroup\tage\nsub-001\tHC\t30\nsub-002\tmigraine\t41\n")
    mne.write_events(folder / "sub-001_task-auditory-eve.fif", np.array([[0, 0, 1]]),
                     verbose=False)
    return folder


def test_find_recordings_and_entities(cohort, tmp_path):
    found = find_recordings(cohort)
    assert [p.name for p in found] == ["sub-001_task-auditory_raw.fif", "sub-001_task-rest_raw.fif",
                                       "sub-002_task-auditory_raw.fif", "sub-002_task-rest_raw.fif"]
    assert parse_entities("sub-01_ses-2_task-rest_run-1_meg.fif") == {
        "sub": "01", "ses": "2", "task": "rest", "run": "1"}
    assert read_participants(cohort / "participants.tsv") == {"sub-001": "HC",
                                                              "sub-002": "migraine"}
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        find_recordings(tmp_path / "nowhere")


def test_prepare_cohort_roundtrip(cohort, tmp_path):
    out = tmp_path / "store"
    summary = prepare([cohort], out, window_seconds=1.0, progress=False)
    assert summary["recordings"] == 4
    assert summary["windows_per_state"] == {"auditory": 24, "rest": 16}
    assert summary["sensors"] == {8: 4}
    assert summary["sfreq"] == 200.0
    windows = store.read_store(out)
    assert len(windows) == 40 and windows.n_times == 200
    meta = windows.metadata
    labels = dict(zip(meta["subject"].tolist(), meta["label"].tolist(), strict=True))
    assert labels == {"sub-001": "HC", "sub-002": "migraine"}
    aud = meta["state"] == "auditory"
    assert set(meta["event"][aud]) == {1} and meta["repetition"][aud].max() == 11
    assert set(meta["event"][~aud]) == {-1}
    # bit-exact against the functions called directly (float32 store)
    raw = read_raw(cohort / "sub-002_task-auditory_raw.fif")
    direct = make_windows(preprocess(raw), state="auditory", window_seconds=1.0)
    rows = (meta["subject"] == "sub-002") & aud
    np.testing.assert_array_equal(windows.data[rows][:, :8], direct.data)
    # every shard remembers the recording it came from
    sources = {Path(info["source"]).name for info in store.open_store(out).shard_infos}
    assert sources == {p.name for p in cohort.glob("*_raw.fif")}


def test_state_override_participants_arg_and_float16(cohort, tmp_path):
    out = tmp_path / "s16"
    summary = prepare(cohort / "sub-001_task-rest_raw.fif", out, state="eyes-closed",
                      participants={"001": "PPTH"}, dtype="float16", window_seconds=2.0,
                      progress=False)
    assert summary["windows_per_state"] == {"eyes-closed": 4}
    w16 = store.read_store(out)
    assert w16.metadata["label"].tolist() == ["PPTH"] * 4
    direct = make_windows(preprocess(read_raw(cohort / "sub-001_task-rest_raw.fif")),
                          state="rest", window_seconds=2.0)
    np.testing.assert_allclose(w16.data, direct.data, rtol=1e-3, atol=1e-3 * np.abs(direct.data).max())


def test_missing_state_names_file(tmp_path):
    _raw().save(tmp_path / "recording_raw.fif", verbose=False)
    with pytest.raises(ValueError, match=r"state of .*recording_raw.fif.*task-<state>"):
        prepare(tmp_path, tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()  # nothing written


def test_short_recording_error_and_skip(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _raw(seconds=0.5).save(src / "sub-01_task-rest_raw.fif", verbose=False)
    _raw(seconds=6.0).save(src / "sub-02_task-rest_raw.fif", verbose=False)
    with pytest.raises(ValueError, match=r"sub-01_task-rest_raw.fif: The recording is shorter"):
        prepare(src, tmp_path / "a", progress=False)
    summary = prepare(src, tmp_path / "b", skip_errors=True, progress=False)
    assert summary["recordings"] == 1 and len(summary["skipped"]) == 1
    assert "shorter" in summary["skipped"][0]["error"]


def test_mismatched_sampling_rates(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _raw(sfreq=200.0).save(src / "sub-01_task-rest_raw.fif", verbose=False)
    _raw(sfreq=250.0).save(src / "sub-02_task-rest_raw.fif", verbose=False)
    cfg = PreprocessConfig(sfreq=None, h_freq=40.0)
    with pytest.raises(ValueError, match=r"sub-02_task-rest_raw.fif: sampling rate 250 Hz .*"
                                         r"PreprocessConfig.sfreq"):
        prepare(src, tmp_path / "store", config=cfg, progress=False)
    # what was written before the error is intact
    assert len(store.read_store(tmp_path / "store")) == 4


def test_append_different_window_length_refused(cohort, tmp_path):
    out = tmp_path / "store"
    prepare(cohort / "sub-001_task-rest_raw.fif", out, window_seconds=1.0, progress=False)
    with pytest.raises(ValueError, match="samples"):
        prepare(cohort / "sub-002_task-rest_raw.fif", out, window_seconds=2.0, progress=False)
    assert len(store.read_store(out)) == 8


def test_config_from_json_file_and_errors(cohort, tmp_path):
    path = tmp_path / "prep.json"
    PreprocessConfig(sfreq=100.0, h_freq=40.0).to_json(path)
    summary = prepare(cohort / "sub-001_task-rest_raw.fif", tmp_path / "s", config=path,
                      progress=False)
    assert summary["sfreq"] == 100.0
    assert store.read_store(tmp_path / "s").info["preprocess"]["sfreq"] == 100.0
    with pytest.raises(ValueError, match="No MEG recordings found"):
        prepare(tmp_path / "s", tmp_path / "t", progress=False)
    with pytest.raises(ValueError, match="'dtype'"):
        prepare(cohort, tmp_path / "u", dtype="int8", progress=False)
    with pytest.raises(TypeError, match="'config'"):
        prepare(cohort, tmp_path / "u", config=3, progress=False)


def test_bids_dataset(tmp_path):
    mne_bids = pytest.importorskip("mne_bids")
    root = tmp_path / "bids"
    for sub, task in [("01", "rest"), ("02", "rest")]:
        raw = _raw(seed=int(sub))
        raw.set_meas_date(None)
        fif = tmp_path / f"{sub}_raw.fif"
        raw.save(fif, verbose=False)
        bp = mne_bids.BIDSPath(subject=sub, task=task, datatype="meg", root=root)
        mne_bids.write_raw_bids(mne.io.read_raw_fif(fif, verbose=False), bp, overwrite=True,
                                verbose=False)
    tsv = root / "participants.tsv"
    lines = tsv.read_text().splitlines()
    cols = lines[0].split("\t")
    rows = [dict(zip(cols, line.split("\t"), strict=True)) for line in lines[1:]]
    groups = {"sub-01": "HC", "sub-02": "APTH"}
    tsv.write_text("participant_id\tgroup\n" + "".join(
        f"{r['participant_id']}\t{groups[r['participant_id']]}\n" for r in rows))
    summary = prepare(root, tmp_path / "store", window_seconds=2.0, progress=False)
    assert summary["recordings"] == 2 and summary["windows_per_state"] == {"rest": 8}
    meta = store.read_store(tmp_path / "store").metadata
    assert sorted(set(zip(meta["subject"], meta["label"], strict=True))) == [
        ("sub-01", "HC"), ("sub-02", "APTH")]


def test_every_real_recording(test_data_dir, tmp_path):
    # the KIT test file has signal on 1 of its 160 sensors (the others are flat): refused by
    # default, kept when only all-bad recordings are refused
    kit = test_data_dir / "KIT" / "ArtificalSignalData_Yokogawa_1khz.con"
    with pytest.raises(ValueError, match="159 of 160 MEG sensors are bad"):
        prepare(kit, tmp_path / "kit", state="rest", window_seconds=0.25, progress=False)
    out = tmp_path / "real"
    summary = prepare([test_data_dir], out, state="rest", window_seconds=0.25, progress=False,
                      min_valid_fraction=None)
    assert summary["recordings"] == 6 and not summary["skipped"]
    assert summary["sensors"] == {151: 1, 160: 1, 273: 1, 306: 3}
    windows = store.read_store(out)
    assert len(windows) == summary["windows"]
    assert sorted(g.n_sensors for g in windows.geometries) == [151, 160, 273, 306, 306, 306]
    # bit-exact float32 round trip for one system of each vendor
    for row in summary["per_recording"]:
        if not row["file"].endswith(("somMDYO-18av.ds_raw.fif", ".con")):
            continue
        direct = make_windows(preprocess(read_raw(row["file"])), state="rest",
                              window_seconds=0.25)
        rows = windows.metadata["subject"] == row["subject"]
        np.testing.assert_array_equal(windows.data[rows][:, :direct.data.shape[1]], direct.data)
    # float16 within its precision
    out16 = tmp_path / "real16"
    prepare([test_data_dir / "SSS"], out16, state="rest", window_seconds=0.25, dtype="float16",
            progress=False)
    w16 = store.read_store(out16)
    ref = windows[np.isin(windows.metadata["subject"], w16.metadata["subject"])]
    assert len(w16) == len(ref) == 44
    scale = np.abs(ref.data).max(axis=2, keepdims=True)
    assert np.all(np.abs(w16.data - ref.data) <= 1e-3 * scale + 1e-3)


def test_cli_prepare(cohort, tmp_path, capsys):
    from megfm.cli.main import main

    out = tmp_path / "store"
    code = main(["prepare", str(cohort), "--out", str(out), "--window", "1", "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "recordings: 4" in text and "auditory: 24" in text and "migraine" in text
    code = main(["prepare", str(cohort / "sub-001_task-rest_raw.fif"), "--out", str(out),
                 "--window", "2", "--no-progress"])
    assert code == 1  # already in the store, with another window length
    assert "other settings (window_seconds)" in capsys.readouterr().err
    code = main(["prepare", str(cohort / "sub-001_task-rest_raw.fif"), "--out",
                 str(tmp_path / "j"), "--json", "--no-progress", "--state", "rest"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["windows_per_state"] == {"rest": 4}
    code = main(["prepare", str(cohort / "sub-002_task-rest_raw.fif"), "--out",
                 str(tmp_path / "k"), "--line-freq", "60", "--no-progress"])
    assert code == 0
    assert store.read_store(tmp_path / "k").info["preprocess"]["line_freq"] == 60.0


def test_simulated_bids_cohort(tmp_path):
    """The simulator's BIDS output goes through prepare with states, labels and blocks."""
    simulate = pytest.importorskip("megfm.simulate")
    root = tmp_path / "cohort"
    simulate.simulate_cohort(root, 2, states=["auditory"], duration=20.0, sfreq=200.0,
                             block_size=4, bids=True, seed=0)
    summary = prepare([root], tmp_path / "store", window_seconds=1.0, progress=False)
    assert summary["recordings"] == 2 and summary["sensors"] == {306: 2}
    meta = store.read_store(tmp_path / "store").metadata
    assert set(meta["state"]) == {"auditory"}  # from the BIDS task entity
    groups = read_participants(root / "participants.tsv")
    for subject, label in zip(meta["subject"], meta["label"], strict=True):
        assert groups[subject] == label != ""
    aud = (meta["state"] == "auditory") & (meta["subject"] == "sub-001")
    # each tone once (stim channel and events.tsv describe the same events)
    assert np.all(np.diff(meta["onset"][aud]) > 0)
    assert set(meta["event"][aud]) == {1}
    assert meta["block"][aud].max() >= 1 and np.all(np.diff(meta["block"][aud]) >= 0)


def test_rerun_skips_recordings_already_in_the_store(cohort, tmp_path, capsys):
    from megfm.cli.main import main

    out = tmp_path / "store"
    first = prepare([cohort], out, window_seconds=1.0, progress=False)
    assert first["store_windows"] == first["windows"] == 40
    again = prepare([cohort], out, window_seconds=1.0, progress=False)
    assert again["recordings"] == 0 and again["windows"] == 0
    assert len(again["already_in_store"]) == 4 and again["store_windows"] == 40
    assert len(store.read_store(out)) == 40
    assert main(["prepare", str(cohort), "--out", str(out), "--window", "1",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "no new recording written" in text and "4 recording(s); the store now holds 40" in text
    # a new recording in the folder: only it is added
    _raw(seed=7).save(cohort / "sub-003_task-rest_raw.fif", verbose=False)
    more = prepare([cohort], out, window_seconds=1.0, progress=False)
    assert more["recordings"] == 1 and more["store_windows"] == 48
    sources = [info["source"] for info in store.open_store(out).shard_infos]
    assert len(sources) == len(set(sources)) == 5
    # the same recording with other settings is refused, naming what differs
    with pytest.raises(ValueError, match=r"already holds this recording, prepared with other "
                                         r"settings \(preprocess\)"):
        prepare(cohort / "sub-003_task-rest_raw.fif", out, window_seconds=1.0,
                config={"l_freq": 1.0}, progress=False)
    assert len(store.read_store(out)) == 48


def test_rerun_after_a_crash_completes_the_store_exactly(cohort, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    prepare([cohort], clean, window_seconds=1.0, progress=False)
    out = tmp_path / "store"
    real_write = store.write_store
    calls = []

    def dies_on_third(windows, path, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while writing the third recording
        return real_write(windows, path, **kw)

    monkeypatch.setattr(store, "write_store", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare([cohort], out, window_seconds=1.0, progress=False)
    monkeypatch.setattr(store, "write_store", real_write)
    assert len(store.read_store(out)) == 20  # two recordings (12 + 8) before the crash
    summary = prepare([cohort], out, window_seconds=1.0, progress=False)
    assert summary["recordings"] == 2 and len(summary["already_in_store"]) == 2
    a, b = store.read_store(clean), store.read_store(out)
    key = np.lexsort((a.metadata["onset"], a.metadata["state"], a.metadata["subject"]))
    key_b = np.lexsort((b.metadata["onset"], b.metadata["state"], b.metadata["subject"]))
    assert len(a) == len(b) == 40
    np.testing.assert_array_equal(a.data[key], b.data[key_b])


def test_recording_with_every_sensor_bad_is_refused_or_skipped(cohort, tmp_path, capsys):
    from megfm.cli.main import main

    raw = read_raw(cohort / "sub-001_task-rest_raw.fif")
    raw.info["bads"] = [ch for ch in raw.ch_names if ch.startswith(("MAG", "GRA"))]
    raw.save(cohort / "sub-009_task-rest_raw.fif", verbose=False)
    bad = cohort / "sub-009_task-rest_raw.fif"
    with pytest.raises(ValueError, match=r"sub-009_task-rest_raw.fif: 8 of 8 MEG sensors are "
                                         r"bad .*MAG0, MAG1.*leaving 0 usable"):
        prepare(bad, tmp_path / "a", window_seconds=1.0, progress=False)
    assert not (tmp_path / "a").exists()
    assert main(["prepare", str(cohort), "--out", str(tmp_path / "b"), "--window", "1",
                 "--skip-errors", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "recordings: 4" in text and "skipped 1 recording(s):" in text
    assert "sub-009_task-rest_raw.fif: 8 of 8 MEG sensors are bad" in text
    assert {g.bads.all() for g in store.read_store(tmp_path / "b").geometries} == {False}
    # 5 of 8 bad: below the default half, accepted when the threshold is lowered
    raw.info["bads"] = raw.info["bads"][:5]
    raw.save(bad, overwrite=True, verbose=False)
    with pytest.raises(ValueError, match=r"5 of 8 MEG sensors are bad.*3 usable where 4"):
        prepare(bad, tmp_path / "c", window_seconds=1.0, progress=False)
    summary = prepare(bad, tmp_path / "c", window_seconds=1.0, min_valid_fraction=0.25,
                      progress=False)
    assert summary["windows"] == 8 and summary["per_recording"][0]["bad_channels"] == 5


def test_windows_with_too_few_valid_sensors_are_dropped_and_counted(cohort, tmp_path):
    raw = read_raw(cohort / "sub-001_task-rest_raw.fif")
    raw.info["bads"] = ["MAG0", "MAG1", "MAG2"]
    raw._data[4:7, 400:1200] = 0.0  # three more sensors flat in seconds 1 and 2 only
    src = tmp_path / "sub-001_task-rest_raw.fif"
    raw.save(src, verbose=False)
    summary = prepare(src, tmp_path / "s", window_seconds=1.0, progress=False,
                      config={"flat_ratio": None, "l_freq": None, "h_freq": None,
                              "line_freq": None, "bad_amplitude_z": None, "sfreq": None})
    # 8 sensors, 3 bad: windows 1 and 2 keep 2 valid sensors (< 4) and are dropped
    assert summary["few_sensors"] == 2 and summary["windows"] == 6
    onsets = store.read_store(tmp_path / "s").metadata["onset"]
    np.testing.assert_allclose(onsets, [0, 3, 4, 5, 6, 7])
    # write_store refuses a recording whose every sensor is bad
    windows = store.read_store(tmp_path / "s")
    windows.geometries[0].bads[:] = True
    with pytest.raises(ValueError, match="Every sensor of recording 0 .* is marked bad"):
        store.write_store(windows, tmp_path / "t")


def test_skip_errors_skips_every_unreadable_recording(cohort, tmp_path, capsys):
    from megfm.cli.main import main

    whole = (cohort / "sub-001_task-rest_raw.fif").read_bytes()
    (cohort / "sub-005_task-rest_raw.fif").write_bytes(b"")
    (cohort / "sub-006_task-rest_raw.fif").write_bytes(whole[: len(whole) // 2])
    (cohort / "sub-007_task-rest_raw.fif").write_bytes(np.random.default_rng(0).bytes(5000))
    (cohort / "sub-008_task-rest_meg.con").write_bytes(b"\x00" * 64)
    args = ["prepare", str(cohort), "--out", str(tmp_path / "s"), "--window", "1",
            "--no-progress"]
    assert main(args) == 1
    one_error_line(capsys.readouterr().err)
    args[3] = str(tmp_path / "t")
    assert main(args + ["--skip-errors"]) == 0
    out = capsys.readouterr().out
    assert "recordings: 4" in out and "skipped 4 recording(s):" in out
    assert "sub-005_task-rest_raw.fif is empty (0 bytes)" in out
    assert "sub-006_task-rest_raw.fif is truncated" in out
    assert "sub-007_task-rest_raw.fif is not a FIF file" in out
    assert "Could not read" in out and "sub-008_task-rest_meg.con" in out


def test_artefact_windows_are_dropped_and_counted(tmp_path):
    raw = _raw(seconds=30.0, seed=3)
    raw._data[2, 6000:6020] *= 1e6  # a 1e6x artefact on one good channel at 15 s
    raw.save(tmp_path / "sub-01_task-rest_raw.fif", verbose=False)
    summary = prepare(tmp_path / "sub-01_task-rest_raw.fif", tmp_path / "s", window_seconds=1.0,
                      progress=False)
    # the BAD_amplitude span (widened by filter ringing) costs windows, and they are counted
    assert summary["dropped_bad_span"] > 0
    assert summary["windows"] + summary["dropped_bad_span"] + summary["amplitude"] == 30
    w = store.read_store(tmp_path / "s")
    assert summary["per_recording"][0]["bad_channels"] == 0
    clean = prepare(_save(_raw(seconds=30.0, seed=3), tmp_path / "c"), tmp_path / "sc",
                    window_seconds=1.0, progress=False)
    assert clean["dropped_bad_span"] == 0 and clean["windows"] == 30
    typical = np.abs(store.read_store(tmp_path / "sc").data).max()
    assert np.abs(w.data).max() < 3 * typical  # no ringing left in the kept windows
    # without the annotations, the amplitude limits of preprocess still catch the artefact
    prep = preprocess(read_raw(tmp_path / "sub-01_task-rest_raw.fif"))
    n_spans = len(prep.annotations)
    prep.set_annotations(None)
    direct = make_windows(prep, state="rest", window_seconds=1.0)
    assert n_spans >= 1 and direct.info["n_amplitude"] >= 1
    assert direct.n_windows + direct.info["n_amplitude"] == 30
    assert np.abs(direct.data).max() < 3 * typical


def _save(raw, folder):
    folder.mkdir()
    raw.save(folder / "sub-01_task-rest_raw.fif", verbose=False)
    return folder / "sub-01_task-rest_raw.fif"
