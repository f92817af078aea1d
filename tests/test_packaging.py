"""What the wheel declares matches the code: console scripts, extras, bundled recipes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from poet import console
from poet.errors import PoetError
from poet.extras import EXTRAS
from poet.train.config import bundled_recipes, parse_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]


def test_every_console_script_is_a_launcher_of_the_command_table():
    scripts = PROJECT["scripts"]
    assert set(scripts) == set(console.COMMANDS)
    for name, target in scripts.items():
        module, function = target.split(":")
        assert module == "poet.console" and function == name.replace("-", "_")
        launcher = getattr(console, function)
        assert launcher.func is console.launch and launcher.args == (name,)
        target_module = console.COMMANDS[name].target.split(":")[0]
        assert target_module.startswith("poet.")


def test_every_extra_a_command_needs_is_declared_in_pyproject():
    declared = set(PROJECT["optional-dependencies"])
    assert set(EXTRAS) <= declared
    for command in console.COMMANDS.values():
        assert set(command.extras) <= declared


def test_the_bundled_recipe_loads_by_name_from_the_package():
    assert "synthetic-small" in bundled_recipes()
    config = parse_config(["--config", "synthetic-small", "--data", "somewhere"])
    assert config.keypoint_refinement and config.input_size == [128, 128]


def test_an_unknown_config_names_the_bundled_recipes():
    with pytest.raises(PoetError, match=r"config file no-such-recipe not found .*synthetic-small"):
        parse_config(["--config", "no-such-recipe"])
