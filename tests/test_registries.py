"""Every list of names (presets, poolings, mask modes, sensor types) comes from one registry."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from megfm.cli.main import build_parser
from megfm.data.geometry import SENSOR_TYPES
from megfm.embedding import POOLINGS, WINDOW_POOLINGS
from megfm.masking import MASK_MODES, SINGLE_MASK_MODES
from megfm.models import PRESETS


def _choices(command: str, option: str) -> tuple[str, ...]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    return tuple(action.choices)


def test_cli_choices_are_the_registries():
    assert _choices("pretrain", "--preset") == tuple(PRESETS)
    assert _choices("pretrain", "--mask-mode") == MASK_MODES
    assert _choices("embed", "--pooling") == POOLINGS


def test_cli_refuses_names_outside_the_registries(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "store", "--out", "run", "--preset", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    args = build_parser().parse_args(["pretrain", "store", "--out", "run", "--preset",
                                      list(PRESETS)[-1], "--mask-mode", MASK_MODES[-1]])
    assert (args.preset, args.mask_mode) == (list(PRESETS)[-1], MASK_MODES[-1])


def test_building_the_parser_does_not_import_torch():
    """The registries are read lazily: `megfm --help` must stay fast."""
    code = ("import sys; from megfm.cli.main import build_parser; build_parser(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_derived_names_follow_their_registry(monkeypatch):
    assert SINGLE_MASK_MODES == tuple(m for m in MASK_MODES if m != "mixed")
    assert set(WINDOW_POOLINGS) < set(POOLINGS) and "state_concat" not in WINDOW_POOLINGS
    from megfm.evaluate import reconstruction

    assert reconstruction._MODES is SINGLE_MASK_MODES
    # a preset added to PRESETS is accepted wherever a preset name is
    monkeypatch.setitem(PRESETS, "tiny_copy", PRESETS["tiny"])
    from megfm.embedding import load_model
    from megfm.training.pretrain import _resolve_config

    assert load_model("tiny_copy").config == load_model("tiny").config
    assert _resolve_config("tiny_copy").dim == PRESETS["tiny"]["dim"]
    with pytest.raises(ValueError, match="expected one of .*'tiny_copy'"):
        _resolve_config("huge")


def test_tables_per_sensor_type_cover_the_registry():
    from megfm.data.geometry import _INFO_COIL
    from megfm.evaluate.reconstruction import _SI
    from megfm.explain.plotting import _TYPE_TITLES
    from megfm.models import ModelConfig

    for table in (_INFO_COIL, _SI, _TYPE_TITLES):
        assert tuple(table) == SENSOR_TYPES
    assert ModelConfig().n_sensor_types == len(SENSOR_TYPES)
