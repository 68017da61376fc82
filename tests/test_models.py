"""Tests of megfm.models: shapes, masking, gradients, sensor-index independence, checkpoints."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch

import megfm
from megfm import MaskedSignalModel, ModelConfig, load_pretrained
from megfm.models import save_pretrained
from megfm.models.layers import Attention
from megfm.tokenize import denormalize, unpatchify

TINY = ModelConfig.preset("tiny")


def make_batch(b=2, s=10, n_times=200, *, seed=0, n_pad=(0, 3), types=None):
    """Seeded batch following the contract of docs/design.md (signals in fT)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_times) / 200.0
    freq = 5 + 10 * torch.rand(b, s, 1, generator=g)
    x = 100 * torch.sin(2 * torch.pi * freq * t) + 20 * torch.randn(b, s, n_times, generator=g)
    pos = torch.randn(b, s, 3, generator=g) * 0.08
    ori = torch.nn.functional.normalize(torch.randn(b, s, 3, generator=g), dim=-1)
    if types is None:
        types = torch.randint(0, 4, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.bool)
    for i, n in enumerate(n_pad[:b]):
        if n:
            mask[i, -n:] = False
            x[i, -n:] = 0.0
    return {"x": x, "pos": pos, "ori": ori, "sensor_type": types, "sensor_mask": mask}


