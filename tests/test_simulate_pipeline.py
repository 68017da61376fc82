"""Simulated files go through the real data layer: read_raw, preprocess, make_windows, prepare."""

from __future__ import annotations

import numpy as np
import pytest

import megfm
from megfm.simulate import simulate_cohort

SMALL = dict(array="kit160", duration=16.0, sfreq=200.0, block_size=3, seed=5, verbose=False)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    result = simulate_cohort(out, n_subjects=2, groups=["HC", "APTH"], **SMALL)
    return out, result


def test_read_preprocess_windows(cohort):
    _, result = cohort
    for rec in result["recordings"]:
        raw = megfm.read_raw(rec["path"])
        clean = megfm.preprocess(raw)
        windows = megfm.make_windows(clean, state=rec["state"], window_seconds=0.5,
                                     subject=rec["subject"], label=rec["group"])
        meta = windows.metadata
        assert len(windows) > 0
        assert set(meta["state"]) == {rec["state"]}
        assert set(meta["label"]) == {rec["group"]}
        assert windows.data.shape[1] == 160
        if rec["state"] == "auditory":  # 2 blocks of 3 tones, found by their gap
            assert len(windows) == 6
            assert list(meta["block"]) == [0, 0, 0, 1, 1, 1]
        elif rec["state"] == "somatosensory":  # 2 blocks of 3 first pulses (event 2)
            assert len(windows) == 6
            assert list(meta["block"]) == [0, 0, 0, 1, 1, 1]
        else:
            assert len(windows) >= 16.0 / 0.5 - 2
        assert np.all(np.isfinite(windows.data))


def test_prepare_finds_state_and_label(cohort, tmp_path):
    out, result = cohort
    summary = megfm.prepare(out, tmp_path / "store", window_seconds=0.5, progress=False)
    assert summary["recordings"] == len(result["recordings"]) == 6
    windows = megfm.read_store(tmp_path / "store")
    meta = windows.metadata
    pairs = {(s, st, lab) for s, st, lab in zip(meta["subject"], meta["state"], meta["label"],
                                               strict=True)}
    expected = {(r["subject"], r["state"], r["group"]) for r in result["recordings"]}
    # subject ids may be written with or without the "sub-" prefix
    pairs = {(s if s.startswith("sub-") else f"sub-{s}", st, lab) for s, st, lab in pairs}
    assert pairs == expected


def test_prepare_reads_bids_layout(tmp_path):
    pytest.importorskip("mne_bids")
    root = tmp_path / "bids"
    simulate_cohort(root, n_subjects=2, groups=["HC", "PPTH"], states=["rest", "auditory"],
                    bids=True, **SMALL)
    summary = megfm.prepare(root, tmp_path / "store", window_seconds=0.5, progress=False)
    assert summary["recordings"] == 4 and summary["skipped"] == []
    meta = megfm.read_store(tmp_path / "store").metadata
    found = {(str(s), str(st), str(lab))
             for s, st, lab in zip(meta["subject"], meta["state"], meta["label"], strict=True)}
    found = {(s if s.startswith("sub-") else f"sub-{s}", st, lab) for s, st, lab in found}
    assert found == {("sub-001", "rest", "HC"), ("sub-001", "auditory", "HC"),
                     ("sub-002", "rest", "PPTH"), ("sub-002", "auditory", "PPTH")}
