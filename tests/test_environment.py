"""The environment block of every artifact: which accelport made it, installed or run from a checkout."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch

from accelport import environment

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fresh_version():
    environment.accelport_version.cache_clear()
    yield
    environment.accelport_version.cache_clear()


def test_an_installed_accelport_reports_the_installed_version(monkeypatch):
    monkeypatch.setattr(environment, "package_version", lambda name: "9.8.7" if name == "accelport" else None)
    assert environment.accelport_version() == "9.8.7"


def test_a_checkout_reports_pyproject_version_and_the_commit(monkeypatch):
    monkeypatch.setattr(environment, "package_version", lambda name: None)
    declared = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    version = environment.accelport_version()
    assert re.fullmatch(rf"{re.escape(declared)}\+git\.{head}(\.dirty)?", version), version
    assert environment.describe_environment(torch.device("cpu"))["accelport"] == version


def test_without_git_the_checkout_reports_pyproject_version_alone(monkeypatch):
    def no_git(*_args, **_kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(environment, "package_version", lambda name: None)
    monkeypatch.setattr(environment.subprocess, "run", no_git)
    assert re.fullmatch(r"\d+\.\d+\.\d+", environment.accelport_version())