def _args(batch):
    return batch["x"], batch["pos"], batch["ori"], batch["sensor_type"], batch["sensor_mask"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MaskedSignalModel(TINY).eval()


def test_forward_shapes_and_contract(model):
    batch = make_batch()
    out = model(*_args(batch), generator=torch.Generator().manual_seed(0), return_attention=True)
    b, s, p, length = 2, 10, 200 // TINY.patch_samples, TINY.patch_samples
    assert out["pred"].shape == out["target"].shape == (b, s, p, length)
    assert out["mask"].shape == (b, s, p) and out["mask"].dtype == torch.bool
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert not out["mask"][~batch["sensor_mask"]].any()
    # visible patches are copied from the target, hidden ones are predicted
    vis = ~out["mask"]
    assert torch.equal(out["pred"][vis], out["target"][vis])
    # back to physical units
    phys = denormalize(unpatchify(out["target"]), out["stats"])
    valid = batch["sensor_mask"]
    torch.testing.assert_close(phys[valid], batch["x"][valid], rtol=1e-4, atol=1e-3)
    att = out["attention"]
    assert att["spatial"].shape == (b, p, TINY.n_latents, s)
    assert len(att["temporal"]) == TINY.depth
    n = p * TINY.n_latents
    assert att["temporal"][0].shape == (b, TINY.n_heads, n, n)


def test_spatial_attention_over_visible_sensors_only(model):
    batch = make_batch()
    out = model(*_args(batch), mask_mode="random", generator=torch.Generator().manual_seed(1),
                return_attention=True)
    w = out["attention"]["spatial"]  # (B, P, K, S)
    visible = (batch["sensor_mask"][..., None] & ~out["mask"]).transpose(1, 2)  # (B, P, S)
    assert torch.all(w.masked_select(~visible[:, :, None, :].expand_as(w)) == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    # without masking: rows sum to 1 over valid sensors
    _, att = model.forward_features(*_args(batch), return_attention=True)
    torch.testing.assert_close(att["spatial"].sum(-1), torch.ones(att["spatial"].shape[:-1]))
    assert torch.all(att["spatial"][1, ..., -3:] == 0)


@pytest.mark.parametrize("mode", ["random", "sensor", "time", "mixed"])
@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_mask_ratio_through_forward(model, mode, ratio):
    batch = make_batch(b=4, s=16, n_times=400, n_pad=(0, 4, 0, 0))
    out = model(*_args(batch), mask_mode=mode, mask_ratio=ratio,
                generator=torch.Generator().manual_seed(2))
    valid_tokens = batch["sensor_mask"].sum(1) * out["mask"].shape[-1]
    frac = out["mask"].sum((1, 2)) / valid_tokens
    # time masking hides whole blocks of `time_block` patches: 1 block of slack
    assert torch.all((frac - ratio).abs() <= 0.1 + 1e-6), frac
    assert torch.isfinite(out["loss"])


def test_mask_is_deterministic_with_generator(model):
    batch = make_batch()
    a = model(*_args(batch), generator=torch.Generator().manual_seed(3))
    b = model(*_args(batch), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["loss"], b["loss"])


def test_hidden_patches_never_reach_the_predictions(model):
    """Gradient of every prediction w.r.t. the (normalised) hidden input patches is zero."""
    batch = make_batch()
    valid = batch["sensor_mask"]
    patches, _ = model.tokenize(batch["x"], valid)
    patches = patches.detach().requires_grad_(True)
    mask = model.random_masking(valid, patches.shape[2], mode="mixed",
                                generator=torch.Generator().manual_seed(4))
    visible = valid[..., None] & ~mask
    geo = model.geometry(batch["pos"], batch["ori"], batch["sensor_type"], valid)
    latents, _ = model.forward_encoder(patches, geo, visible)
    pred = model.forward_decoder(latents, geo, mask)
    (grad,) = torch.autograd.grad((pred * torch.randn_like(pred)).sum(), patches)
    g = grad.abs().sum(-1)  # (B, S, P)
    assert torch.all(g[mask] == 0)  # nothing flows from hidden patches
    assert torch.all(g[visible] > 0)  # every visible patch is used


def test_loss_comes_from_hidden_patches_only(model):
    batch = make_batch()
    valid = batch["sensor_mask"]
    target, _ = model.tokenize(batch["x"], valid)
    mask = model.random_masking(valid, target.shape[2], generator=torch.Generator().manual_seed(5))
    pred = torch.randn_like(target, requires_grad=True)
    loss = model.forward_loss(pred, target, mask)
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.all(grad[~mask] == 0) and torch.all(grad[mask].abs().sum(-1) > 0)
    expected = ((pred - target) ** 2).mean(-1)[mask].mean()
    torch.testing.assert_close(loss, expected)
    # changing predictions on visible patches leaves the loss unchanged
    moved = pred.detach() + 5.0 * (~mask)[..., None]
    torch.testing.assert_close(model.forward_loss(moved, target, mask), loss.detach())


def test_permuting_sensors_permutes_outputs(model):
    batch = make_batch(n_pad=(0, 2))
    mask = model.random_masking(batch["sensor_mask"], 5, generator=torch.Generator().manual_seed(6))
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(7))
    pb = {k: v[:, perm] for k, v in batch.items()}
    a = model(*_args(batch), mask=mask, return_attention=True)
    b = model(*_args(pb), mask=mask[:, perm], return_attention=True)
    torch.testing.assert_close(b["pred"], a["pred"][:, perm], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b["loss"], a["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        b["attention"]["spatial"], a["attention"]["spatial"][..., perm], rtol=1e-4, atol=1e-6
    )
    fa = model.forward_features(*_args(batch))
    fb = model.forward_features(*_args(pb))
    torch.testing.assert_close(fa, fb, rtol=1e-4, atol=1e-5)


def test_model_runs_on_another_array(model):
    """Built on one array, runs unchanged on others (sensor count, types, bad channels)."""
    vectorview_like = make_batch(b=2, s=12, types=torch.tensor([[0, 1, 1] * 4] * 2))
    opm_like = make_batch(b=3, s=7, n_times=400, n_pad=(0, 0, 2),
                          types=torch.full((3, 7), 3))
    ctf_like = make_batch(b=1, s=19, n_times=120, n_pad=(5,), types=torch.full((1, 19), 2))
    for batch in (vectorview_like, opm_like, ctf_like):
        out = model(*_args(batch), generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out["loss"])
        feats = model.forward_features(*_args(batch))
        assert feats.shape[2:] == (TINY.n_latents, TINY.dim)
        assert model.forward_head(feats).shape == (batch["x"].shape[0], TINY.dim)
    # the same recording with extra padded sensors gives the same features
    b = make_batch(b=1, s=8, n_pad=(0,))
    padded = {k: torch.cat([v, torch.zeros_like(v[:, :3])], 1) for k, v in b.items()}
    torch.testing.assert_close(
        model.forward_features(*_args(b)), model.forward_features(*_args(padded)),
        rtol=1e-4, atol=1e-5,
    )


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_presets_forward_backward(name):
    torch.manual_seed(0)
    config = ModelConfig.preset(name)
    m = MaskedSignalModel(config).train()
    batch = make_batch(b=2, s=6, n_times=160)
    mask = m.random_masking(batch["sensor_mask"], 4, mode="random",
                            generator=torch.Generator().manual_seed(0))
    mask[0, :, 0] = batch["sensor_mask"][0]  # one time patch fully hidden: empty latents used
    out = m(*_args(batch), mask=mask)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["pred"]).all()
    for pname, p in m.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_preset_sizes():
    n = {k: MaskedSignalModel(ModelConfig.preset(k)).num_parameters() for k in ("tiny", "small")}
    assert n["tiny"] < 1_000_000 < n["small"] < 5_000_000
    with torch.device("meta"):
        base = MaskedSignalModel(ModelConfig.preset("base"))
    assert 10_000_000 < base.num_parameters() < 100_000_000


def test_fused_and_manual_attention_agree():
    torch.manual_seed(0)
    attn = Attention(16, 4, kv_dim=8).eval()
    x, ctx = torch.randn(3, 5, 16), torch.randn(3, 7, 8)
    km = torch.rand(3, 7) > 0.4
    km[:, 0] = True
    fused, none = attn(x, ctx, key_mask=km)
    manual, w = attn(x, ctx, key_mask=km, need_weights=True)
    assert none is None and w.shape == (3, 4, 5, 7)
    torch.testing.assert_close(fused, manual, rtol=1e-5, atol=1e-6)
    assert torch.all(w.masked_select(~km[:, None, None, :].expand_as(w)) == 0)


def test_fused_and_manual_attention_agree_with_a_key_bias():
    torch.manual_seed(0)
    attn = Attention(16, 4, kv_dim=8).eval()
    x, ctx = torch.randn(3, 5, 16), torch.randn(3, 7, 8)
    km = torch.rand(3, 7) > 0.4
    km[:, 0] = True
    key_bias = (torch.randn(4), torch.randn(3, 7))
    for token_space in (False, True):
        attn.token_space = token_space
        fused, _ = attn(x, ctx, key_mask=km, key_bias=key_bias)
        manual, w = attn(x, ctx, key_mask=km, key_bias=key_bias, need_weights=True)
        torch.testing.assert_close(fused, manual, rtol=1e-5, atol=1e-6)
        assert torch.all(w.masked_select(~km[:, None, None, :].expand_as(w)) == 0)
        # a large bias on one key sends all the attention there
        big = torch.zeros(3, 7)
        big[:, 0] = 50.0
        _, w = attn(x, ctx, key_mask=km, key_bias=(torch.ones(4), big), need_weights=True)
        torch.testing.assert_close(w[..., 0], torch.ones_like(w[..., 0]))


@pytest.mark.parametrize("with_key_bias", [False, True])
def test_token_space_attention_matches_projected_keys_and_values(with_key_bias):
    # the same module computes the same output and gradients either way
    torch.manual_seed(0)
    attn = Attention(16, 4, kv_dim=6)
    torch.nn.init.normal_(attn.kv.bias)  # a key bias must cancel, a value bias pass through
    x, ctx = torch.randn(3, 5, 16), torch.randn(3, 9, 6)
    km = torch.rand(3, 9) > 0.4
    km[:, 0] = True
    key_bias = (torch.randn(4), torch.randn(3, 9)) if with_key_bias else None
    outs, grads = [], []
    for token_space, need_weights in [(False, False), (True, False), (True, True)]:
        attn.token_space = token_space
        attn.zero_grad()
        out, w = attn(x, ctx, key_mask=km, key_bias=key_bias, need_weights=need_weights)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append({n: q.grad.clone() for n, q in attn.named_parameters()})
        if need_weights:
            attn.token_space = False
            _, w_ref = attn(x, ctx, key_mask=km, key_bias=key_bias, need_weights=True)
            torch.testing.assert_close(w, w_ref, rtol=1e-5, atol=1e-6)
    for out, grad in zip(outs[1:], grads[1:], strict=True):
        torch.testing.assert_close(out, outs[0], rtol=1e-5, atol=1e-5)
        for name in grad:
            torch.testing.assert_close(grad[name], grads[0][name], rtol=1e-4, atol=1e-5)


def test_token_space_attention_matches_under_attention_dropout():
    # dropout leaves weights that no longer sum to 1; the value bias must follow their sum
    torch.manual_seed(0)
    attn = Attention(16, 4, kv_dim=6, dropout=0.5).train()
    torch.nn.init.normal_(attn.kv.bias, std=5.0)
    x, ctx = torch.randn(3, 5, 16), torch.randn(3, 9, 6)
    outs = []
    for token_space in (False, True):
        attn.token_space = token_space
        torch.manual_seed(1)  # the same dropout mask: same shape and order of weights
        outs.append(attn(x, ctx, need_weights=True)[0])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)


