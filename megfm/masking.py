"""Masks for masked-signal pretraining: which sensor-patches the encoder does not see.

Convention (MAE): a mask has shape ``(B, S, P)`` and ``True`` (1) means *hidden*. Only valid
sensors (``sensor_mask == True``) are ever hidden, and every window keeps at least one
visible and at least one hidden sensor-patch. Selection follows MAE's argsort of uniform
noise, so a :class:`torch.Generator` makes masks exactly reproducible.

Modes
-----
``"random"``
    Independent sensor-patches: ``ratio`` of the valid sensor-patches of each window.
``"sensor"``
    Whole sensors: ``ratio`` of the valid sensors, hidden at every time patch.
``"time"``
    Whole time blocks: ``ratio`` of the time patches, hidden on every sensor, in contiguous
    blocks of ``time_block`` patches.
``"mixed"``
    Each window draws one of the three modes above at random. A tuple of mode names draws
    among those modes only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["MASK_MODES", "SINGLE_MASK_MODES", "make_mask"]

def _noise(shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _n_hidden(ratio: float, n_valid: torch.Tensor) -> torch.Tensor:
    """round(ratio * n) clipped to [1, n - 1] (keeps one visible and one hidden element)."""
    n = torch.round(ratio * n_valid.float()).long()
    return torch.minimum(n.clamp_min(1), (n_valid - 1).clamp_min(0))


def _lowest(noise: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """True at the ``n[b]`` smallest entries of each row of ``noise`` (B, N).

    One sort, then the first ``n[b]`` places scattered back through the sort order (the
    inverse permutation): the same as ranking by a second argsort, at half the cost.
    """
    order = torch.argsort(noise, dim=-1)
    take = torch.arange(noise.shape[-1], device=noise.device) < n[:, None]
    return torch.zeros_like(take).scatter_(-1, order, take)


def _random_mask(valid, n_patches, ratio, generator):
    b, s = valid.shape
    tok_valid = valid[:, :, None].expand(b, s, n_patches).reshape(b, s * n_patches)
    noise = _noise((b, s * n_patches), generator, valid.device)
    noise = torch.where(tok_valid, noise, torch.full_like(noise, 2.0))  # invalid rank last
    n_hide = _n_hidden(ratio, tok_valid.sum(1))
    return _lowest(noise, n_hide).reshape(b, s, n_patches) & valid[:, :, None]


def _sensor_mask(valid, n_patches, ratio, generator):
    b, s = valid.shape
    noise = _noise((b, s), generator, valid.device)
    noise = torch.where(valid, noise, torch.full_like(noise, 2.0))
    n_hide = _n_hidden(ratio, valid.sum(1))
    hidden = _lowest(noise, n_hide) & valid
    return hidden[:, :, None].expand(b, s, n_patches).clone()


def _time_mask(valid, n_patches, ratio, generator, time_block):
    b, s = valid.shape
    block = max(1, min(int(time_block), n_patches - 1))
    n_blocks = -(-n_patches // block)
    patch_block = torch.arange(n_patches, device=valid.device) // block  # (P,)
    # patches per block, known from the shapes (bincount would be a data-dependent op)
    sizes = torch.full((n_blocks,), block, device=valid.device, dtype=torch.long)
    sizes[-1] = n_patches - block * (n_blocks - 1)
    noise = _noise((b, n_blocks), generator, valid.device)
    order = torch.argsort(noise, dim=-1)  # blocks in the order they get hidden
    sizes_sorted = sizes[order]  # (B, n_blocks)
    cum = sizes_sorted.cumsum(-1)
    n_hide = _n_hidden(ratio, torch.full((b,), n_patches, device=valid.device))
    take_sorted = ((cum - sizes_sorted) < n_hide[:, None]) & (cum <= n_patches - 1)
    take = torch.zeros_like(take_sorted).scatter(1, order, take_sorted)  # (B, n_blocks)
    hidden_time = take[:, patch_block]  # (B, P)
    return hidden_time[:, None, :] & valid[:, :, None]


#: The builder of each single mode: ``(valid, n_patches, ratio, generator, time_block)`` ->
#: ``(B, S, P)`` bool mask, True = hidden, hiding valid sensors only. The mode names derive
#: from this table, so a mode cannot exist without its builder.
_BUILDERS = {
    "random": lambda valid, n, ratio, gen, tb: _random_mask(valid, n, ratio, gen),
    "sensor": lambda valid, n, ratio, gen, tb: _sensor_mask(valid, n, ratio, gen),
    "time": _time_mask,
}
#: The single modes, of which ``"mixed"`` draws one per window.
SINGLE_MASK_MODES: tuple[str, ...] = tuple(_BUILDERS)
#: Masking modes accepted by :func:`make_mask`.
MASK_MODES: tuple[str, ...] = (*SINGLE_MASK_MODES, "mixed")


def make_mask(
    sensor_mask: torch.Tensor,
    n_patches: int,
    *,
    mode: str | Sequence[str] = "random",
    ratio: float = 0.5,
    generator: torch.Generator | None = None,
    time_block: int = 2,
    static: bool = False,
) -> torch.Tensor:
    """Draw a masking mask for a batch.

    Parameters
    ----------
    sensor_mask : Tensor of bool, shape (B, S)
        True for valid sensors; only these are ever hidden.
    n_patches : int
        Number of time patches ``P``.
    mode : ``"random"`` | ``"sensor"`` | ``"time"`` | ``"mixed"`` | tuple of str
        What is hidden (see the module docstring). A tuple draws one of its modes per window.
    ratio : float
        Fraction of the valid sensor-patches (``"random"``), sensors (``"sensor"``) or time
        patches (``"time"``) to hide, in (0, 1).
    generator : torch.Generator | None
        Source of randomness; the same generator state gives the same mask.
    time_block : int
        Length in patches of the contiguous blocks of ``"time"`` masking.
    static : bool
        Read nothing back from the device (for compiled or CUDA-graph steps): only the
        shapes are checked, not the windows (the caller checks that every window has a valid
        sensor; a window with too few valid sensors for a mode, e.g. one valid sensor under
        ``"sensor"``, hides nothing in that mode), and with several modes every mode's
        builder runs on every window and each window keeps its own mode's mask. Masks
        differ from the default path's for the same generator (the draws are consumed in
        another order) but follow the same rules.

    Returns
    -------
    mask : Tensor of bool, shape (B, S, P)
        True = hidden. At least one valid sensor-patch stays visible and one is hidden in
        every window.

    Notes
    -----
    With several modes, each window's mask comes from its own mode's builder alone. The
    checks and the draw of the modes read one small tensor back from the device: on a GPU,
    one synchronisation per call.
    """
    if sensor_mask.ndim != 2:
        raise ValueError(f"Expected sensor_mask of shape (B, S); got {tuple(sensor_mask.shape)}.")
    valid = sensor_mask.to(torch.bool)
    n_patches = int(n_patches)
    if n_patches < 1:
        raise ValueError(f"Invalid n_patches: expected a positive int; got {n_patches}.")
    if not 0.0 < float(ratio) < 1.0:
        raise ValueError(f"Invalid mask ratio: expected a value in (0, 1); got {ratio}.")
    if int(time_block) < 1:
        raise ValueError(f"Invalid time_block: expected a positive int; got {time_block}.")
    modes = SINGLE_MASK_MODES if mode == "mixed" else ((mode,) if isinstance(mode, str) else tuple(mode))
    bad = [m for m in modes if m not in SINGLE_MASK_MODES]
    if bad or not modes:
        raise ValueError(
            f"Invalid value for 'mode': expected one of {MASK_MODES} or a tuple of "
            f"{SINGLE_MASK_MODES}; got {mode!r}."
        )
    b = valid.shape[0]
    if b == 0:
        return valid.new_zeros(0, valid.shape[1], n_patches)
    choice = None
    if static:
        # only what the shapes tell (no read from the device): the caller checked the
        # windows; one with fewer valid sensors than a mode needs hides nothing in it
        fewest = valid.shape[1]
    else:
        n_valid = valid.sum(1)
        if len(modes) > 1:
            gen_device = generator.device if generator is not None else valid.device
            choice = torch.randint(len(modes), (b,), generator=generator, device=gen_device)
        # one device-to-host read for every check and the windows of each mode (on a GPU
        # each read is a synchronisation)
        host = torch.cat([n_valid.min()[None], choice.to(n_valid.device) if choice is not None
                          else n_valid.new_zeros(0)]).tolist()
        fewest = host[0]
        if fewest == 0:
            idx = torch.nonzero(n_valid == 0).flatten().tolist()
            raise ValueError(
                f"Window(s) {idx} of the batch have no valid sensor (sensor_mask is all "
                "False); drop them or fix their bad-channel marks."
            )
    if "random" in modes and fewest * n_patches < 2:
        raise ValueError(
            "Random masking needs at least 2 valid sensor-patches per window (one hidden, one "
            "visible); use longer windows or more sensors."
        )
    if "sensor" in modes and fewest < 2:
        raise ValueError(
            "Sensor masking needs at least 2 valid sensors per window; a window has only one. "
            "Use mode='random' or 'time' for it."
        )
    if "time" in modes and n_patches < 2:
        raise ValueError(
            "Time-block masking needs at least 2 time patches per window; got 1. Use longer "
            "windows, a shorter patch, or mode='random' / 'sensor'."
        )
    if static:
        return _static_mask(modes, valid, n_patches, ratio, generator, time_block)
    if choice is None:
        return _build(modes[0], valid, n_patches, ratio, generator, time_block)
    # each window's mask from its own mode's builder only (not all of them for every window)
    out = torch.empty(b, valid.shape[1], n_patches, dtype=torch.bool, device=valid.device)
    for i, m in enumerate(modes):
        windows = [w for w, c in enumerate(host[1:]) if c == i]
        if windows:
            idx = torch.tensor(windows, device=valid.device)
            out[idx] = _build(m, valid[idx], n_patches, ratio, generator, time_block)
    return out


def _build(mode, valid, n_patches, ratio, generator, time_block) -> torch.Tensor:
    """The mask of one single mode for windows ``valid`` (B, S)."""
    try:
        builder = _BUILDERS[mode]
    except KeyError:  # a name added to MASK_MODES without its builder
        raise ValueError(f"Masking mode {mode!r} has no builder in megfm.masking._BUILDERS; "
                         "register one there.") from None
    return builder(valid, n_patches, ratio, generator, time_block)


def _static_mask(modes, valid, n_patches, ratio, generator, time_block) -> torch.Tensor:
    """Every mode's mask for every window, each window taking its drawn mode's (no sync)."""
    if len(modes) == 1:
        return _build(modes[0], valid, n_patches, ratio, generator, time_block)
    gen_device = generator.device if generator is not None else valid.device
    choice = torch.randint(len(modes), (valid.shape[0],), generator=generator,
                           device=gen_device).to(valid.device)
    masks = torch.stack([_build(m, valid, n_patches, ratio, generator, time_block)
                         for m in modes])  # (n_modes, B, S, P)
    return masks[choice, torch.arange(valid.shape[0], device=valid.device)]
