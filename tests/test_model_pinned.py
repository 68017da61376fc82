"""A seeded tiny model's outputs on a fixed batch, pinned to values recorded before the
encoder was split into patch embedding + packing (issue 21 #9): refactors of the model code
must leave the numbers unchanged (float tolerance)."""

from __future__ import annotations

import pytest
import torch

from megfm import MaskedSignalModel, ModelConfig

#: Recorded with megfm at eee397a (before the refactor), torch 2.13 CPU.
PINNED = {
    "tiny": dict(loss=0.5643094182014465, pred_abs=1323.148748460575,
                 feat_abs=1162.0779655682854, spatial=158.41876857541502,
                 feat_first=[-1.3517251014709473, 1.0476124286651611, -1.0647238492965698,
                             1.2023555040359497]),
    "plain": dict(loss=0.5682939887046814, pred_abs=1345.683343335746,
                  feat_abs=1201.9242125347373, spatial=149.85723588615656,
                  feat_first=[-0.9601800441741943, 1.0021381378173828, -1.0294891595840454,
                              1.008081078529358]),
    "all": dict(loss=5.883580207824707, pred_abs=1325.4009628093318,
                feat_abs=1171.7901200910565, spatial=145.15974033623934,
                feat_first=[-0.8685228228569031, 0.7903769612312317, -1.2940254211425781,
                            0.9798721075057983]),
    "no_mlp": dict(loss=0.5624922513961792, pred_abs=1327.008833463653,
                   feat_abs=1156.8208828568459, spatial=140.48611960560083,
                   feat_first=[-1.3432620763778687, 1.1787283420562744, -1.256891131401062,
                               0.8450723886489868]),
}

#: Every optional path of the encoder and decoder is on in at least one variant.
VARIANTS = {
    "tiny": {},
    "plain": dict(scale_feature=False, geometry_gain=False, scale_attention_bias=None,
                  leadfield_readout=False, qk_init="trunc_normal"),
    "all": dict(spectral_tokens=True, token_dim=16, token_mlp_ratio=2.0, band_power_weight=0.5,
                norm_scope="type"),
    "no_mlp": dict(token_mlp_ratio=0.0, spatial_value_norm=False),
}


def _batch():
    g = torch.Generator().manual_seed(0)
    b, s, n = 2, 10, 200
    t = torch.arange(n) / 200.0
    freq = 5 + 10 * torch.rand(b, s, 1, generator=g)
    x = 100 * torch.sin(2 * torch.pi * freq * t) + 20 * torch.randn(b, s, n, generator=g)
    pos = torch.randn(b, s, 3, generator=g) * 0.08
    ori = torch.nn.functional.normalize(torch.randn(b, s, 3, generator=g), dim=-1)
    types = torch.randint(0, 4, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[1, -3:] = False  # padding in the second window
    x[1, -3:] = 0
    return x, pos, ori, types, mask


@pytest.mark.parametrize("name", list(VARIANTS))
def test_seeded_model_outputs_are_pinned(name):
    torch.manual_seed(0)
    model = MaskedSignalModel(ModelConfig.preset("tiny", **VARIANTS[name])).eval()
    args = _batch()
    with torch.no_grad():
        out = model(*args, generator=torch.Generator().manual_seed(1), mask_mode="mixed")
        feats, attention = model.forward_features(*args, return_attention=True)
    ref = PINNED[name]
    close = dict(rel=1e-5, abs=1e-6)
    assert out["loss"].item() == pytest.approx(ref["loss"], **close)
    assert out["pred"].double().abs().sum().item() == pytest.approx(ref["pred_abs"], **close)
    assert feats.double().abs().sum().item() == pytest.approx(ref["feat_abs"], **close)
    assert feats[0, 0, 0, :4].tolist() == pytest.approx(ref["feat_first"], rel=1e-4, abs=1e-5)
    weighted = (attention["spatial"].double() * torch.arange(10)).sum().item()
    assert weighted == pytest.approx(ref["spatial"], **close)