def test_leadfield_sources_raise_the_readout_rank():
    torch.manual_seed(0)
    m = MaskedSignalModel(ModelConfig.preset("tiny", leadfield_readout=True, leadfield_sources=3))
    k, length = m.config.n_latents, m.config.patch_samples
    assert m.leadfield[-1].out_features == 3 * k
    assert m.source_readout.out_features == 3 * length
    batch = make_batch()
    out = m(*_args(batch), generator=torch.Generator().manual_seed(0))
    assert out["pred"].shape == out["target"].shape and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert m.source_readout.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="leadfield_sources must be >= 1"):
        ModelConfig(leadfield_sources=0)


def test_key_bias_is_the_rank_one_dense_bias():
    # reference: softmax(q k^T / sqrt(hd) + coef[h] * values[b, k]) v, written out by hand
    torch.manual_seed(0)
    attn = Attention(16, 4, kv_dim=8).eval()
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 7, 8)
    coef, values = torch.randn(4), torch.randn(2, 7)
    q = attn.q(x).reshape(2, 5, 4, 4).transpose(1, 2)
    k, v = attn.kv(ctx).reshape(2, 7, 2, 4, 4).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-2, -1) / 2.0 + coef[None, :, None, None] * values[:, None, None]
    ref = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 16))
    for token_space in (False, True):
        attn.token_space = token_space
        out, _ = attn(x, ctx, key_bias=(coef, values))
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_model_spatial_attention_in_token_space_changes_nothing():
    torch.manual_seed(0)
    m = MaskedSignalModel(ModelConfig.preset("tiny", scale_feature=True, geometry_gain=True,
                                             scale_attention_bias=2.0))
    assert m.spatial.attn.token_space  # the cheap path is the default for the sensor tokens
    batch = make_batch()
    mask = m.random_masking(batch["sensor_mask"], 5, generator=torch.Generator().manual_seed(0))
    results = []
    for token_space in (True, False):
        m.spatial.attn.token_space = token_space
        m.zero_grad()
        out = m(*_args(batch), mask=mask)
        out["loss"].backward()
        results.append((out["pred"].detach(), m.patch_embed.weight.grad.clone(),
                        m.spatial.attn.q.weight.grad.clone()))
    for new, ref in zip(*results, strict=True):
        torch.testing.assert_close(new, ref, rtol=1e-4, atol=1e-5)


