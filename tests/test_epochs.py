"""make_windows: rest tiling around BAD spans, event-locked task windows, blocks, rejection."""

from __future__ import annotations

import mne
import numpy as np
import pytest
from synthetic_sensors import place_on_circle

from megfm.data.epochs import DEFAULT_EVENT_IDS, make_windows
from megfm.data.preprocess import PreprocessConfig, preprocess
from megfm.data.windows import METADATA_COLUMNS, Windows

SFREQ = 100.0


def _raw(seconds=30.0, events=(), n_mag=3, n_grad=2, seed=0, stim=True):
    """Seeded recording in SI units; ``events`` = [(sample, code), ...] on 'STI 014'."""
    rng = np.random.default_rng(seed)
    names = [f"MAG{i}" for i in range(n_mag)] + [f"GRA{i}" for i in range(n_grad)]
    types = ["mag"] * n_mag + ["grad"] * n_grad
    if stim:
        names, types = names + ["STI 014"], types + ["stim"]
    info = mne.create_info(names, SFREQ, types)
    place_on_circle(info, np.arange(len(info["chs"])))
    n = int(seconds * SFREQ)
    data = rng.normal(size=(len(names), n))
    data[:n_mag] *= 1e-13
    data[n_mag:n_mag + n_grad] *= 1e-11
    if stim:
        data[-1] = 0
        for sample, code in events:
            data[-1, sample:sample + 3] = code
    return mne.io.RawArray(data, info, verbose=False)


def _blocked_events(code=1, n_blocks=3, per_block=5, isi=100, gap=600, start=100):
    events, s = [], start
    for _ in range(n_blocks):
        for _ in range(per_block):
            events.append((s, code))
            s += isi
        s += gap - isi
    return events


def test_rest_tiles_recording_in_fT():
    raw = _raw(seconds=10.0)
    w = make_windows(raw, state="rest", window_seconds=2.0, subject="01", label="HC")
    assert isinstance(w, Windows)
    assert w.data.shape == (5, 5, 200) and w.data.dtype == np.float32
    np.testing.assert_allclose(w.metadata["onset"], [0, 2, 4, 6, 8])
    # SI input scaled on the fly: T -> fT, T/m -> fT/cm
    np.testing.assert_allclose(w.data[1, 0], raw.get_data()[0, 200:400] * 1e15, rtol=1e-5)
    np.testing.assert_allclose(w.data[1, 4], raw.get_data()[4, 200:400] * 1e13, rtol=1e-5)
    assert set(w.metadata) == set(METADATA_COLUMNS)
    assert w.metadata["subject"].tolist() == ["01"] * 5
    assert w.metadata["label"].tolist() == ["HC"] * 5
    assert w.metadata["event"].tolist() == [-1] * 5
    assert w.metadata["block"].tolist() == [-1] * 5
    assert w.geometry.names == raw.ch_names[:5]  # stim channel not a sensor
    assert w.info["window_samples"] == 200 and w.info["state"] == "rest"


def test_rest_overlap():
    w = make_windows(_raw(seconds=10.0), state="rest", window_seconds=2.0, overlap=1.0)
    np.testing.assert_allclose(w.metadata["onset"], np.arange(9.0))


def test_rest_skips_bad_spans():
    raw = _raw(seconds=10.0)
    raw.set_annotations(mne.Annotations([3.0], [1.5], ["BAD_amplitude"]))
    w = make_windows(raw, state="rest", window_seconds=2.0)
    # good stretches [0, 3) and [4.5, 10): windows at 0 | 4.5, 6.5 (8.5 would overrun)
    np.testing.assert_allclose(w.metadata["onset"], [0.0, 4.5, 6.5])
    for onset in w.metadata["onset"]:
        assert onset + 2.0 <= 3.0 or onset >= 4.5


def test_auditory_event_locked_with_blocks_and_repetitions():
    events = _blocked_events(code=1)
    raw = _raw(seconds=30.0, events=events + [(2900, 7)])
    w = make_windows(raw, state="auditory", window_seconds=0.5, tmin=-0.1)
    assert len(w) == 15
    np.testing.assert_allclose(w.metadata["onset"], [s / SFREQ - 0.1 for s, _ in events])
    assert w.metadata["event"].tolist() == [1] * 15
    assert w.metadata["repetition"].tolist() == list(range(15))
    assert w.metadata["block"].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert w.metadata["state"].tolist() == ["auditory"] * 15
    np.testing.assert_allclose(w.data[0, 0], raw.get_data()[0, 90:140] * 1e15, rtol=1e-5)
    assert w.info["event_id"] == DEFAULT_EVENT_IDS["auditory"]


def test_somatosensory_default_id_and_paired_pulse_ignored():
    events = [(s, 2) for s in range(100, 2500, 200)] + [(s + 50, 3) for s in range(100, 2500, 200)]
    w = make_windows(_raw(events=events), state="somatosensory", window_seconds=0.4)
    assert len(w) == 12 and set(w.metadata["event"]) == {2}


