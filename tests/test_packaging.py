"""The installed package stands alone: its default config is package data, and its command has a name."""

from __future__ import annotations

from fnmatch import fnmatch
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path

import pytest

from serve_app import cli
from serve_app.config import DEFAULT_CONFIG

ROOT = Path(__file__).resolve().parent.parent
PACKAGED_CONFIG = "configs/azure_openai_model.yaml"


def test_the_default_config_is_read_from_the_package() -> None:
    assert DEFAULT_CONFIG.read_bytes() == files("serve_app").joinpath(PACKAGED_CONFIG).read_bytes()


def test_the_default_config_is_declared_package_data() -> None:
    # An editable install reads the file from the source tree either way; a wheel holds only what is declared.
    tomllib = pytest.importorskip("tomllib", reason="the standard library reads TOML from Python 3.11")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["serve_app"]
    assert any(fnmatch(PACKAGED_CONFIG, pattern) for pattern in patterns)


def test_configs_in_the_repository_holds_the_packaged_default_config() -> None:
    assert (ROOT / PACKAGED_CONFIG).read_bytes() == files("serve_app").joinpath(PACKAGED_CONFIG).read_bytes()


def test_serve_app_is_the_command_line_of_python_m_serve_app() -> None:
    (script,) = entry_points(group="console_scripts", name="serve-app")
    assert script.load() is cli.main
