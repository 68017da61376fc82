"""`megfm pretrain`'s settings are generated from PretrainConfig: one option per field."""

from __future__ import annotations

import dataclasses

import pytest

from megfm.cli._options import read_options
from megfm.cli.main import build_parser, main
from megfm.training.config import PretrainConfig, field_docs


def _pretrain_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["pretrain"]


def test_every_field_is_an_option_with_its_default_and_doc():
    docs = field_docs(PretrainConfig)
    assert list(docs) == [f.name for f in dataclasses.fields(PretrainConfig)]
    assert all(docs.values())
    parser = _pretrain_parser()
    options = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(PretrainConfig):
        action = options[f.name]
        assert action.option_strings[0] == "--" + f.name.replace("_", "-")
        assert action.default == f.default
        assert action.help.replace("%%", "%").startswith(docs[f.name])
    args = parser.parse_args(["STORE", "--out", "RUN"])
    assert read_options(args, PretrainConfig) == PretrainConfig()


def test_options_convert_to_the_field_types():
    args = _pretrain_parser().parse_args([
        "STORE", "--out", "RUN", "--states", "rest,auditory", "--devices", "0,1",
        "--gradient-clip-val", "none", "--no-pin-memory", "--num-workers", "2",
        "--prefetch-factor", "4", "--balance-states", "--mask-mode", "sensor", "--lr", "3e-4",
        "--checkpoint-minutes", "30", "--precision", "bf16-mixed"])
    config = read_options(args, PretrainConfig)
    assert config == PretrainConfig(
        states=("rest", "auditory"), devices=(0, 1), gradient_clip_val=None, pin_memory=False,
        num_workers=2, prefetch_factor=4, balance_states=True, mask_mode="sensor", lr=3e-4,
        checkpoint_minutes=30.0, precision="bf16-mixed")


def test_help_shows_each_setting(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(PretrainConfig):
        assert "--" + f.name.replace("_", "-") in text
    assert "min(4, CPUs per device process - 2)" in text
    assert "One of random, sensor, time, mixed" in text


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "Invalid value for 'batch_size': expected an integer >= 1; got 0."),
    (["--val-fraction", "1"], "Invalid value for 'val_fraction'"),
    (["--devices", "zero"], "Invalid value for 'devices'"),
    (["--precision", "8-bit"], "Invalid value for 'precision'"),
])
def test_a_bad_setting_is_one_line_naming_the_field(tmp_path, capsys, argv, message):
    from cli_helpers import one_error_line

    code = main(["pretrain", str(tmp_path / "store"), "--out", str(tmp_path / "run"), *argv])
    assert code == 1
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()