def test_events_from_annotations_after_preprocess():
    raw = _raw(seconds=30.0, events=_blocked_events(code=1))
    prep = preprocess(raw, PreprocessConfig(line_freq=None, sfreq=200.0, h_freq=40.0))
    assert "STI 014" not in prep.ch_names
    w = make_windows(prep, state="auditory", window_seconds=0.5, tmin=-0.1)
    assert len(w) == 15 and w.sfreq == 200.0 and w.n_times == 100
    assert w.metadata["block"].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert w.info["preprocess"]["h_freq"] == 40.0


def test_named_annotations_and_multiple_ids():
    raw = _raw(seconds=10.0, stim=False)
    raw.set_annotations(mne.Annotations([1.0, 2.0, 3.0, 4.0], [0, 0, 0, 0],
                                        ["tone", "deviant", "tone", "deviant"]))
    w = make_windows(raw, state="auditory", event_id={"tone": 1, "deviant": 5},
                     window_seconds=0.5, tmin=0.0)
    assert w.metadata["event"].tolist() == [1, 5, 1, 5]
    assert w.metadata["repetition"].tolist() == [0, 0, 1, 1]  # order within each event
    np.testing.assert_allclose(w.metadata["onset"], [1.0, 2.0, 3.0, 4.0])


def test_duplicate_annotations_counted_once():
    # BIDS: events.tsv gives "tone" annotations, preprocess adds "1" for the same stim events
    events = _blocked_events(code=1)
    raw = _raw(seconds=30.0, events=events)
    onsets = [s / SFREQ for s, _ in events]
    raw.set_annotations(mne.Annotations(onsets, [0] * len(onsets), ["tone"] * len(onsets)))
    prep = preprocess(raw, PreprocessConfig(line_freq=None, sfreq=200.0, h_freq=40.0))
    assert list(prep.annotations.description).count("1") == 15
    w = make_windows(prep, state="auditory", window_seconds=0.5, tmin=-0.1)
    assert len(w) == 15
    assert w.metadata["block"].tolist() == [0] * 5 + [1] * 5 + [2] * 5


def test_event_windows_outside_recording_or_over_bad_dropped():
    raw = _raw(seconds=10.0, events=[(5, 1), (300, 1), (500, 1), (990, 1)])
    raw.set_annotations(mne.Annotations([5.0], [0.2], ["BAD_amplitude"]))
    w = make_windows(raw, state="auditory", window_seconds=0.5, tmin=-0.1)
    assert w.metadata["onset"].tolist() == pytest.approx([2.9])
    assert w.metadata["repetition"].tolist() == [1]  # stimulus number kept
    assert w.info["n_dropped_bad_span"] == 3


def test_baseline_correction():
    raw = _raw(seconds=10.0, events=[(300, 1), (600, 1)])
    raw._data[:5] += 1e-11  # offset
    w = make_windows(raw, state="auditory", window_seconds=0.5, tmin=-0.1, baseline=(None, 0.0))
    np.testing.assert_allclose(w.data[:, :, :10].mean(axis=2), 0.0, atol=1e-2)
    with pytest.raises(ValueError, match="Invalid 'baseline'"):
        make_windows(raw, state="auditory", window_seconds=0.5, tmin=-0.1, baseline=(1.0, 2.0))


def test_reject_by_peak_to_peak_per_type():
    raw = _raw(seconds=10.0)
    raw._data[4, 450] = 1e-9  # 10000 fT/cm spike on a gradiometer in window 2
    w = make_windows(raw, state="rest", window_seconds=2.0, reject={"grad": 3000.0})
    assert len(w) == 4 and 4.0 not in w.metadata["onset"]
    assert w.info["n_rejected"] == 1
    # limits on another type do not reject
    assert len(make_windows(raw, state="rest", window_seconds=2.0, reject={"mag": 1e6})) == 5
    # a bad channel does not reject
    raw.info["bads"] = ["GRA1"]
    w = make_windows(raw, state="rest", window_seconds=2.0, reject={"planar_grad": 3000.0})
    assert len(w) == 5 and w.geometry.bads.tolist() == [False] * 4 + [True]


def test_concatenate_states_and_recordings():
    rest = make_windows(_raw(seconds=6.0), state="rest", window_seconds=1.0)
    aud = make_windows(_raw(seconds=6.0, events=[(100, 1), (300, 1)], n_mag=4),
                       state="auditory", window_seconds=1.0)
    both = Windows.concatenate([rest, aud])
    assert both.data.shape == (8, 6, 100)
    assert both.metadata["state"].tolist() == ["rest"] * 6 + ["auditory"] * 2


def test_short_recording_error():
    with pytest.raises(ValueError, match=r"shorter \(1.00 s\) than one window \(2.0 s\)"):
        make_windows(_raw(seconds=1.0), state="rest", window_seconds=2.0)