def test_scale_feature_lets_the_model_see_sensor_amplitudes():
    """Robust normalisation removes each sensor's amplitude; the scale feature restores it."""
    batch = make_batch(b=1, s=8, n_times=200, n_pad=(0,))
    louder = {**batch, "x": batch["x"].clone()}
    louder["x"][:, 2] *= 10.0
    for flag in (False, True):
        torch.manual_seed(0)
        m = MaskedSignalModel(TINY.replace(scale_feature=flag, scale_attention_bias=None)).eval()
        with torch.no_grad():
            a = m.forward_features(*_args(batch))
            b = m.forward_features(*_args(louder))
        if flag:
            assert (a - b).abs().max() > 1e-3
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_scale_attention_bias_favours_large_sensors():
    batch = make_batch(b=1, s=8, n_times=200, n_pad=(0,), types=torch.zeros(1, 8, dtype=torch.long))
    batch["x"][:, 5] *= 20.0
    torch.manual_seed(0)
    m = MaskedSignalModel(TINY.replace(scale_attention_bias=10.0)).eval()
    with torch.no_grad():
        _, att = m.forward_features(*_args(batch), return_attention=True)
    w = att["spatial"].mean((0, 1, 2))  # (S,)
    assert int(w.argmax()) == 5 and w[5] > 0.9
    assert m.scale_bias.shape == (TINY.n_heads,)
    # without the bias the map is far from that peaked
    m0 = MaskedSignalModel(TINY.replace(scale_attention_bias=None)).eval()
    with torch.no_grad():
        _, att0 = m0.forward_features(*_args(batch), return_attention=True)
    assert att0["spatial"].mean((0, 1, 2))[5] < 0.5


def test_scale_attention_bias_follows_each_patch_amplitude():
    # a burst on sensor 2 in the third time patch only: the attention of that patch goes to
    # sensor 2, the attention of the other patches does not
    batch = make_batch(b=1, s=8, n_times=200, n_pad=(0,), types=torch.zeros(1, 8, dtype=torch.long))
    length = TINY.patch_samples
    batch["x"][:, 2, 2 * length:3 * length] *= 30.0
    torch.manual_seed(0)
    m = MaskedSignalModel(TINY.replace(scale_attention_bias=10.0)).eval()
    with torch.no_grad():
        _, att = m.forward_features(*_args(batch), return_attention=True)
    w = att["spatial"][0].mean(1)  # (P, S)
    assert int(w[2].argmax()) == 2 and w[2, 2] > 0.9
    others = [p for p in range(w.shape[0]) if p != 2]
    assert float(w[others, 2].max()) < 0.5


def test_token_dim_narrows_the_per_sensor_path():
    c = ModelConfig.preset("small")
    assert c.token_width == c.token_dim < c.dim
    m = MaskedSignalModel(c)
    assert m.patch_embed.out_features == c.token_dim
    assert m.spatial.attn.kv.weight.shape == (2 * c.dim, c.token_dim)  # projected up to dim
    assert m.decoder_geometry.in_features == c.token_dim
    assert ModelConfig(dim=64, n_heads=4).token_width == 64  # 0 = dim
    # no token MLP at all is allowed
    m0 = MaskedSignalModel(TINY.replace(token_mlp_ratio=0.0))
    assert m0.token_mlp is None
    out = m0(*_args(make_batch()), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])


def test_new_options_are_validated():
    with pytest.raises(ValueError, match="token_dim must be >= 0"):
        ModelConfig(token_dim=-1)
    with pytest.raises(ValueError, match="qk_init must be one of"):
        ModelConfig(qk_init="orthogonal")
    with pytest.raises(ValueError, match="token_mlp_ratio must be >= 0"):
        ModelConfig(token_mlp_ratio=-1.0)


