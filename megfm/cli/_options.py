"""Command-line options generated from a settings dataclass (one option per field).

Each field of, e.g., :class:`megfm.PretrainConfig` becomes ``--field-name``: its type gives
the conversion, its default the default, and its description in the class docstring the help. So the
function, the command line and ``run.json`` share one list of settings.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ._choices import registry

__all__ = ["MODEL_HELP", "add_options", "read_options"]

#: Help of every argument that names a pretrained model (resolved by
#: :func:`megfm.models.checkpoint.resolve_checkpoint`).
MODEL_HELP = ("pretrained model: the run folder of `megfm pretrain --out RUN`, or a "
              "checkpoint folder (RUN/model: config.json + model.safetensors)")
STORE_HELP = ("store folder written by `megfm prepare`, or a LitData export of one "
              "(`megfm export`; a folder or an object-store URI such as s3://bucket/prefix)")


def _optional(convert):
    """Also accept ``none`` (any case) for a field whose ``None`` means off or automatic."""
    def parse(text: str):
        return None if text.strip().lower() == "none" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _names(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names; got {text!r}")
    return names


# annotation (as written in the dataclass) -> (conversion of the option's text, metavar)
_CONVERT = {
    "int": (int, "N"),
    "float": (float, "X"),
    "str": (str, "NAME"),
    "int | None": (_optional(int), "N"),
    "float | None": (_optional(float), "X"),
    "str | None": (_optional(str), "NAME"),
    "tuple[str, ...] | None": (_names, "A,B,..."),
    # "2", "auto" or "0,1": the dataclass reads the text
    "int | str | tuple[int, ...]": (str, "N"),
}


def add_options(parser: argparse.ArgumentParser, cls: type, docs: dict[str, str], *,
                title: str) -> None:
    """Add one ``--option`` per field of the dataclass ``cls`` (in a group called ``title``).

    ``docs`` gives each field's help. Booleans get ``--name`` / ``--no-name``; fields whose
    ``None`` means "automatic" or "off" also take the text ``none``. Defaults are those of
    ``cls``.
    """
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        doc = docs[f.name]
        default = f.default
        kwargs: dict[str, Any] = {"dest": f.name, "default": default}
        if f.type in ("bool", "bool | None"):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            if f.type not in _CONVERT:
                raise TypeError(f"No command-line conversion for {cls.__name__}.{f.name} "
                                f"of type {f.type}; add one to megfm.cli._options._CONVERT.")
            kwargs["type"], metavar = _CONVERT[f.type]
            choices = f.metadata.get("choices")
            if choices is not None:
                kwargs["choices"] = registry(*choices)
                doc += " One of %(choices)s."
            kwargs["metavar"] = f.metadata.get("metavar") or metavar
        shown = ",".join(default) if isinstance(default, tuple) else default
        kwargs["help"] = f"{doc} (default: {shown})".replace("%", "%%").replace(
            "%%(choices)s", "%(choices)s")
        group.add_argument(flag, **kwargs)


def read_options(args: argparse.Namespace, cls: type) -> Any:
    """The ``cls`` instance that the parsed options of :func:`add_options` describe."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
