"""HDF5 store: round trips, appends, geometry per recording, and damaged or mismatched input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from megfm.data.geometry import SensorGeometry
from megfm.data.store import StoreReader, open_store, read_store, reading, write_store
from megfm.data.windows import Windows


def _geometry(n_sensors: int, seed: int = 0, n_bad: int = 0) -> SensorGeometry:
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(n_sensors, 3))
    pos = 0.1 * pos / np.linalg.norm(pos, axis=1, keepdims=True)
    ori = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    bads = np.zeros(n_sensors, bool)
    bads[:n_bad] = True
    return SensorGeometry(names=[f"MEG{seed}{i:03d}" for i in range(n_sensors)], positions=pos,
                          orientations=ori, types=np.arange(n_sensors) % 4, bads=bads)


def _windows(n: int = 6, n_sensors: int = 5, n_times: int = 32, *, sfreq: float = 100.0,
             seed: int = 0, subject: str = "sub-01", state: str = "rest",
             scale: float = 100.0) -> Windows:
    rng = np.random.default_rng(seed)
    data = (scale * rng.standard_normal((n, n_sensors, n_times))).astype(np.float32)
    meta = {"subject": [subject] * n, "state": [state] * n, "label": ["HC"] * n,
            "onset": np.arange(n) * 0.5, "event": np.full(n, -1)}
    return Windows(data=data, sfreq=sfreq, geometries=[_geometry(n_sensors, seed, n_bad=1)],
                   metadata=meta, info={"window": {"seconds": n_times / sfreq}, "seed": seed})


def test_round_trip_float32_bit_exact(tmp_path):
    win = _windows()
    out = write_store(win, tmp_path / "store")
    assert out == tmp_path / "store"
    # store.lock: the (released) write lock
    assert sorted(p.name for p in out.iterdir()) == ["shard-00000.h5", "store.json", "store.lock"]
    back = read_store(out)
    np.testing.assert_array_equal(back.data, win.data)  # bit-exact
    assert back.sfreq == win.sfreq
    assert back.geometries == win.geometries
    for k in ("subject", "state", "label", "onset", "event", "recording"):
        np.testing.assert_array_equal(back.metadata[k], win.metadata[k])
    assert back.info == win.info
    manifest = json.loads((out / "store.json").read_text())
    assert manifest["n_windows"] == 6 and manifest["n_times"] == 32
    assert manifest["dtype"] == "float32" and manifest["info"]["seed"] == 0
    with h5py.File(out / "shard-00000.h5") as f:
        assert f["data"].chunks == (1, 5, 32)


@pytest.mark.parametrize("compression", [None, "gzip", "lzf"])
def test_round_trip_float16_within_precision(tmp_path, compression):
    win = _windows(scale=500.0)
    write_store(win, tmp_path / "s", dtype="float16", compression=compression)
    with h5py.File(tmp_path / "s" / "shard-00000.h5") as f:
        assert f["data"].dtype == np.float16
        assert f["data"].compression == compression
    back = read_store(tmp_path / "s")
    assert back.data.dtype == np.float32
    np.testing.assert_allclose(back.data, win.data, rtol=2**-11, atol=1e-3)
    assert not np.array_equal(back.data, win.data)  # really rounded to float16


def test_append_and_geometry_per_recording(tmp_path):
    a = _windows(4, n_sensors=5, seed=1, subject="s1")
    b = _windows(3, n_sensors=8, seed=2, subject="s2", state="auditory")
    path = tmp_path / "s"
    write_store(Windows.concatenate([a, b]), path)  # two layouts -> two shards
    c = _windows(2, n_sensors=5, seed=3, subject="s3")
    write_store(c, path)  # append
    names = sorted(p.name for p in path.iterdir())
    assert names == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5", "store.json",
                     "store.lock"]
    with open_store(path) as reader:
        assert len(reader) == 9 and reader.n_shards == 3
        np.testing.assert_array_equal(reader.offsets, [0, 4, 7, 9])
        assert [g.n_sensors for g in reader.geometries] == [5, 8, 5]
        assert reader.geometries[1] == b.geometry and reader.geometries[2] == c.geometry
        np.testing.assert_array_equal(reader.metadata["recording"], [0] * 4 + [1] * 3 + [2] * 2)
        assert reader.metadata["subject"].tolist() == ["s1"] * 4 + ["s2"] * 3 + ["s3"] * 2
        shard, row = reader.locate([0, 5, 8])
        np.testing.assert_array_equal(shard, [0, 1, 2])
        np.testing.assert_array_equal(row, [0, 1, 1])
        x, k = reader.read_window(5)
        assert k == 1
        np.testing.assert_array_equal(x, b.data[1])
        # any order, repeats, across shards; padding only up to the shards used
        sub = reader.read([8, 0, 8])
        assert sub.data.shape == (3, 5, 32)
        np.testing.assert_array_equal(sub.data[0], c.data[1])
        np.testing.assert_array_equal(sub.data[1], a.data[0])
        np.testing.assert_array_equal(sub.metadata["recording"], [1, 0, 1])
        assert sub.geometries == [a.geometry, c.geometry]
    full = read_store(path)
    assert full.data.shape == (9, 8, 32)
    np.testing.assert_array_equal(full.data[4:7], b.data)
    assert np.all(full.data[:4, 5:] == 0)  # padding rows are zero
    np.testing.assert_array_equal(read_store(path, indices=slice(7, None)).data, c.data)


def test_mismatched_sfreq_or_n_times_writes_nothing(tmp_path):
    path = write_store(_windows(), tmp_path / "s")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(ValueError, match=r"at 100 Hz, these are at 250 Hz.*Nothing was written"):
        write_store(_windows(sfreq=250.0), path)
    with pytest.raises(ValueError, match=r"of 32 samples, these have 64.*Nothing was written"):
        write_store(_windows(n_times=64), path)
    with pytest.raises(ValueError, match=r"pass dtype='float32'"):
        write_store(_windows(), path, dtype="float16")
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


def test_float16_overflow_and_tesla_units_refused(tmp_path):
    with pytest.raises(ValueError, match=r"exceed the float16 range.*dtype='float32'"):
        write_store(_windows(scale=1e6), tmp_path / "a", dtype="float16")
    with pytest.raises(ValueError, match=r"in T or T/m.*preprocess"):
        write_store(_windows(scale=1e-13), tmp_path / "b", dtype="float16")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    write_store(_windows(scale=1e6), tmp_path / "c")  # float32 is fine


def test_non_finite_refused(tmp_path):
    win = _windows()
    win.data[2, 1, 3] = np.nan
    with pytest.raises(ValueError, match="Window 2 contains NaN or Inf"):
        write_store(win, tmp_path / "s")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="Invalid value for 'dtype'"):
        write_store(_windows(), tmp_path / "s", dtype="float64")
    with pytest.raises(ValueError, match="Invalid value for 'compression'"):
        write_store(_windows(), tmp_path / "s", compression="zstd")
    with pytest.raises(TypeError, match="expects a megfm.Windows"):
        write_store(np.zeros((2, 3, 4)), tmp_path / "s")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="non-empty folder without store.json"):
        write_store(_windows(), tmp_path / "other")


def test_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder does not exist"):
        read_store(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a megfm store: it has no store.json"):
        read_store(tmp_path / "empty")
    (tmp_path / "f.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file, not a megfm store"):
        read_store(tmp_path / "f.h5")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "store.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_store(tmp_path / "bad")


def test_truncated_shard(tmp_path):
    path = write_store(_windows(20, n_sensors=16, n_times=64), tmp_path / "s")
    shard = path / "shard-00000.h5"
    raw = shard.read_bytes()
    shard.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(OSError, match=r"shard-00000.h5: it is truncated or corrupt.*re-create"):
        read_store(path)


def test_corrupt_shard_bytes(tmp_path):
    path = write_store(_windows(), tmp_path / "s")
    shard = path / "shard-00000.h5"
    shard.write_bytes(b"\x00" * shard.stat().st_size)  # header destroyed
    with pytest.raises(OSError, match="shard-00000.h5: it is truncated or corrupt"):
        StoreReader(path).read([0])


def test_manifest_lists_missing_shard(tmp_path):
    path = write_store(_windows(), tmp_path / "s")
    (path / "shard-00000.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"lists shard-00000.h5, which is missing"):
        open_store(path)


def test_interrupted_write_keeps_old_store(tmp_path, monkeypatch):
    import megfm.data.store as store_mod

    path = write_store(_windows(seed=1), tmp_path / "s")
    before = read_store(path)
    # Crash in the middle of writing the second shard of an append.
    real_write = store_mod._write_shard
    calls = {"n": 0}

    def crashing(final_path, data, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            with h5py.File(final_path.with_name(final_path.name + ".tmp"), "w") as f:
                f.create_dataset("data", data=data[:1])
            raise KeyboardInterrupt
        return real_write(final_path, data, *args, **kwargs)

    monkeypatch.setattr(store_mod, "_write_shard", crashing)
    two = Windows.concatenate([_windows(seed=2), _windows(seed=3, n_sensors=7)])
    with pytest.raises(KeyboardInterrupt):
        write_store(two, path)
    after = read_store(path)
    np.testing.assert_array_equal(after.data, before.data)
    assert len(after) == 6
    # Crash while replacing the manifest: still the old store.
    monkeypatch.setattr(store_mod, "_write_shard", real_write)

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_store(two, path)
    monkeypatch.undo()
    # Only the half shard of the hard crash is left, under its temporary name.
    assert [p.name for p in path.glob("*.tmp")] == ["shard-00002.h5.tmp"]
    np.testing.assert_array_equal(read_store(path).data, before.data)
    # The next append works, reusing the unlisted names and clearing the leftovers.
    write_store(two, path)
    assert len(open_store(path)) == 18
    assert not list(path.glob("*.tmp"))


def test_reader_pickles_without_handles(tmp_path):
    import pickle

    path = write_store(_windows(), tmp_path / "s")
    reader = open_store(path)
    reader.read_window(0)
    assert reader._handles
    clone = pickle.loads(pickle.dumps(reader))
    assert not clone._handles
    np.testing.assert_array_equal(clone.read_window(3)[0], reader.read_window(3)[0])
    reader.close()
    assert "6 windows in 1 shard" in repr(clone)
    clone.close()


def test_reading_opens_a_path_once_and_leaves_a_callers_reader_open(tmp_path):
    path = write_store(_windows(), tmp_path / "s")
    with reading(path) as reader:  # a path: opened here, closed after the block
        assert isinstance(reader, StoreReader)
        reader.read_window(0)
        assert reader._handles
    assert not reader._handles
    own = open_store(path)
    own.read_window(0)
    with reading(own) as same:  # an open reader: used as it is, left open
        assert same is own
    assert own._handles
    own.close()
    windows = _windows()
    with reading(windows) as passed:  # in-memory windows (or a path that is no store)
        assert passed is windows
    with reading(tmp_path / "nothing") as passed:
        assert passed == tmp_path / "nothing"


def test_index_errors(tmp_path):
    path = write_store(_windows(), tmp_path / "s")
    with pytest.raises(IndexError, match="out of range for a store of 6 windows"):
        read_store(path, indices=[6])
    with pytest.raises(ValueError, match=r"boolean 'indices' mask must have shape \(6,\)"):
        read_store(path, indices=np.ones(3, bool))
    np.testing.assert_array_equal(read_store(path, indices=[-1]).data,
                                  read_store(path, indices=[5]).data)


def test_unicode_and_extra_metadata_columns(tmp_path):
    win = _windows(3)
    win.metadata["subject"] = np.array(["sub-ü1", "sub-日本", ""])
    win.metadata["rt"] = np.array([0.25, 0.5, 1.0])  # an extra, non-contract column
    back = read_store(write_store(win, tmp_path / "s"))
    assert back.metadata["subject"].tolist() == ["sub-ü1", "sub-日本", ""]
    np.testing.assert_array_equal(back.metadata["rt"], [0.25, 0.5, 1.0])
    assert back.metadata["event"].dtype == np.int64


def test_real_vectorview_round_trip(real_file, tmp_path):
    import mne

    raw = mne.io.read_raw_fif(real_file("vectorview"), verbose="error")
    raw.pick("meg", exclude=[]).load_data(verbose="error")  # 1 s recording
    raw.info["bads"] = raw.ch_names[:2]
    geom = SensorGeometry.from_info(raw.info)
    scale = np.where(geom.types == 1, 1e13, 1e15)[:, None]  # T/m -> fT/cm, T -> fT
    data = (raw.get_data() * scale).astype(np.float32)
    n_times = 60
    n = data.shape[1] // n_times
    win = Windows(data=data[:, : n * n_times].reshape(-1, n, n_times).transpose(1, 0, 2),
                  sfreq=raw.info["sfreq"], geometries=[geom],
                  metadata={"subject": ["sample"] * n, "state": ["auditory"] * n})
    path = write_store(win, tmp_path / "s")
    back = read_store(path)
    np.testing.assert_array_equal(back.data, win.data)
    assert back.geometry == geom and back.geometry.names[0] == "MEG 0113"
    assert back.geometry.bads[:2].all()
    write_store(win, tmp_path / "h", dtype="float16", compression="gzip")
    half = read_store(tmp_path / "h")
    np.testing.assert_allclose(half.data, win.data, rtol=2**-11, atol=1e-4)


def test_shard_infos(tmp_path):
    path = write_store(_windows(seed=1), tmp_path / "s")
    write_store(_windows(seed=2), path)
    with open_store(path) as reader:
        assert [i["seed"] for i in reader.shard_infos] == [1, 2]
        assert reader.info["seed"] == 1


@pytest.fixture(scope="module")
def three_shards(tmp_path_factory):
    parts = [_windows(4, n_sensors=3, seed=1), _windows(2, n_sensors=6, seed=2),
             _windows(5, n_sensors=4, seed=3)]
    path = write_store(Windows.concatenate(parts), tmp_path_factory.mktemp("h") / "s")
    return path, Windows.concatenate(parts)


def test_read_any_indices_matches_memory(three_shards):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    path, win = three_shards
    reader = open_store(path)

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.integers(-11, 10), min_size=1, max_size=15))
    def check(idx):
        got = reader.read(idx)
        want = win[np.asarray(idx) % 11]
        s = got.data.shape[1]
        np.testing.assert_array_equal(got.data, want.data[:, :s])
        assert np.all(want.data[:, s:] == 0)
        for i, rec in enumerate(got.metadata["recording"]):
            assert got.geometries[rec] == win.geometries[want.metadata["recording"][i]]

    check()
    reader.close()


def _hold_lock(path):
    """A subprocess that takes the write lock of ``path`` and waits; returns it once held."""
    import subprocess
    import sys
    import time

    code = ("import sys, time\nfrom megfm.data._lock import store_lock\n"
            "with store_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    time.sleep(0.05)
    return proc


def test_second_writer_fails_at_once_naming_the_first(tmp_path):
    from megfm.data import StoreLockedError

    path = write_store(_windows(seed=1), tmp_path / "s")
    holder = _hold_lock(path)
    try:
        with pytest.raises(StoreLockedError, match=rf"is being written by pid {holder.pid}"):
            write_store(_windows(seed=2), path)
        # a reader needs no lock and sees the store as it was
        assert len(read_store(path)) == 6
        assert sorted(p.name for p in path.iterdir()) == ["shard-00000.h5", "store.json",
                                                          "store.lock"]
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    write_store(_windows(seed=2), path)
    assert len(read_store(path)) == 12


def test_prepare_refuses_a_store_being_written(tmp_path, capsys):
    import mne
    from cli_helpers import one_error_line
    from synthetic_sensors import place_on_circle

    from megfm.cli.main import main
    from megfm.data import StoreLockedError
    from megfm.data.prepare import prepare

    info = mne.create_info([f"MAG{i}" for i in range(4)], 200.0, "mag")
    place_on_circle(info, np.arange(4))
    rng = np.random.default_rng(0)
    mne.io.RawArray(1e-13 * rng.standard_normal((4, 800)), info, verbose=False).save(
        tmp_path / "sub-01_task-rest_raw.fif", verbose=False)
    out = tmp_path / "new store"
    holder = _hold_lock(out)  # another writer took the new store first
    try:
        with pytest.raises(StoreLockedError, match=f"being written by pid {holder.pid}"):
            prepare(tmp_path / "sub-01_task-rest_raw.fif", out, progress=False)
        assert main(["prepare", str(tmp_path / "sub-01_task-rest_raw.fif"), "--out", str(out),
                     "--no-progress"]) == 1
        err = one_error_line(capsys.readouterr().err)
        assert f"is being written by pid {holder.pid}" in err
        assert [p.name for p in out.iterdir()] == ["store.lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    assert prepare(tmp_path / "sub-01_task-rest_raw.fif", out, progress=False)["windows"] == 2


def _garbage_in_chunk(shard, row, n_bytes=4096):
    """Overwrite ``n_bytes`` of window ``row``'s data chunk with finite float32 garbage."""
    with h5py.File(shard, "r") as f:
        info = f["data"].id.get_chunk_info_by_coord((row, 0, 0))
    offset = info.byte_offset + 64
    n_bytes = min(n_bytes, info.size - 64) // 4 * 4
    with open(shard, "r+b") as fid:
        fid.seek(offset)
        fid.write(np.full(n_bytes // 4, 123.0, np.float32).tobytes())


def test_checksums_detect_finite_corruption_of_a_window(tmp_path):
    path = write_store(_windows(6, n_sensors=16, n_times=128), tmp_path / "s")
    write_store(_windows(6, n_sensors=16, n_times=128, seed=2), path)
    assert json.loads((path / "store.json").read_text())["checksum"] == "fletcher32"
    with h5py.File(path / "shard-00001.h5") as f:
        assert f["data"].fletcher32 and f["geometry/positions"].fletcher32
    _garbage_in_chunk(path / "shard-00001.h5", row=4)
    with StoreReader(path) as reader:
        reader.read_window(10 - 1)  # the other windows still read
        with pytest.raises(OSError, match=r"Cannot read window 10 \(row 4\) from shard "
                                          r".*shard-00001.h5: its checksum does not match"):
            reader.read_window(10)
        with pytest.raises(OSError, match=r"window 10 \(row 4\) .*checksum does not match"):
            reader.read_rows(1, np.array([0, 2, 4, 5]))
        with pytest.raises(OSError, match="checksum does not match"):
            reader.read()


def test_stores_without_checksums_still_read(tmp_path, monkeypatch):
    import megfm.data.store as store_mod

    monkeypatch.setattr(store_mod, "_CHECKSUM", None)  # a store as written before them
    win = _windows()
    path = write_store(win, tmp_path / "s")
    with h5py.File(path / "shard-00000.h5") as f:
        assert not f["data"].fletcher32
    monkeypatch.undo()
    np.testing.assert_array_equal(read_store(path).data, win.data)
    write_store(_windows(seed=4), path)  # appending adds checksummed shards
    assert len(read_store(path)) == 12


def test_leftovers_of_a_killed_first_write_do_not_block_the_next(tmp_path):
    path = tmp_path / "s"
    path.mkdir()
    # killed after renaming its first shard, before the first manifest
    (path / "shard-00000.h5").write_bytes(b"half")
    (path / "shard-00001.h5.tmp").write_bytes(b"")
    (path / "store.lock").write_text("123\n")
    win = _windows()
    write_store(win, path)  # shard-00000.h5 is overwritten by the complete one
    np.testing.assert_array_equal(read_store(path).data, win.data)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "shard-00000.h5x").write_bytes(b"")
    with pytest.raises(ValueError, match="non-empty folder without store.json"):
        write_store(_windows(), tmp_path / "t")


def test_a_reader_keeps_its_snapshot_while_the_store_is_appended(tmp_path):
    first = _windows(seed=1)
    path = write_store(first, tmp_path / "s")
    reader = open_store(path)
    np.testing.assert_array_equal(reader.read([0]).data, first.data[:1])
    write_store(_windows(seed=2), path)  # a write while the reader is open
    assert len(reader) == 6 and reader.n_shards == 1
    np.testing.assert_array_equal(reader.read().data, first.data)
    reader.close()
    assert len(open_store(path)) == 12  # a new reader sees the append


def test_read_rows_reads_runs_as_slices_in_any_order(tmp_path, monkeypatch):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    win = _windows(20, n_sensors=4, n_times=16)
    path = write_store(win, tmp_path / "s")
    half = write_store(win, tmp_path / "h", dtype="float16")
    calls = []
    read_direct = h5py.Dataset.read_direct

    def counting(self, dest, source_sel=None, dest_sel=None):
        calls.append(source_sel)
        return read_direct(self, dest, source_sel, dest_sel)

    monkeypatch.setattr(h5py.Dataset, "read_direct", counting)
    reader, reader16 = StoreReader(path), StoreReader(half)

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.integers(0, 19), min_size=0, max_size=25))
    def check(rows):
        calls.clear()
        got = reader.read_rows(0, np.asarray(rows, dtype=np.int64))
        assert got.dtype == np.float32 and got.shape == (len(rows), 4, 16)
        np.testing.assert_array_equal(got, win.data[rows])
        # one slice read per run of consecutive distinct rows
        uniq = np.unique(rows)
        assert len(calls) == (0 if uniq.size == 0 else 1 + np.count_nonzero(np.diff(uniq) > 1))
        native = reader16.read_rows(0, np.asarray(rows, dtype=np.int64), dtype=None)
        assert native.dtype == np.float16
        np.testing.assert_array_equal(native, win.data[rows].astype(np.float16))

    check()
    with pytest.raises(IndexError, match="out of range for shard 0 of 20"):
        reader.read_rows(0, [3, 20])
    reader.close()
    reader16.close()


def test_open_file_cache_is_lru_and_sized_from_the_shards(tmp_path):
    path = write_store(Windows.concatenate([_windows(2, seed=k, subject=f"s{k}")
                                            for k in range(3)]), tmp_path / "s")
    with StoreReader(path) as reader:
        assert reader.max_open == 3  # every shard when few
    with StoreReader(path, max_open=2) as reader:
        for k in (0, 1, 0, 2):
            reader.read_rows(k, [0, 1])
        assert list(reader._handles) == [0, 2]  # shard 1 was the least recently used
    with pytest.raises(ValueError, match="Invalid value for 'max_open'"):
        StoreReader(path, max_open=0)