def test_missing_event_id_lists_present_ids():
    raw = _raw(seconds=10.0, events=[(100, 4), (300, 5)])
    with pytest.raises(ValueError, match=r"No events with id \{'tone': 1\}.*present: \['4', '5'\]"):
        make_windows(raw, state="auditory", window_seconds=0.5)
    raw = _raw(seconds=10.0, stim=False)
    raw.set_annotations(mne.Annotations([1.0], [0], ["click"]))
    with pytest.raises(ValueError, match=r"present: \['click'\]"):
        make_windows(raw, state="somatosensory", window_seconds=0.5)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"state": ""}, ValueError, "'state'"),
    ({"state": "rest", "window_seconds": 0}, ValueError, "'window_seconds'"),
    ({"state": "rest", "overlap": 2.0}, ValueError, "'overlap'"),
    ({"state": "rest", "reject": {"eeg": 1.0}}, ValueError, "Invalid key 'eeg' in 'reject'"),
    ({"state": "auditory", "event_id": [1]}, TypeError, "'event_id'"),
])
def test_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_windows(_raw(seconds=4.0), **kwargs)


def test_unknown_task_state_without_ids_is_fixed_length():
    w = make_windows(_raw(seconds=4.0), state="visual", window_seconds=1.0)
    assert len(w) == 4 and w.metadata["state"].tolist() == ["visual"] * 4


def test_real_recordings_windows(real_file):
    from megfm.data.read import read_raw

    for name in ("vectorview", "ctf275", "kit"):
        prep = preprocess(read_raw(real_file(name)))
        w = make_windows(prep, state="rest", window_seconds=0.5)
        assert len(w) >= 2 and w.n_times == 100
        assert w.data.shape[1] == len(prep.ch_names)
        assert np.isfinite(w.data).all()


def test_span_keeps_windows_and_events_inside_it():
    raw = _raw(seconds=20.0, events=[(150, 1), (650, 1), (1150, 1), (1650, 1)])
    rest = make_windows(raw, state="rest", window_seconds=2.0, span=(5.0, 12.0))
    np.testing.assert_allclose(rest.metadata["onset"], [5.0, 7.0, 9.0])
    # the same samples as the whole-recording windows at those onsets
    whole = make_windows(raw, state="rest", window_seconds=1.0)
    np.testing.assert_array_equal(rest.data[0][:, :100], whole.data[5])
    aud = make_windows(raw, state="auditory", window_seconds=1.0, tmin=-0.5, span=(5.0, 12.0))
    np.testing.assert_allclose(aud.metadata["onset"], [6.0, 11.0])  # events at 6.5 and 11.5
    np.testing.assert_array_equal(aud.metadata["repetition"], [0, 1])  # counted in the span
    edge = make_windows(raw, state="auditory", window_seconds=1.0, tmin=-0.5, span=(6.2, 12.0))
    assert len(edge) == 1 and edge.info["n_dropped_bad_span"] == 1  # 6.0 s: outside the span
    with pytest.raises(ValueError, match=r"No events with id \{'tone': 1\} inside the 'auditory' "
                                         r"segment 12.00-16.00 s"):
        make_windows(raw, state="auditory", window_seconds=1.0, span=(12.0, 16.0))
    with pytest.raises(ValueError, match=r"The 'rest' segment at 5.00 s is shorter \(1.00 s\)"):
        make_windows(raw, state="rest", window_seconds=2.0, span=(5.0, 6.0))


def test_missing_events_hint_names_the_cli_and_python_forms():
    raw = _raw(seconds=10.0, events=[(100, 4), (300, 5)])
    with pytest.raises(ValueError, match=r"megfm prepare --events auditory=4,5, "
                                         r"megfm.prepare\(events=\{'auditory': \.\.\.\}\) or "
                                         r"make_windows\(event_id=\.\.\.\)"):
        make_windows(raw, state="auditory", window_seconds=0.5)


def test_segments_from_annotations_with_durations_or_markers():
    from megfm.data.epochs import find_segments, make_segment_windows

    raw = _raw(seconds=30.0, events=[(1500 + 100 * k, 1) for k in range(10)])
    raw.set_annotations(mne.Annotations([0.0, 12.0], [10.0, 0.0], ["eyes closed", "tones"]))
    segments = {"eyes closed": "rest", "tones": "auditory"}
    assert find_segments(raw, segments) == [("rest", 0.0, 10.0), ("auditory", 12.0, 30.0)]
    w = make_segment_windows(raw, segments=segments, window_seconds=1.0, tmin=0.0)
    meta = w.metadata
    assert meta["state"].tolist() == ["rest"] * 10 + ["auditory"] * 10
    np.testing.assert_allclose(meta["onset"][10:], 15.0 + np.arange(10))
    assert len(w.geometries) == 1 and w.info["segments"] == segments
    assert w.info["event_id"] == {"auditory": {"tone": 1}, "rest": None}
