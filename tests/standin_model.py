"""Test helpers for the training/embedding tests: tiny seeded data and, until the real
``megfm.models`` is available, a small stand-in model that follows the model contract of
``docs/design.md`` (forward dict, forward_features, forward_head, save_pretrained)."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn


def tiny_windows(n_windows: int = 24, n_sensors: int = 6, n_times: int = 100, *,
                 sfreq: float = 100.0, n_subjects: int = 6, states=("rest", "auditory"),
                 seed: int = 0):
    """Seeded Windows: alpha-like sinusoids + noise on a small sensor layout (fT)."""
    from megfm.data import SensorGeometry, Windows

    rng = np.random.default_rng(seed)
    theta = np.linspace(0, 2 * np.pi, n_sensors, endpoint=False)
    pos = np.c_[0.1 * np.cos(theta), 0.1 * np.sin(theta), np.full(n_sensors, 0.05)]
    ori = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    geom = SensorGeometry(names=[f"MEG{i:03d}" for i in range(n_sensors)], positions=pos,
                          orientations=ori, types=np.zeros(n_sensors, int))
    t = np.arange(n_times) / sfreq
    phase = rng.uniform(0, 2 * np.pi, (n_windows, 1, 1))
    gain = np.cos(theta)[None, :, None] + 1.5
    data = 100 * gain * np.sin(2 * np.pi * 10 * t + phase) + 10 * rng.standard_normal(
        (n_windows, n_sensors, n_times))
    subjects = np.array([f"{i % n_subjects:02d}" for i in range(n_windows)])
    labels = np.array(["HC" if int(s) % 2 == 0 else "migraine" for s in subjects])
    state = np.array([states[(i // n_subjects) % len(states)] for i in range(n_windows)])
    return Windows(data=data.astype(np.float32), sfreq=sfreq, geometries=[geom],
                   metadata={"subject": subjects, "label": labels, "state": state})


def windows_batch(windows, idx=None) -> dict:
    """Batch dict (docs/design.md) of some windows of a single-recording Windows."""
    idx = np.arange(windows.n_windows) if idx is None else np.asarray(idx)
    g = windows.geometry
    b = len(idx)
    return {
        "x": torch.from_numpy(windows.data[idx]),
        "pos": torch.from_numpy(np.broadcast_to(g.positions, (b, *g.positions.shape)).copy()),
        "ori": torch.from_numpy(np.broadcast_to(g.orientations, (b, *g.positions.shape)).copy()),
        "sensor_type": torch.from_numpy(np.broadcast_to(g.types, (b, g.n_sensors)).copy()),
        "sensor_mask": torch.from_numpy(np.broadcast_to(~g.bads, (b, g.n_sensors)).copy()),
        "index": torch.as_tensor(idx, dtype=torch.int64),
    }


# ---------------------------------------------------------------------- stand-in model
@dataclasses.dataclass
class ModelConfig:
    patch_samples: int = 10
    dim: int = 16
    mask_ratio: float = 0.5
    mask_mode: str = "random"
    sfreq: float = 100.0
    dropout: float = 0.0

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        return {"tiny": cls(), "small": cls(dim=32), "base": cls(dim=64)}[name]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**d)


class MaskedSignalModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d, L = config.dim, config.patch_samples
        self.patch = nn.Linear(L, d)
        self.geom = nn.Linear(10, d)
        self.mix = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(config.dropout))
        self.dec = nn.Linear(d, L)
        self.head = nn.Identity()

    def _tokens(self, x, pos, ori, sensor_type):
        B, S, T = x.shape
        L = self.config.patch_samples
        P = T // L
        if P < 1:
            raise ValueError("window shorter than one patch")
        patches = x[..., : P * L].reshape(B, S, P, L)
        mean = patches.mean(dim=(2, 3), keepdim=True)
        std = patches.std(dim=(2, 3), keepdim=True) + 1e-6
        target = (patches - mean) / std
        geo = self.geom(torch.cat([pos * 10, ori, nn.functional.one_hot(sensor_type, 4).float()],
                                  -1))
        return target, geo

    def _make_mask(self, B, S, P, mode, ratio, generator, device):
        if mode == "sensor":
            m = torch.rand(B, S, 1, generator=generator, device=device) < ratio
            return m.expand(B, S, P).clone()
        if mode == "time":
            m = torch.rand(B, 1, P, generator=generator, device=device) < ratio
            return m.expand(B, S, P).clone()
        return torch.rand(B, S, P, generator=generator, device=device) < ratio

    def forward(self, x, pos, ori, sensor_type, sensor_mask, *, mask=None, mask_mode=None,
                mask_ratio=None, generator=None, return_attention=False):
        target, geo = self._tokens(x, pos, ori, sensor_type)
        B, S, P, L = target.shape
        if mask is None:
            mask = self._make_mask(B, S, P, mask_mode or self.config.mask_mode,
                                   mask_ratio or self.config.mask_ratio, generator, x.device)
        mask = mask & sensor_mask[:, :, None]
        tok = self.patch(target) + geo[:, :, None]
        vis = (~mask & sensor_mask[:, :, None]).float()[..., None]
        lat = self.mix((tok * vis).sum(1) / vis.sum(1).clamp(min=1))  # (B, P, D)
        pred = self.dec(lat[:, None] + geo[:, :, None])
        err = ((pred - target) ** 2).mean(-1)
        loss = (err * mask).sum() / mask.sum().clamp(min=1)
        return {"loss": loss, "pred": pred, "target": target, "mask": mask}

    def forward_features(self, x, pos, ori, sensor_type, sensor_mask, *, return_attention=False):
        target, geo = self._tokens(x, pos, ori, sensor_type)
        tok = self.patch(target) + geo[:, :, None]
        valid = sensor_mask.float()[:, :, None, None]
        lat = self.mix((tok * valid).sum(1) / valid.sum(1).clamp(min=1))
        return lat[:, :, None, :]  # (B, P, K=1, D)

    def forward_head(self, features, pre_logits=True):
        return self.head(features.mean(dim=(1, 2)))

    def save_pretrained(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps({"model": self.config.to_dict()}))
        torch.save(self.state_dict(), directory / "weights.pt")
        return directory


def load_pretrained(directory, **kwargs) -> MaskedSignalModel:
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ValueError(f"{directory} is not a megfm checkpoint")
    cfg = ModelConfig.from_dict(json.loads((directory / "config.json").read_text())["model"])
    model = MaskedSignalModel(cfg)
    model.load_state_dict(torch.load(directory / "weights.pt", weights_only=True))
    return model.eval()


def install() -> bool:
    """Register this stand-in as ``megfm.models`` when the real one is missing."""
    try:
        import megfm.models  # noqa: F401

        return False
    except ImportError:
        mod = types.ModuleType("megfm.models")
        mod.ModelConfig = ModelConfig
        mod.MaskedSignalModel = MaskedSignalModel
        mod.load_pretrained = load_pretrained
        sys.modules["megfm.models"] = mod
        import megfm

        megfm.models = mod
        return True
