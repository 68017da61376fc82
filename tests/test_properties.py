"""Property-based tests (hypothesis): tokenizer, masking, store round trip, window arithmetic.

Random shapes, sensor counts, sampling rates, NaN positions and bad-channel sets; each
property is checked on a few dozen drawn cases so the module stays within seconds.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mne
import numpy as np
import pytest
import torch
from synthetic_sensors import place_on_circle

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from megfm.data.epochs import make_windows  # noqa: E402
from megfm.data.geometry import SensorGeometry  # noqa: E402
from megfm.data.store import read_store, write_store  # noqa: E402
from megfm.data.windows import Windows  # noqa: E402
from megfm.masking import make_mask  # noqa: E402
from megfm.tokenize import denormalize, patchify, robust_normalize, unpatchify  # noqa: E402

FAST = settings(max_examples=int(os.environ.get("MEGFM_PROPERTY_EXAMPLES", "30")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def sensor_masks(draw, min_valid: int = 1):
    """(B, S) bool masks with at least ``min_valid`` valid sensors per window."""
    b = draw(st.integers(1, 4))
    s = draw(st.integers(max(min_valid, 1), 12))
    rows = [draw(st.lists(st.booleans(), min_size=s, max_size=s)) for _ in range(b)]
    mask = np.array(rows, bool)
    for row in mask:  # top up to the minimum, at drawn positions
        missing = min_valid - row.sum()
        if missing > 0:
            row[draw(st.permutations(list(np.flatnonzero(~row))))[:missing]] = True
    return torch.from_numpy(mask)


# ---------------------------------------------------------------------------- tokenizer
@FAST
@given(b=st.integers(1, 3), s=st.integers(1, 9), p=st.integers(1, 8), length=st.integers(1, 12),
       seed=st.integers(0, 2**16))
def test_patchify_is_a_lossless_reshape(b, s, p, length, seed):
    x = torch.randn(b, s, p * length, generator=torch.Generator().manual_seed(seed))
    patches = patchify(x, length)
    assert patches.shape == (b, s, p, length)
    k = seed % p
    torch.testing.assert_close(patches[:, :, k], x[:, :, k * length:(k + 1) * length],
                               rtol=0, atol=0)
    assert torch.equal(unpatchify(patches), x)
    if p * length > length + 1 and p * length % (length + 1):
        with pytest.raises(ValueError, match="not a multiple of patch_samples"):
            patchify(x, length + 1)
    with pytest.raises(ValueError, match="shorter than one patch"):
        patchify(x, p * length + 1)


@FAST
@given(mask=sensor_masks(), t=st.integers(4, 64), scale=st.floats(1e-3, 1e4),
       offset=st.floats(-100, 100), method=st.sampled_from(["iqr", "mad"]),
       seed=st.integers(0, 2**16), nan_share=st.floats(0, 0.5))
def test_robust_normalize_inverts_is_affine_invariant_and_ignores_invalid_nan(
        mask, t, scale, offset, method, seed, nan_share):
    b, s = mask.shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, s, t, generator=gen, dtype=torch.float64).float() * 50 + 3
    # NaN at drawn positions of the invalid sensors only (bad channels, padding)
    nan = (torch.rand(b, s, t, generator=gen) < nan_share) & ~mask[..., None]
    x = torch.where(nan, torch.full_like(x, float("nan")), x)
    x_norm, stats = robust_normalize(x, mask, method=method)
    assert torch.isfinite(x_norm).all()  # NaN on invalid sensors never leaks
    assert torch.all(x_norm[~mask] == 0)
    back = denormalize(x_norm, stats)
    torch.testing.assert_close(back[mask], x[mask], rtol=1e-4, atol=1e-3)
    # a positive gain and an offset change nothing after normalisation (the offset is in
    # units of the signal's spread: a far larger one leaves too few float32 digits)
    y = x * scale + offset * 50 * scale
    y_norm, _ = robust_normalize(y, mask, method=method)
    torch.testing.assert_close(y_norm[mask], x_norm[mask], rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------------------- masking
@FAST
@given(mask=sensor_masks(min_valid=2), n_patches=st.integers(2, 10),
       ratio=st.floats(0.05, 0.95), mode=st.sampled_from(["random", "sensor", "time", "mixed"]),
       seed=st.integers(0, 2**16), time_block=st.integers(1, 4))
def test_masks_hide_only_valid_sensors_keep_both_and_are_seeded(mask, n_patches, ratio, mode,
                                                                 seed, time_block):
    def draw():
        return make_mask(mask, n_patches, mode=mode, ratio=ratio, time_block=time_block,
                         generator=torch.Generator().manual_seed(seed))

    hidden = draw()
    assert hidden.shape == (*mask.shape, n_patches) and hidden.dtype == torch.bool
    assert not hidden[~mask].any()  # bad sensors and padding are never hidden
    valid = mask[:, :, None].expand_as(hidden)
    n_hidden = hidden.sum((1, 2))
    n_visible = (valid & ~hidden).sum((1, 2))
    assert torch.all(n_hidden >= 1) and torch.all(n_visible >= 1)
    assert torch.equal(draw(), hidden)  # same generator state, same mask
    if mode == "random":
        n_valid = valid.sum((1, 2))
        want = torch.clamp(torch.round(ratio * n_valid.float()).long(), min=1)
        assert torch.equal(n_hidden, torch.minimum(want, n_valid - 1))
    elif mode == "sensor":  # whole sensors
        assert torch.equal(hidden.any(2), hidden.all(2))
    elif mode == "time":  # whole time patches, on every valid sensor
        cols = hidden.any(1)
        assert torch.equal(hidden, cols[:, None, :] & mask[:, :, None])


# ---------------------------------------------------------------------------- store
def _geometry(n_sensors: int, bads: np.ndarray, seed: int) -> SensorGeometry:
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(n_sensors, 3))
    pos = 0.1 * pos / np.linalg.norm(pos, axis=1, keepdims=True)
    return SensorGeometry(names=[f"S{seed}-{i}" for i in range(n_sensors)], positions=pos,
                          orientations=pos / 0.1, types=rng.integers(0, 4, n_sensors),
                          bads=bads)


@st.composite
def windows_sets(draw):
    """1-3 recordings of random sensor counts, bad sets and lengths, one sfreq and T."""
    sfreq = draw(st.sampled_from([100.0, 200.0, 256.0, 1000.0]))
    n_times = draw(st.integers(2, 40))
    parts = []
    for k in range(draw(st.integers(1, 3))):
        n_sensors = draw(st.integers(1, 9))
        bads = np.array(draw(st.lists(st.booleans(), min_size=n_sensors, max_size=n_sensors)))
        bads[draw(st.integers(0, n_sensors - 1))] = False  # one good sensor at least
        n = draw(st.integers(1, 5))
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        data = (rng.standard_normal((n, n_sensors, n_times)) * 10 ** rng.uniform(-2, 4))
        parts.append(Windows(
            data=data.astype(np.float32), sfreq=sfreq, geometries=[_geometry(n_sensors, bads, k)],
            metadata={"subject": [f"sub-{k}"] * n, "state": ["rest"] * n,
                      "onset": np.arange(n) * n_times / sfreq}))
    return parts


@FAST
@given(parts=windows_sets(), split=st.integers(0, 2))
def test_store_round_trip_is_bit_exact_in_order(parts, split):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        # written in one or two appends: the same store either way
        first = Windows.concatenate(parts[:split + 1])
        write_store(first, path)
        if parts[split + 1:]:
            write_store(Windows.concatenate(parts[split + 1:]), path)
        back = read_store(path)
    want = Windows.concatenate(parts)
    assert len(back) == len(want)
    np.testing.assert_array_equal(back.data, want.data)
    for name in ("subject", "onset", "recording"):
        np.testing.assert_array_equal(back.metadata[name], want.metadata[name])
    assert back.geometries == want.geometries


@FAST
@given(parts=windows_sets(), data=st.data())
def test_store_refuses_any_non_finite_sample_and_names_the_window(parts, data):
    win = Windows.concatenate(parts)
    i = data.draw(st.integers(0, win.n_windows - 1))
    s = data.draw(st.integers(0, win.data.shape[1] - 1))
    t = data.draw(st.integers(0, win.n_times - 1))
    win.data[i, s, t] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    first_bad = int(np.flatnonzero(~np.isfinite(win.data).all(axis=(1, 2)))[0])
    with tempfile.TemporaryDirectory() as tmp:
        with pytest.raises(ValueError, match=rf"Window {first_bad} contains NaN or Inf"):
            write_store(win, Path(tmp) / "store")
        assert not (Path(tmp) / "store").exists()  # nothing written


# ---------------------------------------------------------------------------- windows
@FAST
@given(sfreq=st.sampled_from([50.0, 100.0, 200.0, 250.0, 512.0]),
       seconds=st.floats(1.0, 12.0), window=st.floats(0.1, 2.0), overlap_share=st.floats(0, 0.9),
       spans=st.lists(st.tuples(st.floats(0, 12), st.floats(0.01, 2.0)), max_size=3),
       n_sensors=st.integers(2, 8), bads=st.lists(st.booleans(), min_size=8, max_size=8),
       seed=st.integers(0, 2**16))
def test_window_arithmetic(sfreq, seconds, window, overlap_share, spans, n_sensors, bads, seed):
    n_times = int(seconds * sfreq)
    n = int(round(window * sfreq))
    if n < 1 or n > n_times:
        return
    overlap = overlap_share * window
    info = mne.create_info([f"MAG{i}" for i in range(n_sensors)], sfreq, "mag")
    place_on_circle(info, np.linspace(0, 2 * np.pi, n_sensors, endpoint=False))
    info["bads"] = [f"MAG{i}" for i in range(n_sensors) if bads[i]]
    data = np.random.default_rng(seed).standard_normal((n_sensors, n_times)) * 1e-13
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.set_annotations(mne.Annotations([a for a, _ in spans], [d for _, d in spans],
                                        ["BAD_test"] * len(spans)), emit_warning=False)
    w = make_windows(raw, state="rest", window_seconds=window, overlap=overlap)
    step = max(int(round((window - overlap) * sfreq)), 1)
    starts = np.round(w.metadata["onset"] * sfreq).astype(int)
    assert w.n_times == n and np.all(starts >= 0) and np.all(starts + n <= n_times)
    assert np.all(np.diff(starts) >= step)  # in order, never closer than the step
    for a, d in spans:  # no window overlaps a BAD span
        lo, hi = int(np.floor(a * sfreq)), int(np.ceil((a + d) * sfreq))
        assert not np.any((starts < hi) & (starts + n > lo))
    # every window of a plain tiling is either kept or counted as lost to a BAD span
    assert w.n_windows + w.info["n_dropped_bad_span"] == len(range(0, n_times - n + 1, step))
    expect = (data * 1e15).astype(np.float64)
    for k, s0 in enumerate(starts[:3]):  # samples are the recording's, in fT
        np.testing.assert_allclose(w.data[k], expect[:, s0:s0 + n], rtol=1e-6)
    np.testing.assert_array_equal(w.geometry.bads, np.array(bads[:n_sensors]))