def test_fused_and_manual_paths_agree_in_the_model():
    torch.manual_seed(0)
    m = MaskedSignalModel(TINY).eval()
    batch = make_batch()
    mask = m.random_masking(batch["sensor_mask"], 5, generator=torch.Generator().manual_seed(0))
    fused = m(*_args(batch), mask=mask)
    with_weights = m(*_args(batch), mask=mask, return_attention=True)
    m.set_fused_attention(False)
    manual = m(*_args(batch), mask=mask)
    for out in (with_weights, manual):
        torch.testing.assert_close(out["pred"], fused["pred"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out["loss"], fused["loss"], rtol=1e-5, atol=1e-6)


def test_forward_intermediates(model):
    batch = make_batch()
    final, inter = model.forward_intermediates(*_args(batch), indices=1)
    assert len(inter) == 1 and inter[0].shape == final.shape
    torch.testing.assert_close(final, model.forward_features(*_args(batch)))
    torch.testing.assert_close(model.norm(inter[-1]), final)
    _, every = model.forward_intermediates(*_args(batch))
    assert len(every) == TINY.depth
    with pytest.raises(ValueError, match="block indices"):
        model.forward_intermediates(*_args(batch), indices=[5])
    model.reset_head(3)
    assert model.forward_head(final, pre_logits=False).shape == (2, 3)
    model.reset_head(0)


def field_batch(b=2, s=12, n_times=120, *, seed=0, n_sources=3):
    """Spatially smooth fields of a few sources, as MEG sensors see them."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_times) / 200.0
    pos = torch.nn.functional.normalize(torch.randn(b, s, 3, generator=g), dim=-1) * 0.1
    src_pos = torch.nn.functional.normalize(torch.randn(b, n_sources, 3, generator=g), dim=-1)
    freq = 4 + 20 * torch.rand(b, n_sources, 1, generator=g)
    src = torch.sin(2 * torch.pi * freq * t + 6.3 * torch.rand(b, n_sources, 1, generator=g))
    dist2 = ((pos[:, :, None] - 0.07 * src_pos[:, None]) ** 2).sum(-1)  # (B, S, n_sources)
    x = 100 * torch.exp(-dist2 / (2 * 0.06**2)) @ src + 5 * torch.randn(b, s, n_times, generator=g)
    return {"x": x, "pos": pos, "ori": torch.nn.functional.normalize(pos, dim=-1),
            "sensor_type": torch.zeros(b, s, dtype=torch.long),
            "sensor_mask": torch.ones(b, s, dtype=torch.bool)}


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    m = MaskedSignalModel(TINY).train()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    batch = field_batch()
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        out = m(*_args(batch), mask_mode="random", generator=gen)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


# --- bad input
def test_bad_input_is_refused(model):
    batch = make_batch()
    with pytest.raises(ValueError, match=r"20 samples .* patches of 40 samples .*--window"):
        model(*_args(make_batch(n_times=20)))
    with pytest.raises(ValueError, match=r"210 samples \(1.05 s\).*0.2 s.*--window"):
        model(*_args(make_batch(n_times=210)))
    with pytest.raises(ValueError, match="250 Hz.*200 Hz.*resample"):
        model(*_args(batch), sfreq=250.0)
    dead = dict(batch, sensor_mask=batch["sensor_mask"].clone())
    dead["sensor_mask"][1] = False
    with pytest.raises(ValueError, match=r"Window\(s\) \[1\].*no valid sensor"):
        model(*_args(dead))
    nan = dict(batch, x=batch["x"].clone())
    nan["x"][0, 2, 7] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf.*\[0\]"):
        model(*_args(nan))
    nan_pad = dict(batch, x=batch["x"].clone())
    nan_pad["x"][1, -1] = float("nan")  # NaN on a padded sensor is fine
    assert torch.isfinite(model(*_args(nan_pad))["loss"])
    with pytest.raises(ValueError, match="'pos' of shape"):
        model(batch["x"], batch["pos"][:, :4], *_args(batch)[2:])
    with pytest.raises(ValueError, match="'mask' of shape"):
        model(*_args(batch), mask=torch.ones(2, 10, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="hides no valid sensor-patch"):
        model(*_args(batch), mask=torch.zeros(2, 10, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model(batch["x"].numpy(), *_args(batch)[1:])
    with pytest.raises(TypeError, match="ModelConfig"):
        MaskedSignalModel({"dim": 8})


# --- config
def test_config_json_roundtrip_and_presets(tmp_path):
    cfg = ModelConfig.preset("small", sfreq=250.0, patch_samples=50)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    cfg.to_json(tmp_path / "c.json")
    assert ModelConfig.from_json(tmp_path / "c.json") == cfg
    assert cfg.patch_seconds == pytest.approx(0.2)
    with pytest.raises(ValueError, match="'name'.*tiny"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="Unknown ModelConfig field.*newer megfm"):
        ModelConfig.from_dict({**cfg.to_dict(), "flux": 1})
    with pytest.raises(ValueError, match="multiple of n_heads"):
        ModelConfig(dim=30, n_heads=4)
    with pytest.raises(ValueError, match="mask_mode"):
        ModelConfig(mask_mode="blocks")


# --- checkpoints
class _Boom:
    """Unpickling this touches a marker file: proof that a loader ran code from the file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _legacy_export(model, folder):
    """An export as megfm wrote it before safetensors: format 1, ``weights.pt``."""
    folder.mkdir()
    torch.save(model.state_dict(), folder / "weights.pt")
    meta = {"format": "megfm-checkpoint", "format_version": 1,
            "megfm_version": megfm.__version__, "model": model.config.to_dict()}
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


def _record_sha(folder):
    """Rewrite config.json with the sha256 of the current weights (a consistent but bad export)."""
    meta = json.loads((folder / "config.json").read_text())
    meta["weights"]["sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "config.json").write_text(json.dumps(meta))


def test_save_load_roundtrip(model, tmp_path):
    path = model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((path / "config.json").read_text())
    assert meta["megfm_version"] and meta["model"] == TINY.to_dict()
    assert meta["format_version"] == 2
    sha = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    assert meta["weights"] == {"file": "model.safetensors", "sha256": sha}
    # a plain safetensors file: any safetensors reader gets the same tensors, no megfm needed
    from safetensors.torch import load_file

    raw = load_file(path / "model.safetensors")
    assert raw.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        assert torch.equal(raw[name], value)
    loaded = load_pretrained(path, expected_config=TINY)
    assert not loaded.training
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    batch = make_batch()
    a = model(*_args(batch), generator=torch.Generator().manual_seed(0))
    b = loaded(*_args(batch), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a["pred"], b["pred"], rtol=0, atol=0)
    assert isinstance(MaskedSignalModel.from_pretrained(path), MaskedSignalModel)


def test_save_replaces_an_export_whole_and_keeps_other_folders(model, tmp_path):
    path = _legacy_export(model, tmp_path / "ckpt")
    other = MaskedSignalModel(TINY)
    other.save_pretrained(path)
    # the old weights.pt is gone with the old export, and no temporary sibling is left
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    replaced = load_pretrained(path).state_dict()
    assert all(torch.equal(replaced[k], v) for k, v in other.state_dict().items())
    assert not all(torch.equal(replaced[k], v) for k, v in model.state_dict().items())
    # a folder with unrelated files is refused, not wiped
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not part of a megfm export \(notes.txt\).*new or empty"):
        model.save_pretrained(tmp_path / "work")
    assert (tmp_path / "work" / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        model.save_pretrained(tmp_path / "file")
    with pytest.raises(TypeError, match="Expected a MaskedSignalModel"):
        save_pretrained(object(), tmp_path / "x")


def test_interrupted_save_keeps_the_previous_export(model, tmp_path, monkeypatch):
    path = model.save_pretrained(tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("megfm.models.checkpoint._sha256", fail)
    with pytest.raises(OSError, match="disk full"):
        MaskedSignalModel(TINY).save_pretrained(path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_checkpoint_refusals(model, tmp_path):
    with pytest.raises(ValueError, match="not a megfm checkpoint"):
        load_pretrained(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_pretrained(tmp_path / "junk")
    (tmp_path / "junk" / "config.json").write_text('{"dim": 8}')
    with pytest.raises(ValueError, match="not a megfm checkpoint config"):
        load_pretrained(tmp_path / "junk")

    path = model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"does not match the expected config.*dim"):
        load_pretrained(path, expected_config=ModelConfig.preset("small"))
    with pytest.raises(ValueError, match="sfreq: checkpoint 200.0 vs expected 250.0"):
        load_pretrained(path, expected_config=TINY.replace(sfreq=250.0))

    meta = json.loads((path / "config.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    (bad / "config.json").write_text(json.dumps({**meta, "model": {**meta["model"], "dim": 64}}))
    with pytest.raises(ValueError, match="do not fit the config"):
        load_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ValueError, match="format version 99.*Upgrade megfm"):
        load_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({**meta, "megfm_version": "7.0.0"}))
    with pytest.raises(ValueError, match="incompatible"):
        load_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "weights"}))
    with pytest.raises(ValueError, match="records no sha256.*re-export"):
        load_pretrained(bad)
    (bad / "config.json").write_text(json.dumps(meta))
    (bad / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="model.safetensors is missing"):
        load_pretrained(bad)


def test_changed_or_broken_weights_are_refused_in_one_line(model, tmp_path):
    path = model.save_pretrained(tmp_path / "ckpt")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    # another model's weights (a valid file) under this config: the sha256 catches it
    MaskedSignalModel(TINY).save_pretrained(tmp_path / "other")
    weights.write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(ValueError) as err:
        load_pretrained(path)
    assert str(err.value) == (
        f"weights file {weights} does not match the sha256 recorded in config.json: the file "
        "is corrupt or was replaced; re-export or re-download it."
    )
    # truncated, then garbage: refused even when config.json records their sha256
    for broken in (data[: len(data) // 2], b"\x00garbage" * 10, b""):
        weights.write_bytes(broken)
        with pytest.raises(ValueError, match="does not match the sha256"):
            load_pretrained(path)
        _record_sha(path)
        with pytest.raises(ValueError, match="not a valid safetensors file") as err:
            load_pretrained(path)
        assert "\n" not in str(err.value)


def test_a_pickle_in_a_checkpoint_is_never_unpickled(model, tmp_path):
    marker = tmp_path / "unpickled"
    torch.save({"x": _Boom(marker)}, tmp_path / "evil.pt")
    # sanity: unpickling this file for real does touch the marker
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()
    # as model.safetensors (with a matching sha256): not a safetensors file, never unpickled
    path = model.save_pretrained(tmp_path / "ckpt")
    (path / "model.safetensors").write_bytes((tmp_path / "evil.pt").read_bytes())
    _record_sha(path)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_pretrained(path)
    # as an old-style weights.pt: weights_only loading refuses it
    legacy = _legacy_export(model, tmp_path / "legacy")
    (legacy / "weights.pt").write_bytes((tmp_path / "evil.pt").read_bytes())
    with pytest.raises(ValueError, match="Cannot read the weights"):
        load_pretrained(legacy)
    assert not marker.exists()


def test_old_weights_pt_export_still_loads_with_a_warning(model, tmp_path, caplog):
    legacy = _legacy_export(model, tmp_path / "legacy")
    with caplog.at_level(logging.WARNING, logger="megfm.models.checkpoint"):
        loaded = load_pretrained(legacy, expected_config=TINY)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "old megfm export (weights.pt" in warned[0]
    assert "save_pretrained" in warned[0] and "\n" not in warned[0]
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    # re-saving as the warning says gives a safetensors export
    loaded.save_pretrained(legacy)
    assert sorted(p.name for p in legacy.iterdir()) == ["config.json", "model.safetensors"]
    (legacy / "config.json").write_text(json.dumps({
        "format": "megfm-checkpoint", "format_version": 1, "megfm_version": megfm.__version__,
        "model": TINY.to_dict()}))
    (legacy / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="weights.pt is missing"):
        load_pretrained(legacy)


def test_leadfield_readout_keeps_the_model_contract():
    """The lead-field read-out sees hidden sensors' geometry only, never their signals."""
    torch.manual_seed(0)
    lf = MaskedSignalModel(TINY.replace(leadfield_readout=True)).eval()
    assert lf.num_parameters() > MaskedSignalModel(
        TINY.replace(leadfield_readout=False)).num_parameters()
    test_hidden_patches_never_reach_the_predictions(lf)
    test_permuting_sensors_permutes_outputs(lf)
    test_model_runs_on_another_array(lf)
    # it contributes: without it the predictions differ
    batch = make_batch()
    mask = lf.random_masking(batch["sensor_mask"], 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = lf(*_args(batch), mask=mask)["pred"]
        lf.source_readout.weight.mul_(0.0)
        lf.source_readout.bias.mul_(0.0)
        without = lf(*_args(batch), mask=mask)["pred"]
    assert (full - without)[mask].abs().max() > 0
    torch.testing.assert_close(full[~mask], without[~mask])


def _encode_masked(model, batch, *, seed):
    """Tokenize, mask (seeded) and encode a batch: (target, mask, geometry, latents)."""
    valid = batch["sensor_mask"]
    target, _ = model.tokenize(batch["x"], valid)
    mask = model.random_masking(valid, target.shape[2],
                                generator=torch.Generator().manual_seed(seed))
    geo = model.geometry(batch["pos"], batch["ori"], batch["sensor_type"], valid)
    latents, _ = model.forward_encoder(target, geo, valid[..., None] & ~mask)
    return target, mask, geo, latents


@pytest.mark.parametrize("extra", [{}, {"leadfield_readout": True}])
def test_decoder_predicts_each_hidden_patch_from_its_own_time_patch(extra):
    """The decoder packs the hidden sensor-patches: a prediction depends on its sensor and on
    the latents of its time patch only, not on which other patches are hidden."""
    torch.manual_seed(0)
    model = MaskedSignalModel(ModelConfig.preset("tiny", **extra)).eval()
    batch = make_batch(b=3, s=10, n_pad=(0, 2, 0))
    target, mask, geo, latents = _encode_masked(model, batch, seed=4)
    more = mask.clone()
    more[0, :, 1] = batch["sensor_mask"][0]  # a whole hidden time patch in one window only
    more[2, :4] = True
    with torch.no_grad():
        x = model.forward_decoder(latents, geo, mask)
        y = model.forward_decoder(latents, geo, more)
        shifted = latents.clone()
        shifted[:, 2] += 1.0  # other latents for time patch 2
        z = model.forward_decoder(shifted, geo, mask)
    assert torch.all(x[~mask] == 0) and torch.all(y[~more] == 0)
    assert torch.all(x[mask].abs().sum(-1) > 0)
    torch.testing.assert_close(y[mask], x[mask], rtol=1e-5, atol=1e-6)
    at2 = mask.clone()
    at2[:, :, [0, 1, 3, 4]] = False
    torch.testing.assert_close(z[mask & ~at2], x[mask & ~at2], rtol=1e-5, atol=1e-6)
    assert (z[at2] - x[at2]).abs().amin(-1).min() > 0


def test_pack_rows_known_answer():
    from megfm.models.packing import _pack_rows, pack, to_grid

    rows = torch.tensor([0, 0, 2, 2, 2, 3])
    slots, width = _pack_rows(rows, 5)
    assert slots.tolist() == [0, 1, 0, 1, 2, 0] and width == 3
    assert _pack_rows(torch.zeros(0, dtype=torch.long), 4)[1] == 1  # nothing packed: width 1
    grid = to_grid(torch.arange(1.0, 7.0), rows, slots, 5, width)
    assert grid.tolist() == [[1, 2, 0], [0, 0, 0], [3, 4, 5], [6, 0, 0], [0, 0, 0]]
    # a (B=1, S=3, P=2) selection: grouped by time patch, then sensor
    selected = torch.tensor([[[True, False], [True, True], [False, True]]])
    packed = pack(selected)
    assert packed.shape == (1, 3, 2) and packed.n_rows == 2 and packed.width == 2
    assert packed.patch.tolist() == [0, 0, 1, 1] and packed.sensor.tolist() == [0, 1, 1, 2]
    assert packed.key_mask().tolist() == [[True, True], [True, True]]
    per_sensor = torch.arange(3.0)[None, :, None]  # (B, S, 1): the sensor's number
    assert packed.grid(packed.per_sensor(per_sensor))[..., 0].tolist() == [[0, 1], [1, 2]]


def test_config_with_removed_option_names_the_version_that_reads_it():
    old = ModelConfig.preset("tiny").to_dict()
    # an older checkpoint holds the removed option at its neutral value: the same model
    assert ModelConfig.from_dict({**old, "spectral_weight": 0.0}) == ModelConfig.preset("tiny")
    with pytest.raises(ValueError, match=r"spectral_weight=0\.5.*megfm 0\.1\.0"):
        ModelConfig.from_dict({**old, "spectral_weight": 0.5})
    # the options that lost their A/B: their old default is the model users get
    for name, value in (("norm_scope", "sensor"), ("spectral_tokens", False),
                        ("spatial_value_norm", True)):
        assert ModelConfig.from_dict({**old, name: value}) == ModelConfig.preset("tiny")
    with pytest.raises(ValueError, match=r"spectral_tokens=True.*megfm 0\.1\.0"):
        ModelConfig.from_dict({**old, "spectral_tokens": True})


def test_checkpoint_io_knows_nothing_of_the_model_class():
    """The layering: model.py uses checkpoint.py, never the reverse (no import cycle)."""
    import ast

    import megfm.models.checkpoint as ckpt

    tree = ast.parse(Path(ckpt.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert not {m for m in imported if m and (m == "model" or m.endswith(".model"))}


def _token_space_with_key_column(attn, x, ctx, key_mask, coef, values):
    """The former token-space path: the key bias as one more q/k coordinate (width W + 1)."""
    b, nq, _ = x.shape
    h, hd, width = attn.n_heads, attn.head_dim, ctx.shape[-1]
    q = attn.q(x).reshape(b, nq, h, hd).transpose(1, 2)
    w_k = attn.kv.weight[: h * hd].reshape(h, hd, width)
    w_v = attn.kv.weight[h * hd:].reshape(h, hd, width)
    q_ctx = torch.einsum("bhqd,hdw->bhqw", q, w_k)
    extra = (coef / attn.scale)[None, :, None, None].expand(b, h, nq, 1)
    rows = torch.cat([q_ctx, extra], -1).reshape(b, 1, h * nq, width + 1)
    keys = torch.cat([ctx[:, None], values[:, None, :, None]], -1)
    mixed = torch.nn.functional.scaled_dot_product_attention(
        rows, keys, ctx[:, None], attn_mask=key_mask[:, None, None, :], scale=attn.scale)
    out = torch.einsum("bhqw,hdw->bqhd", mixed.reshape(b, h, nq, width), w_v)
    out = out + attn.kv.bias[h * hd:].reshape(h, hd)
    return attn.proj(out.reshape(b, nq, h * hd))


def test_key_bias_as_float_mask_matches_the_former_key_column():
    torch.manual_seed(0)
    attn = Attention(16, 4, kv_dim=8, token_space=True).eval()
    torch.nn.init.normal_(attn.kv.bias)
    x, ctx = torch.randn(3, 5, 16), torch.randn(3, 9, 8)
    km = torch.rand(3, 9) > 0.4
    km[:, 0] = True
    coef = torch.randn(4, requires_grad=True)
    values = torch.randn(3, 9)
    ref = _token_space_with_key_column(attn, x, ctx, km, coef, values)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), coef)
    for need_weights in (False, True):  # fused SDPA call and the manual softmax
        out, _ = attn(x, ctx, key_mask=km, key_bias=(coef, values), need_weights=need_weights)
        (g,) = torch.autograd.grad(out.square().sum(), coef)
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)


def test_spatial_attention_query_key_width_is_the_token_width(monkeypatch):
    # the amplitude bias no longer adds a 33rd q/k column (W + 1 rules out the
    # memory-efficient SDPA kernels, which need widths that are multiples of 8)
    import megfm.models.layers as layers

    widths = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        widths.append((q.shape[-1], k.shape[-1], v.shape[-1]))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    for preset in ("tiny", "small"):
        cfg = ModelConfig.preset(preset)
        assert cfg.scale_attention_bias is not None  # the presets use the amplitude bias
        m = MaskedSignalModel(cfg).eval()
        widths.clear()
        m(*_args(make_batch()), generator=torch.Generator().manual_seed(0))
        token_width = cfg.token_dim or cfg.dim
        assert (token_width,) * 3 in widths  # the spatial cross-attention, in token space
        assert all(w % 8 == 0 for call in widths for w in call), widths


def test_checked_batches_skip_only_the_value_checks(model):
    batch = make_batch()
    batch["x"][0, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(*_args(batch))
    out = model(*_args(batch), checked=True)  # the caller vouched for the values: not read
    assert not torch.isfinite(out["loss"])
    short = make_batch(n_times=30)  # shapes and lengths are still checked
    with pytest.raises(ValueError, match="do not split"):
        model(*_args(short), checked=True)
