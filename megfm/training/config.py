"""PretrainConfig: every setting of a pretraining run in one dataclass.

One list of settings (nanoGPT's ``config_keys``): :func:`megfm.pretrain` takes it (or its
fields as keywords), ``megfm pretrain`` builds one option per field from the field's type,
default and description (the class docstring), and ``run.json`` records its
:meth:`PretrainConfig.to_dict` with every automatic choice made
(:meth:`PretrainConfig.resolved`).

This module imports no torch at import time, so the command line can be built from it fast.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from numbers import Integral, Real
from typing import Any

__all__ = ["PRECISIONS", "PretrainConfig", "field_docs"]

#: Lightning precisions accepted by ``PretrainConfig.precision`` besides ``"auto"``.
PRECISIONS: tuple[str, ...] = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true",
                               "64-true", "32", "16", "bf16", "64")

#: Keys of the ``settings`` of run.json written by older megfm versions that are no longer
#: settings (``world_size`` is now a top-level key of run.json).
_LEGACY_KEYS = frozenset({"world_size"})


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of :func:`megfm.pretrain` (optimiser, task, data, hardware, checkpoints).

    The description of each field below is also the help of its ``megfm pretrain`` option
    (:func:`field_docs`). ``None`` in a field marked "auto" is decided for this machine when
    the run starts (:meth:`resolved`), and ``run.json`` records the decision.

    Parameters
    ----------
    max_steps : int
        Total optimiser steps, including those done before a resume.
    batch_size : int
        Windows per device and step.
    lr : float
        Peak AdamW learning rate (linear warm-up, then cosine decay).
    weight_decay : float
        AdamW weight decay (not on biases, norms and 1-d parameters).
    warmup_steps : int | None
        Linear warm-up steps; None (auto): 5 % of max_steps, at least 1.
    accumulate : int
        Gradient accumulation: batches per optimiser step.
    gradient_clip_val : float | None
        Clip the gradient norm at this value; None: no clipping.
    mask_mode : str | None
        Masking mode of the pretraining task; None: the model config's.
    mask_ratio : float | None
        Fraction of sensor-patches hidden, in (0, 1); None: the model config's.
    states : tuple of str | None
        Keep only windows of these states (comma-separated on the command line); None: all.
    subjects : tuple of str | None
        Pretrain on these subjects only; None: all (e.g. hold others out for
        megfm.evaluate_reconstruction).
    balance_states : bool
        Sample the states equally often.
    val_fraction : float
        Fraction of subjects held out for validation, in [0, 1) (split by subject).
        Validation runs after every epoch and after the last step.
    num_workers : int | None
        DataLoader worker processes per device; None (auto): min(4, CPUs per device
        process - 2), at least 0. Workers read and collate the next batches while the step
        runs, but each batch then crosses shared memory: they pay only with cores to spare
        beside the training loop's own (on 2 cores, 0 workers loaded 1,464 windows/s, 1
        worker 718; benchmarks/results/store.json), and each keeps its own shard handles and
        memory, so more than 4 buy little on a page-cached store.
    pin_memory : bool | None
        Copy batches into page-locked memory, which makes host-to-GPU copies faster and
        asynchronous; None (auto): on with CUDA, off elsewhere (no use without a GPU).
    prefetch_factor : int
        Batches each worker loads in advance (PyTorch's default); unused with num_workers 0.
    devices : int | str | tuple of int
        Devices per machine (GPUs or CPU processes): a number, 'auto' (all), or GPU ids
        such as '0,1'.
    num_nodes : int
        Machines of a multi-node run (devices processes on each); the cluster environment
        (SLURM, torchrun) gives the addresses.
    accelerator : str
        Lightning accelerator: cpu, gpu, cuda, mps or auto.
    strategy : str
        Lightning strategy, e.g. ddp for several processes.
    precision : str
        Numeric precision: auto (bf16-mixed on CUDA with bf16, 32-true elsewhere), 32-true,
        bf16-mixed, 16-mixed, ...
    compile : bool
        torch.compile the model whole on its static-shape path (the first step then
        compiles for about a minute); meant for GPUs: on this project's CPU the step is
        slower (x0.77, docs/pretraining.md).
    checkpoint_every : int | None
        Save last.ckpt every this many steps; None (auto): max(1, max_steps // 10).
    checkpoint_minutes : float | None
        Also save last.ckpt at the first step at least this many minutes after the previous
        save, so a run on slow steps loses at most about this much work; None: by step only.
    keep_checkpoints : int
        Training checkpoints kept: last.ckpt and the K-1 before it (previous-step=N.ckpt),
        so a resume falls back to an older one when the newest is damaged.
    log_every_n_steps : int
        Logging interval of the training loss (steps).
    seed : int
        Seed of the data split, initialisation, masks and sampling.
    """

    # --- optimisation ----------------------------------------------------------------------
    max_steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int | None = None
    accumulate: int = 1
    gradient_clip_val: float | None = 1.0
    # --- pretraining task ------------------------------------------------------------------
    # metadata: the option's metavar, and a registry (module, name) of its choices that the
    # command line reads only when it checks a value (megfm.cli._choices.registry)
    mask_mode: str | None = field(default=None, metadata={
        "metavar": "MODE", "choices": ("megfm.masking", "MASK_MODES")})
    mask_ratio: float | None = None
    # --- data ------------------------------------------------------------------------------
    states: tuple[str, ...] | None = None
    subjects: tuple[str, ...] | None = None
    balance_states: bool = False
    val_fraction: float = 0.2
    num_workers: int | None = None
    pin_memory: bool | None = None
    prefetch_factor: int = 2
    # --- hardware --------------------------------------------------------------------------
    devices: int | str | tuple[int, ...] = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    strategy: str = "auto"
    precision: str = "auto"
    compile: bool = False
    # --- checkpoints and logs --------------------------------------------------------------
    checkpoint_every: int | None = None
    checkpoint_minutes: float | None = field(default=None, metadata={"metavar": "MINUTES"})
    keep_checkpoints: int = field(default=3, metadata={"metavar": "K"})
    log_every_n_steps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise through the dataclass's own setter
        for name in ("max_steps", "batch_size", "accumulate", "num_nodes", "keep_checkpoints",
                     "log_every_n_steps", "prefetch_factor"):
            set_(self, name, _integer(name, getattr(self, name), minimum=1))
        for name in ("warmup_steps", "num_workers"):
            value = getattr(self, name)
            set_(self, name, None if value is None else _integer(name, value, minimum=0))
        if self.checkpoint_every is not None:
            set_(self, "checkpoint_every", _integer("checkpoint_every", self.checkpoint_every,
                                                    minimum=1))
        set_(self, "seed", _integer("seed", self.seed, minimum=0))
        set_(self, "lr", _number("lr", self.lr, "a positive number", lambda v: v > 0))
        set_(self, "weight_decay", _number("weight_decay", self.weight_decay,
                                           "a number >= 0", lambda v: v >= 0))
        set_(self, "val_fraction", _number("val_fraction", self.val_fraction,
                                           "a number in [0, 1)", lambda v: 0 <= v < 1))
        for name, what, ok in (("gradient_clip_val", "a positive number or None", lambda v: v > 0),
                               ("checkpoint_minutes", "a positive number or None", lambda v: v > 0),
                               ("mask_ratio", "a number in (0, 1) or None", lambda v: 0 < v < 1)):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, _number(name, value, what, ok))
        for name, allowed in (("balance_states", (True, False)), ("compile", (True, False)),
                              ("pin_memory", (True, False, None))):
            value = getattr(self, name)
            if not any(value is a for a in allowed):
                raise TypeError(f"Invalid value for '{name}': expected "
                                f"{' or '.join(map(str, allowed))}; got {value!r}.")
        for name in ("states", "subjects"):
            set_(self, name, _names(name, getattr(self, name)))
        set_(self, "devices", _devices(self.devices))
        for name in ("accelerator", "strategy"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise TypeError(f"Invalid value for '{name}': expected a name such as 'auto'; "
                                f"got {value!r}.")
        precision = str(self.precision) if isinstance(self.precision, int) else self.precision
        if precision != "auto" and precision not in PRECISIONS:
            raise ValueError(f"Invalid value for 'precision': expected 'auto' or one of "
                             f"{', '.join(PRECISIONS)}; got {self.precision!r}.")
        set_(self, "precision", precision)
        if self.mask_mode is not None:
            from ..masking import MASK_MODES  # imports torch: only when a mode is given

            if self.mask_mode not in MASK_MODES:
                raise ValueError(f"Invalid value for 'mask_mode': expected one of "
                                 f"{', '.join(MASK_MODES)} or None; got {self.mask_mode!r}.")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_settings(cls, config: PretrainConfig | None = None, /,
                      **settings: Any) -> PretrainConfig:
        """``config`` (default: all defaults) with some fields replaced.

        Parameters
        ----------
        config : PretrainConfig | None
            Starting point.
        **settings
            Fields of :class:`PretrainConfig` to replace.

        Returns
        -------
        config : PretrainConfig
        """
        if config is not None and not isinstance(config, cls):
            raise TypeError(f"Invalid value for 'config': expected a megfm.PretrainConfig or "
                            f"None; got {type(config).__name__}.")
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"Unknown pretraining setting(s) {', '.join(map(repr, unknown))}; "
                            f"the settings are the fields of megfm.PretrainConfig: "
                            f"{', '.join(f.name for f in fields(cls))}.")
        return cls(**settings) if config is None else replace(config, **settings)

    @classmethod
    def from_dict(cls, settings: dict) -> PretrainConfig:
        """Rebuild a config from :meth:`to_dict` (also the ``settings`` of an older run.json).

        Fields missing from ``settings`` (added in later versions) take their defaults.
        """
        kept = {k: v for k, v in settings.items() if k not in _LEGACY_KEYS}
        return cls.from_settings(**kept)

    def to_dict(self) -> dict:
        """The settings as plain JSON types (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    # ------------------------------------------------------------------ automatic choices
    def resolved(self) -> PretrainConfig:
        """This config with every automatic choice made for this machine.

        ``warmup_steps``, ``checkpoint_every``, ``num_workers``, ``pin_memory`` and
        ``precision`` get the values described in their docs (e.g. ``precision="auto"``
        becomes ``"bf16-mixed"`` on a CUDA device with bf16 and ``"32-true"`` elsewhere).

        Returns
        -------
        config : PretrainConfig
        """
        from ._hardware import device_type, resolve_precision  # imports torch

        kind = device_type(self.accelerator)
        workers = self.num_workers
        if workers is None:
            workers = max(0, min(4, _cpus() // _processes_per_node(self.devices, kind) - 2))
        return replace(
            self,
            warmup_steps=(default_warmup_steps(self.max_steps) if self.warmup_steps is None
                          else self.warmup_steps),
            checkpoint_every=(max(1, self.max_steps // 10) if self.checkpoint_every is None
                              else self.checkpoint_every),
            num_workers=workers,
            pin_memory=kind == "cuda" if self.pin_memory is None else self.pin_memory,
            precision=resolve_precision(self.precision, self.accelerator),
        )


def default_warmup_steps(max_steps: int) -> int:
    """Warm-up of the learning rate when none is given: 5 % of the steps, at least one."""
    return max(1, int(0.05 * max_steps))


def _integer(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"Invalid value for '{name}': expected an integer >= {minimum}; "
                         f"got {value!r}.")
    return int(value)


def _number(name: str, value: Any, what: str, ok) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or not ok(value):
        raise ValueError(f"Invalid value for '{name}': expected {what}; got {value!r}.")
    return float(value)


def _names(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    try:
        names = tuple(value)
    except TypeError:
        names = None
    if not names or not all(isinstance(v, str) and v for v in names):
        raise ValueError(f"Invalid value for '{name}': expected a non-empty list of names or "
                         f"None; got {value!r}.")
    return names


def _devices(value: Any) -> int | str | tuple[int, ...]:
    """``devices`` as a count (``-1``: all), ``"auto"``, or device ids; text as on the CLI."""
    if isinstance(value, str) and value != "auto":
        parts = value.split(",")
        if all(p.strip().lstrip("-").isdigit() for p in parts):
            value = int(parts[0]) if len(parts) == 1 else tuple(int(p) for p in parts)
    if value == "auto":
        return value
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, Integral) and not isinstance(v, bool) and v >= 0 for v in value):
        return tuple(int(v) for v in value)
    if isinstance(value, Integral) and not isinstance(value, bool) and (value >= 1 or value == -1):
        return int(value)
    raise ValueError(f"Invalid value for 'devices': expected a number >= 1, -1 or 'auto' (all), "
                     f"or device ids such as '0,1'; got {value!r}.")


def _cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _processes_per_node(devices: int | str | tuple[int, ...], kind: str) -> int:
    """Training processes per machine that ``devices`` starts (one per device)."""
    if isinstance(devices, tuple):
        return len(devices)
    if devices in ("auto", -1):
        if kind == "cuda":
            import torch

            return max(1, torch.cuda.device_count())
        return 1  # Lightning's "auto" on a CPU or MPS is one process
    return int(devices)


def field_docs(cls: type = PretrainConfig) -> dict[str, str]:
    """The description of each field in the numpydoc ``Parameters`` section of ``cls``.

    The class docstring is the one place a setting is described: the API reference renders
    it and the command line takes each option's help from here.

    Returns
    -------
    docs : dict of str to str
        Field name -> its description on one line.
    """
    text = inspect.cleandoc(cls.__doc__ or "")
    section = text.split("Parameters\n----------\n", 1)[-1]
    docs: dict[str, list[str]] = {}
    name = None
    for line in section.splitlines():
        if line and not line.startswith(" "):
            if line.startswith("-"):  # the underline of the next section
                break
            name = line.split(" : ")[0].strip()
            docs[name] = []
        elif name is not None and line.strip():
            docs[name].append(line.strip())
    return {k: " ".join(v) for k, v in docs.items()}
