"""The public face: every advertised name resolves, and the CLI lists its commands."""

import importlib

import pytest

import megfm
from megfm.cli.main import COMMANDS, build_parser, main


@pytest.mark.parametrize("name", sorted(megfm._LAZY_ATTRS))
def test_public_names_resolve(name):
    assert getattr(megfm, name) is not None


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = megfm.nope


def test_version_matches_package_metadata():
    assert megfm.__version__ == importlib.import_module("megfm._version").__version__


def test_cli_has_every_command_with_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for name, subparser in sub.choices.items():
        for action in subparser._actions:
            if action.dest != "help":
                assert action.help, f"megfm {name}: option {action.dest} has no help text"
    assert main([]) == 2  # no command: prints help, exits 2
    assert "simulate" in capsys.readouterr().out
