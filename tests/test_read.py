"""read_raw: every MEG format in the test data, BIDS, and each bad input with a clear error."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from megfm.data.read import find_bids_root, read_raw

REAL = ["vectorview", "triux", "vectorview90", "ctf275", "ctf151", "kit"]


def _raw(n_mag=4, n_grad=4, sfreq=200.0, seconds=2.0, seed=0):
    rng = np.random.default_rng(seed)
    names = [f"MAG{i}" for i in range(n_mag)] + [f"GRA{i}" for i in range(n_grad)] + ["STI 014"]
    types = ["mag"] * n_mag + ["grad"] * n_grad + ["stim"]
    info = mne.create_info(names, sfreq, types)
    for i, ch in enumerate(info["chs"][:-1]):
        theta = 2 * np.pi * i / (n_mag + n_grad)
        pos = 0.1 * np.array([np.cos(theta), np.sin(theta), 0.5])
        ch["loc"][:3] = pos
        ch["loc"][3:6] = [-np.sin(theta), np.cos(theta), 0.0]
        ch["loc"][6:9] = [0.0, 0.0, 1.0]
        ch["loc"][9:12] = pos / np.linalg.norm(pos)
    data = rng.normal(size=(len(names), int(sfreq * seconds))) * 1e-12
    data[-1] = 0
    return mne.io.RawArray(data, info, verbose=False)


@pytest.mark.parametrize("name", REAL)
def test_reads_every_real_system(real_file, name):
    raw = read_raw(real_file(name))
    assert raw.preload
    picks = mne.pick_types(raw.info, meg=True, ref_meg=False, exclude=[])
    assert len(picks) in (306, 273, 151, 160)
    assert np.isfinite(raw.get_data(picks=picks)).all()


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope_raw.fif"
    with pytest.raises(FileNotFoundError, match="nope_raw.fif does not exist"):
        read_raw(path)


def test_not_a_recording(tmp_path):
    path = tmp_path / "notes_raw.fif"
    path.write_text("this is not a FIF file")
    with pytest.raises(ValueError, match="notes_raw.fif is not a FIF file"):
        read_raw(path)


def test_unknown_format(tmp_path):
    path = tmp_path / "data.xyz"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="as an MEG recording"):
        read_raw(path)


def test_no_meg_channels(tmp_path):
    info = mne.create_info(["EEG1", "EEG2"], 100.0, "eeg")
    raw = mne.io.RawArray(np.zeros((2, 100)), info, verbose=False)
    path = tmp_path / "eeg_raw.fif"
    raw.save(path, verbose=False)
    with pytest.raises(ValueError, match=r"eeg_raw.fif has no MEG channels \(channel types present: eeg"):
        read_raw(path)


def test_reference_channels_do_not_count():
    info = mne.create_info(["REF1"], 100.0, "ref_meg")
    raw = mne.io.RawArray(np.zeros((1, 100)), info, verbose=False)
    with pytest.raises(ValueError, match="no MEG channels"):
        read_raw(raw)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_inf_samples_named(tmp_path, value):
    raw = _raw()
    raw._data[2, 10] = value
    path = tmp_path / "bad_raw.fif"
    raw.save(path, verbose=False)
    with pytest.raises(ValueError, match=r"bad_raw.fif: 1 MEG channel\(s\) contain NaN .*MAG2"):
        read_raw(path)
    # the blockwise check (no preload) finds it too
    with pytest.raises(ValueError, match="MAG2"):
        read_raw(path, preload=False)


def test_nan_in_stim_channel_is_ignored():
    raw = _raw()
    raw._data[-1, 3] = np.nan
    assert read_raw(raw) is raw


def test_type_error():
    with pytest.raises(TypeError, match="path_or_bidspath"):
        read_raw(42)


def test_fif_roundtrip(tmp_path):
    raw = _raw()
    path = tmp_path / "sub-01_task-rest_raw.fif"
    raw.save(path, verbose=False)
    out = read_raw(str(path))
    np.testing.assert_allclose(out.get_data(), raw.get_data(), rtol=1e-6, atol=1e-20)


def test_bids_path_and_file_inside_bids_root(tmp_path):
    mne_bids = pytest.importorskip("mne_bids")
    raw = _raw(seconds=3.0)
    raw.set_meas_date(None)
    fif = tmp_path / "in_raw.fif"
    raw.save(fif, verbose=False)
    raw = mne.io.read_raw_fif(fif, verbose=False)
    root = tmp_path / "bids"
    bp = mne_bids.BIDSPath(subject="01", task="rest", datatype="meg", root=root)
    mne_bids.write_raw_bids(raw, bp, overwrite=True, verbose=False, allow_preload=False)
    out = read_raw(bp)
    assert len(mne.pick_types(out.info, meg=True)) == 8
    assert find_bids_root(bp.fpath) == root
    out2 = read_raw(bp.fpath)
    np.testing.assert_allclose(out2.get_data(picks="meg"), out.get_data(picks="meg"))
    assert find_bids_root(tmp_path) is None


def _buffer_starts(path):
    """Byte offsets of the data-buffer tags (FIFF_DATA_BUFFER = 300) of a FIF file."""
    import struct

    data, pos, starts = path.read_bytes(), 0, []
    while pos < len(data):
        kind, _, size, nxt = struct.unpack(">iiii", data[pos:pos + 16])
        if kind == 300:
            starts.append(pos)
        if nxt == -1:
            break
        pos = pos + 16 + size if nxt == 0 else nxt
    return starts


@pytest.mark.parametrize("where", ["buffer boundary", "inside a buffer", "before the end"])
def test_truncated_fif_is_refused(tmp_path, where):
    path = tmp_path / "whole_raw.fif"
    _raw(seconds=6.0).save(path, buffer_size_sec=1.0, verbose=False)
    data = path.read_bytes()
    starts = _buffer_starts(path)
    assert len(starts) == 6
    cut = {"buffer boundary": starts[3], "inside a buffer": starts[3] + 100,
           "before the end": len(data) - 20}[where]
    bad = tmp_path / "cut_raw.fif"
    bad.write_bytes(data[:cut])
    with pytest.warns(RuntimeWarning, match="Invalid tag"):  # MNE reads it, warning only
        mne.io.read_raw_fif(bad, verbose="warning")
    with pytest.raises(ValueError, match=r"cut_raw.fif is truncated: .*copy the file again"):
        read_raw(bad)
    assert read_raw(path).n_times == 1200  # the whole file reads


def test_empty_and_gzipped_fif(tmp_path):
    empty = tmp_path / "empty_raw.fif"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty_raw.fif is empty \(0 bytes\)"):
        read_raw(empty)
    gz = tmp_path / "rec_raw.fif.gz"
    _raw(seconds=3.0).save(gz, verbose=False)
    assert read_raw(gz).n_times == 600
    import gzip

    whole = gzip.decompress(gz.read_bytes())
    gz.write_bytes(gzip.compress(whole[: len(whole) // 2]))
    with pytest.raises(ValueError, match="rec_raw.fif.gz is truncated"):
        read_raw(gz)


def test_real_fif_files_are_complete(test_data_dir):
    from megfm.data._fif import check_fif_complete

    files = sorted(test_data_dir.rglob("*.fif"))
    assert len(files) >= 5
    for path in files:  # raw, events and transform files alike: no false alarm
        check_fif_complete(path)
