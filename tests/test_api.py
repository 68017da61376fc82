"""The public face: every advertised name resolves, and the CLI lists its commands."""

import importlib
import subprocess
import sys
import types

import pytest

import megfm
from megfm.cli.main import COMMANDS, build_parser, main

_PACKAGES = ("megfm", "megfm.evaluate", "megfm.explain", "megfm.training")


@pytest.mark.parametrize("name", sorted(megfm.__all__))
def test_public_names_resolve(name):
    assert getattr(megfm, name) is not None


@pytest.mark.parametrize("package", _PACKAGES[1:])
def test_public_names_of_each_lazy_package_resolve(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert sorted(dir(module)) == sorted(module.__all__)


def test_a_function_keeps_its_name_over_its_module():
    # the module of the same name is imported first, as a test or a user may do
    import megfm.evaluate.finetune  # noqa: F401
    import megfm.training.pretrain  # noqa: F401

    for function in (megfm.pretrain, megfm.training.pretrain, megfm.finetune,
                     megfm.evaluate.finetune):
        assert isinstance(function, types.FunctionType)


def test_importing_the_packages_and_the_settings_loads_no_torch():
    code = ("import sys; import megfm, megfm.evaluate, megfm.explain, megfm.training; "
            "from megfm.training.config import PretrainConfig; PretrainConfig(max_steps=5); "
            "print('torch' in sys.modules, 'lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="nope"):
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
