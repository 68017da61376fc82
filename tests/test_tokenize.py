"""Tests of megfm.tokenize: patching, robust normalisation, geometry embedding."""

from __future__ import annotations

import pytest
import torch

from megfm.tokenize import (
    GeometryEmbedding,
    denormalize,
    patchify,
    relative_log_scale,
    robust_normalize,
    unpatchify,
)


def test_patchify_shape_and_order():
    x = torch.arange(2 * 3 * 12, dtype=torch.float32).reshape(2, 3, 12)
    p = patchify(x, 4)
    assert p.shape == (2, 3, 3, 4)
    assert torch.equal(p[1, 2, 1], x[1, 2, 4:8])
    assert torch.equal(unpatchify(p), x)


def test_patchify_refuses_short_and_ragged_windows():
    with pytest.raises(ValueError, match="shorter than one patch"):
        patchify(torch.zeros(1, 2, 30), 40)
    with pytest.raises(ValueError, match="not a multiple of patch_samples.*crop"):
        patchify(torch.zeros(1, 2, 90), 40)
    with pytest.raises(ValueError, match=r"\(B, S, T\)"):
        patchify(torch.zeros(2, 90), 10)


def test_robust_normalize_known_values_and_roundtrip():
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([1.0, 100.0, 0.01])
    x = torch.randn(4, 3, 4000, generator=gen) * scales[:, None] + 7.0
    xn, stats = robust_normalize(x)
    assert stats.center.shape == (4, 3, 1)
    # Gaussian: robust scale estimates the standard deviation, median the mean
    torch.testing.assert_close(stats.scale[..., 0], scales.expand(4, 3), rtol=0.08, atol=0)
    assert torch.all((stats.center[..., 0] - 7.0).abs() < 0.1 * scales)
    assert abs(float(xn.std()) - 1.0) < 0.08
    torch.testing.assert_close(denormalize(xn, stats), x, rtol=1e-4, atol=1e-4)
    # (B, S, P, L) patches too
    torch.testing.assert_close(
        unpatchify(denormalize(patchify(xn, 40), stats)), x, rtol=1e-4, atol=1e-4
    )


def test_robust_normalize_mad_and_outliers():
    x = torch.randn(1, 2, 1000, generator=torch.Generator().manual_seed(1))
    x_spiky = x.clone()
    x_spiky[..., :5] = 1e6  # a few huge artefact samples barely move robust statistics
    for method in ("iqr", "mad"):
        _, s1 = robust_normalize(x, method=method)
        _, s2 = robust_normalize(x_spiky, method=method)
        torch.testing.assert_close(s1.scale, s2.scale, rtol=0.05, atol=0)
    with pytest.raises(ValueError, match="'method'"):
        robust_normalize(x, method="std")


def test_robust_normalize_invalid_sensors_are_zero():
    x = torch.randn(2, 3, 100) * 10
    x[0, 2] = float("nan")  # padding may hold anything
    valid = torch.tensor([[True, True, False], [True, True, True]])
    xn, stats = robust_normalize(x, valid)
    assert torch.all(xn[0, 2] == 0)
    assert stats.scale[0, 2, 0] == 1 and stats.center[0, 2, 0] == 0
    assert torch.isfinite(xn).all()


def test_flat_sensor_does_not_divide_by_zero():
    x = torch.zeros(1, 1, 50)
    xn, stats = robust_normalize(x)
    assert torch.isfinite(xn).all() and stats.scale.item() > 0


def _geometry(b=2, s=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(b, s, 3, generator=g) * 0.1
    ori = torch.nn.functional.normalize(torch.randn(b, s, 3, generator=g), dim=-1)
    types = torch.randint(0, 4, (b, s), generator=g)
    return pos, ori, types


def test_geometry_embedding_shape_masking_and_equivariance():
    torch.manual_seed(0)
    emb = GeometryEmbedding(16)
    pos, ori, types = _geometry()
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[1, 3:] = False
    out = emb(pos, ori, types, valid)
    assert out.shape == (2, 5, 16)
    assert torch.all(out[1, 3:] == 0) and torch.all(out[0].abs().sum(-1) > 0)
    perm = torch.tensor([4, 0, 3, 1, 2])
    out_p = emb(pos[:, perm], ori[:, perm], types[:, perm], valid[:, perm])
    torch.testing.assert_close(out_p, out[:, perm])


def test_geometry_embedding_distinguishes_type_and_orientation():
    torch.manual_seed(0)
    emb = GeometryEmbedding(16)
    pos = torch.zeros(1, 2, 3)
    ori = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])  # co-located planar pair
    out = emb(pos, ori, torch.tensor([[1, 1]]))
    assert not torch.allclose(out[0, 0], out[0, 1])
    out_t = emb(pos[:, :1], ori[:, :1], torch.tensor([[0]]))
    assert not torch.allclose(out_t[0, 0], out[0, 0])


def test_geometry_embedding_refuses_bad_types_and_shapes():
    emb = GeometryEmbedding(8)
    pos, ori, types = _geometry()
    with pytest.raises(ValueError, match="sensor_type codes"):
        emb(pos, ori, types + 4)
    with pytest.raises(ValueError, match=r"\(B, S, 3\)"):
        emb(pos[..., :2], ori, types)
    # padding codes are ignored when masked out
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[0, 0] = False
    types = types.clone()
    types[0, 0] = -1
    assert torch.isfinite(emb(pos, ori, types, valid)).all()


def test_relative_log_scale_known_values():
    # two types with different units: each sensor is compared with the median of its type
    scale = torch.tensor([[1.0, 2.0, 4.0, 100.0, 100.0, 1e-30, 7.0]])
    types = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    valid = torch.tensor([[True, True, True, True, True, True, False]])
    r = relative_log_scale(scale[..., None], types, valid, clip=5.0)
    assert r.shape == (1, 7)
    log2 = torch.log(torch.tensor(2.0))
    torch.testing.assert_close(r[0, :3], torch.stack([-log2, 0 * log2, log2]))
    # type 1: valid log scales (log 100, log 100, log 1e-30), median log 100
    torch.testing.assert_close(r[0, 3:5], torch.zeros(2))
    assert r[0, 5] == -5.0  # flat sensor clipped
    assert r[0, 6] == 0.0  # invalid sensor: 0, and left out of the median
    # invariant to a global change of units of one type
    r2 = relative_log_scale((scale * torch.tensor([1, 1, 1, 1e3, 1e3, 1e3, 1.0]))[..., None],
                            types, valid)
    torch.testing.assert_close(r2[0, :5], r[0, :5])




def test_fast_cpu_sort_equals_torch_sort():
    from megfm.tokenize import _sort_last

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 200, generator=g)
    x[0, 0, :50] = 0.0  # ties
    x[1, 2, 3] = float("inf")
    x[2, 1, 5] = float("-inf")
    view = x.transpose(0, 1)  # not contiguous
    assert torch.equal(_sort_last(view), view.sort(dim=-1).values)
    # with a gradient to carry (attribution on the input), torch.sort is kept
    leaf = x.clone().requires_grad_()
    _sort_last(leaf)[..., 100].sum().backward()
    assert leaf.grad.abs().sum() == 3 * 7
