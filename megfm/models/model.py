"""MaskedSignalModel: masked reconstruction of sensor-patches with a sensor-count-linear encoder.

Token flow (shapes in comments below)::

    x (B, S, T) --robust normalise, patchify--> patches (B, S, P, L)
    mask (B, S, P), True = hidden
    visible sensor-patches only --patch embed + geometry embed + MLP--> tokens (B, P, Sv, D)
    K learned latent queries per time patch --cross-attention over that patch's visible
        sensors--> latents (B, P, K, D)                      [spatial compression, O(S)]
    transformer over the P * K latent tokens --> features (B, P, K, D)
    each hidden sensor-patch: query = its geometry embedding + time position
        --cross-attention over the K latents of its time patch--> pred (B, S, P, L)

Masked sensor-patches are dropped before the encoder (MAE), not replaced by mask tokens;
the variable number of visible sensors per time patch is handled with key padding masks.
:mod:`.packing` packs the visible (encoder) and hidden (decoder) sensor-patches, and
:mod:`.patch_embed` turns the visible ones into tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..masking import make_mask
from ..tokenize import (
    GeometryEmbedding,
    NormStats,
    patchify,
    relative_log_scale,
    robust_normalize,
)
from .checkpoint import read_checkpoint, write_checkpoint
from .config import ModelConfig
from .layers import Attention, CrossBlock, Mlp, SelfBlock, sinusoidal_positions
from .packing import Packing, pack, pack_all
from .patch_embed import embed_patches, patch_log_amplitude, sensor_terms

__all__ = ["MaskedSignalModel", "load_pretrained", "save_pretrained"]


class MaskedSignalModel(nn.Module):
    """Masked-signal-reconstruction transformer for any MEG sensor array.

    Parameters
    ----------
    config : ModelConfig | None
        Hyper-parameters; ``ModelConfig()`` when None.

    Notes
    -----
    Inputs follow the batch contract of ``docs/design.md``: ``x (B, S, T)`` in fT / fT/cm,
    ``pos (B, S, 3)`` in metres, ``ori (B, S, 3)``, ``sensor_type (B, S)`` codes into
    ``megfm.data.SENSOR_TYPES`` and ``sensor_mask (B, S)`` (True = valid sensor). ``T`` must
    be a multiple of ``config.patch_samples``. No part of the model is tied to a sensor
    index: permuting sensors permutes outputs, and any sensor count works.

    ``x`` may be float16 (a float16 store): it is upcast to float32 at the input
    (:func:`megfm.tokenize.robust_normalize`), so keep it in half precision up to here. A
    :class:`megfm.data.Batch` feeds the model by name: ``model(**batch.inputs())``.

    ``static_shapes`` (attribute, default False; :meth:`set_static_shapes`) selects the
    static-shape path for ``torch.compile`` and CUDA graphs: every tensor's shape depends on
    the batch shape alone and nothing is read back from the device. The encoder then embeds
    every sensor-patch and its attention ignores the hidden ones, the decoder predicts every
    sensor-patch and keeps the hidden ones, and masks are drawn without checks
    (:func:`megfm.masking.make_mask` with ``static=True``). The input checks that read
    values (empty windows, NaN/Inf, sensor-type codes) are skipped: the training step checks
    each batch before the model (:func:`megfm.data.check_batch`). Same losses and gradients
    as the packed path for the same mask, at the cost of the per-token work on the hidden
    (encoder) or visible (decoder) sensor-patches.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        if config is None:
            config = ModelConfig()
        if not isinstance(config, ModelConfig):
            raise TypeError(
                f"Expected a megfm.ModelConfig; got {type(config).__name__}. Use "
                "ModelConfig.preset('small') or ModelConfig.from_dict(d)."
            )
        self.config = config
        self.static_shapes = False
        c = config
        dim, ddim, n_lat, tw = c.dim, c.decoder_dim, c.n_latents, c.token_width
        # --- encoder: per-sensor-patch tokens at width tw (the part that grows with sensors)
        self.geometry = GeometryEmbedding(
            tw, n_sensor_types=c.n_sensor_types, n_frequencies=c.n_frequencies,
            position_scale=c.position_scale,
        )
        self.patch_embed = nn.Linear(c.patch_samples + int(c.scale_feature), tw)
        hidden = int(tw * c.token_mlp_ratio)
        self.token_gain = nn.Linear(tw, tw) if c.geometry_gain else None
        self.token_norm = nn.LayerNorm(tw) if hidden else nn.Identity()
        self.token_mlp = Mlp(tw, hidden, c.dropout) if hidden else None
        self.latent_queries = nn.Parameter(torch.zeros(n_lat, dim))
        # latents of a time patch in which no sensor is visible (time-block masking)
        self.empty_latents = nn.Parameter(torch.zeros(n_lat, dim))
        # keys/values projected from tw up to dim inside the cross-attention
        self.spatial = CrossBlock(
            dim, c.n_heads, kv_dim=tw, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias,
            dropout=c.dropout, token_space=True,
        )
        self.scale_bias = (
            nn.Parameter(torch.zeros(c.n_heads)) if c.scale_attention_bias is not None else None
        )
        self.blocks = nn.ModuleList(
            SelfBlock(dim, c.n_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias, dropout=c.dropout)
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head: nn.Module = nn.Identity()
        # --- light decoder
        self.decoder_embed = nn.Linear(dim, ddim)
        self.decoder_geometry = nn.Linear(tw, ddim)
        self.decoder_gain = nn.Linear(tw, ddim) if c.geometry_gain else None
        self.mask_token = nn.Parameter(torch.zeros(ddim))
        self.decoder_blocks = nn.ModuleList(
            CrossBlock(ddim, c.decoder_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias,
                       dropout=c.dropout)
            for _ in range(c.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(ddim)
        self.decoder_pred = nn.Linear(ddim, c.patch_samples)
        # lead-field read-out: each latent is a "source" with a time course per patch; a
        # hidden sensor adds the sum of those time courses weighted by signed gains computed
        # from its geometry (a learned lead field), the linear map a field obeys
        n_src = n_lat * c.leadfield_sources
        self.leadfield = (
            nn.Sequential(nn.Linear(tw, tw), nn.GELU(), nn.Linear(tw, n_src))
            if c.leadfield_readout else None
        )
        self.source_readout = (
            nn.Linear(dim, c.leadfield_sources * c.patch_samples) if c.leadfield_readout else None
        )
        self.initialize_weights()

    # ------------------------------------------------------------------ initialisation
    def initialize_weights(self) -> None:
        """(Re)initialise every parameter; the one place where initial values are set."""
        for p in (self.empty_latents, self.mask_token):
            nn.init.trunc_normal_(p, std=0.02)
        # the latent queries are added to the time positions (unit-scale sinusoids): queries
        # of that scale make the K latents of a time patch attend to different sensors from
        # the first step (at std 0.02 the time position dominated, and the K latents stayed
        # copies of one another: 1 % apart after 300 steps)
        nn.init.trunc_normal_(self.latent_queries, std=1.0, a=-2.0, b=2.0)
        self.apply(self._init_weights)
        if self.scale_bias is not None:
            nn.init.constant_(self.scale_bias, float(self.config.scale_attention_bias))
        if self.leadfield is not None:  # gains of order 1, so the read-out learns at once
            nn.init.xavier_uniform_(self.leadfield[-1].weight)
        if self.config.qk_init == "xavier":
            for m in self.modules():
                if isinstance(m, Attention):
                    for lin in (m.q, m.kv):
                        nn.init.xavier_uniform_(lin.weight)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # ------------------------------------------------------------------ utilities
    def set_fused_attention(self, fused: bool = True) -> None:
        """Use the fused SDPA kernel (True) or the manual softmax path (False) everywhere."""
        for m in self.modules():
            if isinstance(m, Attention):
                m.fused = bool(fused)

    def set_static_shapes(self, static: bool = True) -> None:
        """Use the static-shape path (True) or the packed one (False); see the class notes."""
        self.static_shapes = bool(static)

    def _pack(self, selected: torch.Tensor) -> Packing:
        """The selected sensor-patches, packed (default) or all kept (static shapes)."""
        return pack_all(selected) if self.static_shapes else pack(selected)

    def num_parameters(self, *, trainable_only: bool = False) -> int:
        """Number of parameters (trainable ones only when asked)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def reset_head(self, n_outputs: int = 0) -> None:
        """Replace :attr:`head` by a linear layer ``D -> n_outputs`` (identity when 0)."""
        self.head = nn.Linear(self.config.dim, n_outputs) if n_outputs else nn.Identity()
        if n_outputs:
            self._init_weights(self.head)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory``.

        Parameters
        ----------
        directory : str | Path
            The export folder; an existing export there is replaced in one step
            (see :mod:`megfm.models.checkpoint`).

        Returns
        -------
        directory : Path
        """
        return write_checkpoint(directory, self.config, self.state_dict())

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        expected_config: ModelConfig | None = None,
        map_location: str | torch.device = "cpu",
    ) -> MaskedSignalModel:
        """Load a checkpoint folder (same as :func:`megfm.load_pretrained`).

        Parameters
        ----------
        directory : str | Path
            Folder written by :meth:`save_pretrained` (or ``megfm pretrain``'s ``model/``).
        expected_config : ModelConfig | None
            When given, the checkpoint's config must equal it; differences are listed in the
            error.
        map_location : str | torch.device
            Where to load the tensors.

        Returns
        -------
        model : MaskedSignalModel
            In eval mode.
        """
        config, state = read_checkpoint(directory, expected_config=expected_config,
                                        map_location=map_location)
        model = cls(config)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise ValueError(
                f"The weights in {directory} do not fit the config in its config.json: {first}"
            ) from exc
        return model.eval()

    # ------------------------------------------------------------------ steps
    def check_inputs(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        ori: torch.Tensor,
        sensor_type: torch.Tensor,
        sensor_mask: torch.Tensor,
        *,
        sfreq: float | None = None,
        values: bool = True,
    ) -> torch.Tensor:
        """Validate a batch; return ``sensor_mask`` as bool. Raises ValueError/TypeError.

        Types, shapes and the window length are always checked; ``values=False`` (or the
        static-shape path) leaves out the checks that read values back from the device
        (windows without a valid sensor, NaN/Inf), for batches the caller has checked.
        """
        for name, t in (("x", x), ("pos", pos), ("ori", ori), ("sensor_type", sensor_type),
                        ("sensor_mask", sensor_mask)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"Expected '{name}' to be a torch.Tensor; got {type(t).__name__}.")
        if x.ndim != 3:
            raise ValueError(f"Expected x of shape (B, S, T); got {tuple(x.shape)}.")
        b, s, n_times = x.shape
        expected = {"pos": (b, s, 3), "ori": (b, s, 3), "sensor_type": (b, s), "sensor_mask": (b, s)}
        for name, t in (("pos", pos), ("ori", ori), ("sensor_type", sensor_type),
                        ("sensor_mask", sensor_mask)):
            if tuple(t.shape) != expected[name]:
                raise ValueError(
                    f"Expected '{name}' of shape {expected[name]} to match x {tuple(x.shape)}; "
                    f"got {tuple(t.shape)}."
                )
        if sfreq is not None and abs(float(sfreq) - self.config.sfreq) > 1e-6 * self.config.sfreq:
            raise ValueError(
                f"Data sampled at {float(sfreq):g} Hz but the model was built for "
                f"{self.config.sfreq:g} Hz (config.sfreq); resample the data to "
                f"{self.config.sfreq:g} Hz (megfm.PreprocessConfig(sfreq=...))."
            )
        patch = self.config.patch_samples
        if n_times < patch or n_times % patch:
            rate = self.config.sfreq
            raise ValueError(
                f"Windows of {n_times} samples ({n_times / rate:g} s) do not split into this "
                f"model's patches of {patch} samples ({patch / rate:g} s); cut the recordings "
                f"into windows of a multiple of {patch / rate:g} s (at least {4 * patch / rate:g}"
                " s is best): `megfm prepare --window SECONDS` or "
                "megfm.prepare(window_seconds=...)."
            )
        valid = sensor_mask.to(torch.bool)
        if self.static_shapes or not values:  # these read from the device: the caller checked
            return valid
        empty = ~valid.any(1)
        if bool(empty.any()):
            raise ValueError(
                f"Window(s) {torch.nonzero(empty).flatten().tolist()} of the batch have no valid "
                "sensor (sensor_mask all False: every sensor is bad or padding); drop them."
            )
        finite = torch.isfinite(x).all(-1) | ~valid  # (B, S)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite.all(1)).flatten().tolist()
            raise ValueError(
                f"NaN or Inf in x for window(s) {bad} of the batch (valid sensors only); clean "
                "the data or mark those sensors invalid in sensor_mask."
            )
        return valid

    def tokenize(
        self, x: torch.Tensor, sensor_mask: torch.Tensor
    ) -> tuple[torch.Tensor, NormStats]:
        """Robust normalisation then patching: ``(B, S, T) -> (B, S, P, L)``.

        Each sensor is centred and scaled by its own robust statistics over the window.
        """
        x_norm, stats = robust_normalize(x, sensor_mask, method=self.config.norm_method)
        return patchify(x_norm, self.config.patch_samples), stats

    def relative_scale(
        self, stats: NormStats, sensor_type: torch.Tensor, sensor_mask: torch.Tensor
    ) -> torch.Tensor | None:
        """Log relative scale ``(B, S)`` of each sensor when the model uses it, else None.

        See :func:`megfm.tokenize.relative_log_scale`.
        """
        c = self.config
        if not (c.scale_feature or c.scale_attention_bias is not None):
            return None
        return relative_log_scale(stats.scale, sensor_type, sensor_mask,
                                  n_types=c.n_sensor_types)

    def random_masking(
        self,
        sensor_mask: torch.Tensor,
        n_patches: int,
        *,
        mode: str | None = None,
        ratio: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Mask ``(B, S, P)`` (True = hidden) from :func:`megfm.masking.make_mask`."""
        c = self.config
        return make_mask(
            sensor_mask, n_patches, mode=c.mask_mode if mode is None else mode,
            ratio=c.mask_ratio if ratio is None else ratio, generator=generator,
            time_block=c.time_block, static=self.static_shapes,
        )

    def forward_encoder(
        self,
        patches: torch.Tensor,
        geometry: torch.Tensor,
        visible: torch.Tensor,
        *,
        rel_scale: torch.Tensor | None = None,
        need_weights: bool = False,
        return_blocks: bool = False,
    ) -> tuple[torch.Tensor, dict]:
        """Encode the visible sensor-patches into latent tokens.

        Parameters
        ----------
        patches : Tensor, shape (B, S, P, L)
            Normalised sensor-patches; hidden ones never reach the output (static shapes:
            they are embedded, then given attention weight 0).
        geometry : Tensor, shape (B, S, token_width)
            Sensor embeddings (:class:`megfm.tokenize.GeometryEmbedding`).
        visible : Tensor of bool, shape (B, S, P)
            True where the encoder may look (valid and not hidden).
        rel_scale : Tensor, shape (B, S) | None
            Log relative scale of each sensor (:meth:`relative_scale`), used when
            ``config.scale_feature`` or ``config.scale_attention_bias`` is set; None counts
            as 0 (every sensor at the median of its type).
        need_weights : bool
            Also return attention weights (manual attention path).
        return_blocks : bool
            Also return the latents after every temporal block (before the final norm).

        Returns
        -------
        latents : Tensor, shape (B, P, K, D)
            Normalised output of the last block.
        extras : dict
            ``"spatial"`` (B, P, K, S) and ``"temporal"`` list of (B, H, N, N) when
            ``need_weights``; ``"blocks"`` list of (B, P, K, D) when ``return_blocks``.
        """
        b, s, p, _ = patches.shape
        k, dim = self.config.n_latents, self.config.dim
        # MAE: hidden sensor-patches are dropped, not replaced; the visible ones are packed
        # (static shapes: all are embedded, and the attention gives the hidden ones weight 0)
        packed = self._pack(visible)
        x = patches[packed.window, packed.sensor, packed.patch]  # (Nv, L)
        if rel_scale is None and (self.config.scale_feature or self.scale_bias is not None):
            rel_scale = patches.new_zeros(b, s)
        tokens = self.embed_patches(x, geometry, packed, rel_scale)  # (Nv, tw)
        key_bias = None
        if self.scale_bias is not None:  # logit bias beta_h * log amplitude of each key
            amp = patch_log_amplitude(x, packed.per_sensor(rel_scale))
            key_bias = (self.scale_bias, packed.grid(amp))
        latents, spatial = self.pool_sensors(packed.grid(tokens), packed, key_bias=key_bias,
                                             need_weights=need_weights)  # (B, P, K, D)
        extras: dict = {"spatial": spatial, "temporal": []} if need_weights else {}
        blocks = []
        z = latents.reshape(b, p * k, dim)  # (B, N = P * K, D)
        for blk in self.blocks:
            z, w = blk(z, need_weights=need_weights)
            if need_weights:
                extras["temporal"].append(w)  # (B, H, N, N)
            if return_blocks:
                blocks.append(z.reshape(b, p, k, dim))
        if return_blocks:
            extras["blocks"] = blocks
        return self.norm(z).reshape(b, p, k, dim), extras

    def embed_patches(self, patches: torch.Tensor, geometry: torch.Tensor, packed: Packing,
                      rel_scale: torch.Tensor | None) -> torch.Tensor:
        """Tokens ``(N, token_width)`` of packed sensor-patches (:mod:`.patch_embed`).

        Parameters
        ----------
        patches : Tensor, shape (N, L)
            The packed normalised sensor-patches.
        geometry : Tensor, shape (B, S, token_width)
            Sensor embeddings.
        packed : Packing
            Where the patches come from (:func:`megfm.models.packing.pack`).
        rel_scale : Tensor, shape (B, S) | None
            Log relative scale of each sensor (used with ``config.scale_feature``).
        """
        offset, gain = sensor_terms(  # once per sensor, not once per sensor-patch
            geometry, self.patch_embed,
            log_scale=rel_scale if self.config.scale_feature else None,
            token_gain=self.token_gain)
        return embed_patches(
            patches, packed.per_sensor(offset), None if gain is None else packed.per_sensor(gain),
            self.patch_embed, token_norm=self.token_norm,
            token_mlp=self.token_mlp)

    def pool_sensors(
        self,
        tokens: torch.Tensor,
        packed: Packing,
        *,
        key_bias: tuple[torch.Tensor, torch.Tensor] | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """K latent queries per time patch attend to that patch's visible sensor tokens.

        Parameters
        ----------
        tokens : Tensor, shape (B * P, width, token_width)
            Sensor tokens grouped by time patch (``packed.grid``); padding slots are ignored.
        packed : Packing
            The visible sensor-patches (:func:`megfm.models.packing.pack`).
        key_bias : tuple of Tensor (coef (H,), values (B * P, width)) | None
            Rank-one logit bias of the spatial attention.
        need_weights : bool
            Also return the head-averaged attention map.

        Returns
        -------
        latents : Tensor, shape (B, P, K, D)
            ``empty_latents`` (+ time position) where no sensor of the time patch is visible.
        spatial : Tensor, shape (B, P, K, S) | None
            Attention weights over sensors, when ``need_weights``.
        """
        b, s, p = packed.shape
        k, dim = self.config.n_latents, self.config.dim
        key_mask = packed.key_mask()  # (B * P, width)
        empty = ~key_mask.any(1)  # a time patch with no visible sensor (time-block masking)
        time = sinusoidal_positions(p, dim, device=tokens.device, dtype=tokens.dtype)  # (P, D)
        queries = (self.latent_queries[None] + time[:, None]).to(tokens.dtype)  # (P, K, D)
        # rows without any visible key attend to zeros; their output is replaced below
        lat, weights = self.spatial(
            queries[None].expand(b, p, k, dim).reshape(b * p, k, dim), tokens,
            key_mask=key_mask | empty[:, None], key_bias=key_bias, need_weights=need_weights)
        lat = lat.reshape(b, p, k, dim)
        fill = (self.empty_latents[None] + time[:, None]).to(lat.dtype)  # (P, K, D)
        lat = torch.where(empty.reshape(b, p)[..., None, None], fill[None], lat)
        if not need_weights:
            return lat, None
        w = weights.mean(1)[packed.rows, :, packed.slots]  # head-averaged, (Nv, K)
        if packed.selected is not None:  # a fully hidden time patch attends to every slot
            w = w * packed.selected[:, None].to(w.dtype)
        spatial = w.new_zeros(b, p, s, k)
        spatial[packed.window, packed.patch, packed.sensor] = w
        return lat, spatial.transpose(2, 3)  # (B, P, K, S)

    def forward_decoder(
        self,
        latents: torch.Tensor,
        geometry: torch.Tensor,
        hidden: torch.Tensor,
    ) -> torch.Tensor:
        """Predict the hidden sensor-patches from the latents of their time patch.

        Parameters
        ----------
        latents : Tensor, shape (B, P, K, D)
        geometry : Tensor, shape (B, S, token_width)
        hidden : Tensor of bool, shape (B, S, P)
            Sensor-patches to predict.

        Returns
        -------
        pred : Tensor, shape (B, S, P, L)
            Predictions at hidden sensor-patches, zeros elsewhere.
        """
        b, p, k, _ = latents.shape
        s = geometry.shape[1]
        length, ddim = self.config.patch_samples, self.config.decoder_dim
        # pack the hidden sensor-patches: the per-query work (norms, MLP, read-outs) runs on
        # them alone, not on a grid padded to the most hidden sensors of any time patch
        # (a whole hidden time patch under "time" masking would pad every row to S); static
        # shapes predict every sensor-patch and keep the hidden ones
        packed = self._pack(hidden)
        time = sinusoidal_positions(p, ddim, device=latents.device, dtype=latents.dtype)
        q = (packed.per_sensor(self.decoder_geometry(geometry)) + self.mask_token
             + time[packed.patch])  # (N, Dd)
        memory = self.decoder_embed(latents).reshape(b * p, k, ddim)  # (B * P, K, Dd)
        for blk in self.decoder_blocks:
            q = blk.forward_packed(q, memory, packed.rows, packed.slots, packed.width)
        q = self.decoder_norm(q)
        if self.decoder_gain is not None:  # per-sensor readout of the latent features
            q = q * (1.0 + packed.per_sensor(self.decoder_gain(geometry)))
        out = self.decoder_pred(q)  # (N, L)
        if self.leadfield is not None:
            gains = packed.grid(packed.per_sensor(self.leadfield(geometry)))  # (B * P, n, K * r)
            sources = self.source_readout(latents).reshape(b * p, -1, length)  # (B * P, K * r, L)
            out = out + torch.bmm(gains, sources.to(gains.dtype))[packed.rows, packed.slots]
        if packed.selected is not None:  # every sensor-patch predicted: keep the hidden ones
            out = torch.where(packed.selected[:, None], out, torch.zeros_like(out))
        where = (packed.window, packed.sensor, packed.patch)
        pred = out.new_zeros(b, s, p, length)
        pred[where] = out
        return pred

    def forward_loss(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        hidden: torch.Tensor,
    ) -> torch.Tensor:
        """Mean squared error over hidden sensor-patches only."""
        n = hidden.sum().clamp_min(1)
        weight = hidden.to(pred.dtype)
        loss = (((pred - target) ** 2).mean(-1) * weight).sum() / n  # (B, S, P) -> scalar
        return loss

    # ------------------------------------------------------------------ public API
    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        ori: torch.Tensor,
        sensor_type: torch.Tensor,
        sensor_mask: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        mask_mode: str | None = None,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        return_attention: bool = False,
        sfreq: float | None = None,
        checked: bool = False,
    ) -> dict:
        """Mask, encode the visible sensor-patches, reconstruct the hidden ones.

        Parameters
        ----------
        x, pos, ori, sensor_type, sensor_mask : Tensor
            A batch (see the class notes).
        mask : Tensor of bool, shape (B, S, P) | None
            Sensor-patches to hide (True = hidden); drawn with ``mask_mode`` / ``mask_ratio``
            / ``generator`` when None. Only valid sensors are ever hidden.
        mask_mode : str | None
            ``"random"``, ``"sensor"``, ``"time"``, ``"mixed"``; ``config.mask_mode`` if None.
        mask_ratio : float | None
            Fraction hidden; ``config.mask_ratio`` if None.
        generator : torch.Generator | None
            Makes the mask reproducible.
        return_attention : bool
            Also return the attention weights.
        sfreq : float | None
            Sampling rate of ``x``; refused when it differs from ``config.sfreq``.
        checked : bool
            The caller has checked the batch's values (a valid sensor in every window, no
            NaN/Inf, sensor-type codes of ``megfm.data.SENSOR_TYPES``), as the training step
            does with :func:`megfm.data.check_batch`, and drew any ``mask`` it passes with
            :meth:`random_masking` (which hides at least one sensor-patch per window): the
            model then skips its own checks of them, which read back from the device
            (synchronisations on a GPU).

        Returns
        -------
        out : dict
            ``loss`` (scalar, MSE on hidden patches of normalised signals), ``pred``
            (B, S, P, L) reconstruction in normalised units (hidden patches predicted, visible
            ones copied from ``target``), ``target`` (B, S, P, L), ``mask`` (B, S, P) bool
            (True = hidden), ``stats`` (:class:`megfm.tokenize.NormStats` for
            :func:`megfm.tokenize.denormalize`) and, when asked, ``attention`` with
            ``"spatial"`` (B, P, K, S) and ``"temporal"`` (list of (B, H, P*K, P*K)).
        """
        valid = self.check_inputs(x, pos, ori, sensor_type, sensor_mask, sfreq=sfreq,
                                  values=not checked)
        target, stats = self.tokenize(x, valid)  # (B, S, P, L)
        b, s, p, _ = target.shape
        if mask is None:
            mask = self.random_masking(
                valid, p, mode=mask_mode, ratio=mask_ratio, generator=generator
            )
        else:
            if tuple(mask.shape) != (b, s, p):
                raise ValueError(
                    f"Expected 'mask' of shape (B, S, P) = {(b, s, p)}; got {tuple(mask.shape)}."
                )
            mask = mask.to(torch.bool) & valid[..., None]
            if not (self.static_shapes or checked) and not bool(mask.any()):
                raise ValueError(
                    "'mask' hides no valid sensor-patch, so there is nothing to reconstruct; "
                    "hide at least one valid sensor-patch (True = hidden)."
                )
        visible = valid[..., None] & ~mask  # (B, S, P)
        geometry = self.geometry(pos, ori, sensor_type, valid,
                                 check=not (self.static_shapes or checked))  # (B, S, width)
        latents, extras = self.forward_encoder(
            target, geometry, visible, rel_scale=self.relative_scale(stats, sensor_type, valid),
            need_weights=return_attention,
        )
        pred = self.forward_decoder(latents, geometry, mask)  # (B, S, P, L)
        loss = self.forward_loss(pred, target, mask)
        out = {
            "loss": loss,
            "pred": torch.where(mask[..., None], pred, target),
            "target": target,
            "mask": mask,
            "stats": stats,
        }
        if return_attention:
            out["attention"] = extras
        return out

    def forward_features(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        ori: torch.Tensor,
        sensor_type: torch.Tensor,
        sensor_mask: torch.Tensor,
        *,
        return_attention: bool = False,
        sfreq: float | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """Encode whole windows (no masking).

        Returns
        -------
        latents : Tensor, shape (B, P, K, D)
            Latent tokens. With ``return_attention=True``, a tuple ``(latents, attention)``
            where ``attention`` holds ``"spatial"`` (B, P, K, S) and ``"temporal"``.
        """
        latents, extras = self._encode_whole(x, pos, ori, sensor_type, sensor_mask, sfreq=sfreq,
                                             need_weights=return_attention)
        return (latents, extras) if return_attention else latents

    def _encode_whole(self, x, pos, ori, sensor_type, sensor_mask, *, sfreq, **encoder_kwargs):
        """Encode windows with every valid sensor-patch visible (no masking)."""
        valid = self.check_inputs(x, pos, ori, sensor_type, sensor_mask, sfreq=sfreq)
        patches, stats = self.tokenize(x, valid)
        visible = valid[..., None].expand_as(patches[..., 0])
        geometry = self.geometry(pos, ori, sensor_type, valid, check=not self.static_shapes)
        return self.forward_encoder(
            patches, geometry, visible, rel_scale=self.relative_scale(stats, sensor_type, valid),
            **encoder_kwargs,
        )

    def forward_head(self, features: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        """Pool latents ``(B, P, K, D) -> (B, D)``; apply :attr:`head` unless ``pre_logits``."""
        if features.ndim != 4:
            raise ValueError(f"Expected features of shape (B, P, K, D); got {tuple(features.shape)}.")
        pooled = features.mean(dim=(1, 2))
        return pooled if pre_logits else self.head(pooled)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        ori: torch.Tensor,
        sensor_type: torch.Tensor,
        sensor_mask: torch.Tensor,
        *,
        indices: int | list[int] | None = None,
        sfreq: float | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Latents after chosen temporal blocks (timm's feature API).

        Parameters
        ----------
        indices : int | list of int | None
            An int ``n``: the last ``n`` blocks; a list: those block indices (negative ones
            count from the end); None: every block.

        Returns
        -------
        latents : Tensor, shape (B, P, K, D)
            Final (normalised) latents, as :meth:`forward_features`.
        intermediates : list of Tensor, each (B, P, K, D)
            Un-normalised latents after each chosen block, in block order.
        """
        depth = len(self.blocks)
        if indices is None:
            chosen = list(range(depth))
        elif isinstance(indices, int):
            chosen = list(range(max(depth - indices, 0), depth))
        else:
            chosen = [i % depth if -depth <= i < depth else i for i in indices]
            if any(not 0 <= i < depth for i in chosen):
                raise ValueError(
                    f"Invalid block indices {list(indices)}: the model has {depth} blocks."
                )
        latents, extras = self._encode_whole(x, pos, ori, sensor_type, sensor_mask, sfreq=sfreq,
                                             return_blocks=True)
        return latents, [extras["blocks"][i] for i in sorted(set(chosen))]

    def layer_id(self, name: str) -> int | None:
        """Depth of parameter ``name`` for layer-wise learning-rate decay (BEiT / MAE).

        0: everything before the temporal blocks (tokeniser, geometry and patch embeddings,
        spatial cross-attention, latent queries); ``1 + i``: ``blocks.i``; ``depth + 1``: the
        final norm and the head; ``None``: the decoder (with its lead-field read-out), which
        fine-tuning does not use.
        """
        root = name.split(".", 1)[0]
        if root.startswith("decoder") or root in ("mask_token", "leadfield", "source_readout"):
            return None
        if root == "blocks":
            return 1 + int(name.split(".")[1])
        if root in ("norm", "head"):
            return len(self.blocks) + 1
        return 0


def save_pretrained(model: MaskedSignalModel, directory: str | Path) -> Path:
    """Write ``model`` to a checkpoint folder (same as :meth:`MaskedSignalModel.save_pretrained`).

    Parameters
    ----------
    model : MaskedSignalModel
    directory : str | Path

    Returns
    -------
    directory : Path
    """
    if not isinstance(model, MaskedSignalModel):
        raise TypeError(f"Expected a MaskedSignalModel; got {type(model).__name__}.")
    return model.save_pretrained(directory)


def load_pretrained(
    directory: str | Path,
    *,
    expected_config: ModelConfig | None = None,
    map_location: str | torch.device = "cpu",
) -> MaskedSignalModel:
    """Load a checkpoint folder written by :meth:`MaskedSignalModel.save_pretrained`.

    The folder holds ``config.json`` and ``model.safetensors``; the weights are checked
    against the sha256 in ``config.json`` and read without pickle. Old exports with a
    ``weights.pt`` still load (``torch.load(weights_only=True)``), with a warning in the log.

    Parameters
    ----------
    directory : str | Path
        The checkpoint folder, or the run folder ``RUN`` of ``megfm pretrain --out RUN``
        (its ``RUN/model``).
    expected_config : ModelConfig | None
        When given, the checkpoint's config must equal it; differences are listed in the error.
    map_location : str | torch.device
        Where to load the tensors.

    Returns
    -------
    model : MaskedSignalModel
        In eval mode.
    """
    return MaskedSignalModel.from_pretrained(directory, expected_config=expected_config,
                                             map_location=map_location)
