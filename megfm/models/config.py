"""ModelConfig: every hyper-parameter of :class:`megfm.MaskedSignalModel` in one dataclass.

The config travels whole into every submodule (nanoGPT style), round-trips through JSON and
is stored in every checkpoint, so a model can always be rebuilt and a run reproduced.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..masking import MASK_MODES
from ..tokenize import NORM_METHODS

__all__ = ["PRESETS", "QK_INITS", "REMOVED_FIELDS", "ModelConfig"]

#: Options that older megfm versions had: name -> (the value that left the model unchanged,
#: the last version that reads other values). A config holding the neutral value loads (the
#: model is the same); any other value is refused with the version to use.
REMOVED_FIELDS: dict[str, tuple[Any, str]] = {
    "spectral_weight": (0.0, "0.1.0"),
    "spectrum_weight": (0.0, "0.1.0"),
    # lost their A/B (docs/benchmarks.md, "Design choices of the presets")
    "norm_scope": ("sensor", "0.1.0"),
    "spectral_tokens": (False, "0.1.0"),
    "spatial_value_norm": (True, "0.1.0"),
    "band_power_weight": (0.0, "0.2.0.dev0"),
}


#: Initialisations of the attention projections accepted by ``ModelConfig.qk_init``.
QK_INITS: tuple[str, ...] = ("trunc_normal", "xavier")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the masked-signal model.

    Parameters are documented inline below; build named variants with :meth:`preset`.
    """

    # --- input ---------------------------------------------------------------------------
    sfreq: float = 200.0  # sampling rate (Hz) the model is trained for; other rates are refused
    patch_samples: int = 40  # samples per sensor-patch token (0.2 s at 200 Hz)
    n_sensor_types: int = 4  # len(megfm.data.SENSOR_TYPES): mag, planar_grad, axial_grad, opm
    norm_method: str = "iqr"  # per-sensor robust normalisation: "iqr" or "mad"
    # --- geometry embedding --------------------------------------------------------------
    n_frequencies: int = 6  # octaves of Fourier features per position coordinate
    position_scale: float = 0.1  # metres mapped to 1 before the Fourier features (~helmet radius)
    # --- encoder -------------------------------------------------------------------------
    dim: int = 128  # width D of latents (and of sensor-patch tokens when token_dim is 0)
    token_dim: int = 0  # width of the per-sensor-patch tokens; 0 = dim. Keys/values of the
    #   spatial cross-attention are projected from token_dim up to dim, so the per-token cost
    #   (the part that grows with sensors) scales with token_dim, not dim
    token_mlp_ratio: float = 4.0  # hidden width of the per-token MLP / token_dim; 0 = no MLP
    scale_feature: bool = False  # feed each sensor's log robust scale (relative to the median
    #   of valid sensors of its type in the window) to the token embedding, so the model sees
    #   which sensors carry large signals despite per-sensor normalisation
    scale_attention_bias: float | None = None  # per-head bias beta * log relative amplitude
    #   of each sensor-patch (the sensor's log scale relative to the median of its type in the
    #   window, plus the log rms of the normalised patch) on the spatial cross-attention
    #   logits, beta learned from this initial value; None = off
    geometry_gain: bool = False  # multiply each token (encoder) and each decoder output
    #   feature by a gain computed from the sensor's geometry embedding: pooling over sensors
    #   then forms learned signed spatial filters (beamformer-like) from the first steps
    qk_init: str = "trunc_normal"  # init of attention q/k/v projections: "trunc_normal"
    #   (std 0.02) or "xavier" (larger, so attention is not uniform at the start)
    n_latents: int = 16  # K learned latent queries per time patch (spatial compression)
    depth: int = 4  # temporal transformer blocks over the P * K latent tokens
    n_heads: int = 4  # attention heads (encoder cross- and self-attention)
    mlp_ratio: float = 4.0  # hidden width of the MLPs, as a multiple of the block width
    qkv_bias: bool = True  # bias in the query/key/value projections
    dropout: float = 0.0  # dropout on attention weights and block outputs
    # --- decoder -------------------------------------------------------------------------
    decoder_dim: int = 64  # width of the light decoder
    decoder_depth: int = 1  # cross-attention blocks of the decoder (masked queries -> latents)
    decoder_heads: int = 2  # attention heads of the decoder
    leadfield_readout: bool = False  # add a lead-field read-out to the decoder: a hidden
    #   sensor-patch also gets sum_k g_k(sensor geometry) * u(latent_k), signed gains from the
    #   sensor's geometry times a time course per latent (a field is linear in its sources)
    leadfield_sources: int = 1  # time courses per latent in the lead-field read-out (its
    #   spatial rank is n_latents * leadfield_sources)
    # --- pretraining objective -------------------------------------------------------------
    mask_mode: str = "mixed"  # default masking mode (megfm.masking.MASK_MODES)
    mask_ratio: float = 0.5  # default fraction hidden
    time_block: int = 2  # contiguous patches per block of "time" masking

    def __post_init__(self) -> None:
        checks = [
            (self.sfreq > 0, "sfreq must be > 0"),
            (self.patch_samples >= 1, "patch_samples must be >= 1"),
            (self.dim % self.n_heads == 0, "dim must be a multiple of n_heads"),
            (self.decoder_dim % self.decoder_heads == 0,
             "decoder_dim must be a multiple of decoder_heads"),
            (self.n_latents >= 1, "n_latents must be >= 1"),
            (self.leadfield_sources >= 1, "leadfield_sources must be >= 1"),
            (self.token_dim >= 0, "token_dim must be >= 0 (0 = dim)"),
            (self.token_mlp_ratio >= 0, "token_mlp_ratio must be >= 0"),
            (self.qk_init in QK_INITS, f"qk_init must be one of {QK_INITS}"),
            (self.depth >= 0 and self.decoder_depth >= 1,
             "depth must be >= 0 and decoder_depth >= 1"),
            (self.norm_method in NORM_METHODS, f"norm_method must be one of {NORM_METHODS}"),
            (self.mask_mode in MASK_MODES, f"mask_mode must be one of {MASK_MODES}"),
            (0.0 < self.mask_ratio < 1.0, "mask_ratio must be in (0, 1)"),
            (self.time_block >= 1, "time_block must be >= 1"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"Invalid ModelConfig: {message}; got {self!r}.")

    # ------------------------------------------------------------------------------------
    @property
    def token_width(self) -> int:
        """Width of the sensor-patch tokens (``token_dim``, or ``dim`` when it is 0)."""
        return self.token_dim or self.dim

    @property
    def patch_seconds(self) -> float:
        """Duration of one patch in seconds."""
        return self.patch_samples / self.sfreq

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """Named configuration, optionally with some fields overridden.

        Parameters
        ----------
        name : ``"tiny"`` | ``"small"`` | ``"base"``
            ``tiny``: tests (< 1 M parameters); ``small``: CPU pretraining (~1 M);
            ``base``: GPU pretraining (tens of M).
        **overrides
            Fields to change, e.g. ``sfreq=250.0, patch_samples=50``.
        """
        if name not in PRESETS:
            raise ValueError(
                f"Invalid value for 'name': expected one of {tuple(PRESETS)}; got {name!r}."
            )
        return cls.from_dict({**PRESETS[name], **overrides})

    def replace(self, **changes: Any) -> ModelConfig:
        """Copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a dict, refusing unknown fields (e.g. from a newer megfm)."""
        if not isinstance(d, dict):
            raise TypeError(f"Expected a dict of ModelConfig fields; got {type(d).__name__}.")
        known = {f.name for f in fields(cls)}
        d = dict(d)
        for name in sorted(set(d) & set(REMOVED_FIELDS)):
            default, last_version = REMOVED_FIELDS[name]
            if d[name] != default:
                raise ValueError(
                    f"This model's config sets {name}={d[name]!r}, an option removed after megfm "
                    f"{last_version}; load it with megfm {last_version} "
                    f"(pip install 'megfm=={last_version}')."
                )
            del d[name]  # the removed option at its old default: the same model
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"Unknown ModelConfig field(s) {unknown}; the config was probably written by a "
                "newer megfm. Upgrade megfm or remove these fields."
            )
        return cls(**d)

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> ModelConfig:
        """Load from a JSON string or a path to a JSON file."""
        if isinstance(text_or_path, Path) or not str(text_or_path).lstrip().startswith("{"):
            text = Path(text_or_path).read_text(encoding="utf-8")
        else:
            text = str(text_or_path)
        return cls.from_dict(json.loads(text))

    def differences(self, other: ModelConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: ``{name: (self_value, other_value)}``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


#: Named presets (fields that differ from the defaults).
#: options shared by every preset that make the spatial attention learn (bench_learning.py)
#: scale_attention_bias: attention follows the amplitude of each sensor-patch (event-related
#: attention changes then point at the evoked field; bench_targets.py); leadfield_readout:
#: lower masked loss and sharper event-related attention in the same steps (bench_ablation.py)
_LEARNING: dict[str, Any] = dict(scale_feature=True, qk_init="xavier",
                                 geometry_gain=True, scale_attention_bias=2.0,
                                 leadfield_readout=True)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(dim=32, n_latents=4, depth=2, n_heads=2, decoder_dim=32, decoder_heads=2,
                 **_LEARNING),
    "small": dict(dim=128, n_latents=16, depth=4, n_heads=4, decoder_dim=64, decoder_heads=2,
                  token_dim=32, token_mlp_ratio=2.0, **_LEARNING),
    "base": dict(dim=512, n_latents=16, depth=8, n_heads=8, decoder_dim=256, decoder_depth=2,
                 decoder_heads=4, token_dim=128, token_mlp_ratio=2.0, **_LEARNING),
}
