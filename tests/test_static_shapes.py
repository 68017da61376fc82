"""The static-shape path (torch.compile / CUDA graphs): same model, shapes fixed by the batch.

Compiled = eager, without recompiling as the masks change: tests/test_hardware.py.
"""

from __future__ import annotations

import pytest
import torch
from test_models import _args, make_batch

from megfm import MaskedSignalModel, ModelConfig
from megfm.masking import make_mask
from megfm.models.packing import pack, pack_all


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("mode", ["random", "sensor", "time"])
def test_static_path_gives_the_packed_losses_and_gradients(preset, mode):
    torch.manual_seed(0)
    model = MaskedSignalModel(ModelConfig.preset(preset)).train()
    batch = make_batch(b=3, s=12, n_pad=(0, 3, 1))  # padding sensors as well
    mask = model.random_masking(batch["sensor_mask"], 5, mode=mode,
                                generator=torch.Generator().manual_seed(1))
    results = {}
    for static in (False, True):
        model.set_static_shapes(static)
        model.zero_grad()
        out = model(*_args(batch), mask=mask, return_attention=False)
        out["loss"].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[static] = out, grads
    (packed, g_packed), (static, g_static) = results[False], results[True]
    torch.testing.assert_close(static["loss"], packed["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(static["pred"], packed["pred"], rtol=1e-4, atol=1e-5)
    assert g_static.keys() == g_packed.keys()
    for name in g_packed:
        torch.testing.assert_close(g_static[name], g_packed[name], rtol=1e-4, atol=1e-6,
                                   msg=name)


@pytest.mark.parametrize("mode", ["mixed", "time"])  # "time": fully hidden time patches
def test_static_path_attention_maps_and_features_match(mode):
    torch.manual_seed(0)
    model = MaskedSignalModel(ModelConfig.preset("tiny")).eval()
    batch = make_batch(b=2, s=10, n_pad=(0, 2))
    mask = model.random_masking(batch["sensor_mask"], 5, mode=mode,
                                generator=torch.Generator().manual_seed(2))
    if mode == "time":
        assert mask.all(1).any()  # some time patch has no visible sensor
    packed = model(*_args(batch), mask=mask, return_attention=True)
    feats = model.forward_features(*_args(batch))
    model.set_static_shapes(True)
    static = model(*_args(batch), mask=mask, return_attention=True)
    torch.testing.assert_close(static["attention"]["spatial"], packed["attention"]["spatial"],
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.forward_features(*_args(batch)), feats, rtol=1e-4,
                               atol=1e-5)


def test_pack_all_keeps_every_sensor_patch_in_grid_order():
    selected = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(0)) < 0.5
    dense, packed = pack_all(selected), pack(selected)
    assert dense.width == 5 and len(dense.rows) == 2 * 5 * 3
    # a per-sensor-patch value: 100 * window + 10 * patch + sensor
    b, s, p = torch.meshgrid(torch.arange(2), torch.arange(5), torch.arange(3), indexing="ij")
    code = (100 * b + 10 * p + s).float()  # (B, S, P)
    dense_grid = dense.grid(code[dense.window, dense.sensor, dense.patch])
    packed_grid = packed.grid(code[packed.window, packed.sensor, packed.patch])
    # each time patch's selected sensor-patches, in sensor order, in both layouts
    for row in range(6):
        want = packed_grid[row][packed.key_mask()[row]]
        assert torch.equal(dense_grid[row][dense.key_mask()[row]], want)
    assert torch.equal(dense_grid, code.permute(0, 2, 1).reshape(6, 5))  # grid order


@pytest.mark.parametrize("mode", ["random", "sensor", "time", "mixed"])
def test_static_masks_follow_the_rules(mode):
    valid = torch.ones(16, 20, dtype=torch.bool)
    valid[3, 15:] = False
    gen = torch.Generator().manual_seed(0)
    mask = make_mask(valid, 6, mode=mode, ratio=0.5, generator=gen, static=True)
    assert mask.shape == (16, 20, 6)
    assert not (mask & ~valid[..., None]).any()  # only valid sensors are hidden
    hidden = mask.flatten(1).sum(1)
    assert (hidden >= 1).all() and (hidden < valid.sum(1) * 6).all()
    again = make_mask(valid, 6, mode=mode, ratio=0.5, generator=gen.manual_seed(0), static=True)
    assert torch.equal(mask, again)


def test_static_mixed_masks_draw_each_mode():
    valid = torch.ones(64, 20, dtype=torch.bool)
    mask = make_mask(valid, 6, mode="mixed", generator=torch.Generator().manual_seed(0),
                     static=True)
    whole_sensor = (mask.all(2) | ~mask.any(2)).all(1)  # "sensor": a sensor hidden throughout
    whole_time = (mask.all(1) | ~mask.any(1)).all(1)  # "time": a patch hidden on every sensor
    assert whole_sensor.any() and whole_time.any() and (~whole_sensor & ~whole_time).any()


def test_static_masks_refuse_shapes_they_cannot_split():
    valid = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="at least 2 time patches"):
        make_mask(valid, 1, mode="time", static=True)
    with pytest.raises(ValueError, match="Sensor masking needs at least 2 valid sensors"):
        make_mask(torch.ones(2, 1, dtype=torch.bool), 4, mode="sensor", static=True)
    with pytest.raises(ValueError, match="Random masking needs at least 2"):
        make_mask(torch.ones(2, 1, dtype=torch.bool), 1, mode="random", static=True)
