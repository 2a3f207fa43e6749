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


# First processor blocks of /proc/cpuinfo, as recorded on the project's machines (trimmed) and one unknown kind.
ZEN5_VM = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n" \
          "stepping\t: 1\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
ZEN4_VM = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n" \
          "stepping\t: 0\n"
SAPPHIRE_RAPIDS = ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
                   "model name\t: Intel(R) Xeon(R) Platinum 8480C\nstepping\t: 8\n")
UNKNOWN = "processor\t: 0\nvendor_id\t: HygonGenuine\ncpu family\t: 24\nmodel\t\t: 1\n"
ZEN6 = "vendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 80\n"  # family 0x1A, model 0x50: Linux says Zen 6
NEOVERSE_N1 = ("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\n"
               "CPU part\t: 0xd0c\nCPU revision\t: 1\n")


@pytest.mark.parametrize("text, expected", [
    (ZEN5_VM, ("AuthenticAMD", 26, 2, 1, "Zen 5")),
    (ZEN4_VM, ("AuthenticAMD", 25, 17, 0, "Zen 4")),
    (SAPPHIRE_RAPIDS, ("GenuineIntel", 6, 143, 8, "Sapphire Rapids")),
    (UNKNOWN, ("HygonGenuine", 24, 1, None, None)),
    (ZEN6, ("AuthenticAMD", 26, 80, None, None)),  # not every family 26 is a Zen 5
    (NEOVERSE_N1, ("Arm implementer 0x41", 8, 0xD0C, 1, None)),  # Arm names its cores by implementer and part
    ("vendor_id: X\ncpu family: \u00b2\nmodel: 7\n", ("X", None, 7, None, None)),  # not a number: unknown, no crash
    ("vendor_id: X\ncpu family: 2_6\nmodel: -3\nstepping: 0x1\n", ("X", None, None, 1, None)),  # what int() accepts
    ("", (None, None, None, None, None)),
])
def test_the_cpu_kind_behind_a_bare_model_name_is_recorded(text, expected):
    """Two CPU kinds a VM both calls "AMD EPYC" (a Zen 4 and a Zen 5: fp32 peaks almost 2x apart) are told apart by
    the first processor's family and model; a kind not in the table keeps its numbers and no name."""
    ident = environment.parse_cpu_id(text)
    assert tuple(ident[key] for key in ("vendor", "family", "model", "stepping", "microarchitecture")) == expected


def test_reports_name_the_cpu_kind_with_its_identity():
    env = {"cpu": "AMD EPYC", "cpu_id": environment.parse_cpu_id(ZEN5_VM)}
    assert environment.cpu_kind_text(env) == "AMD EPYC (Zen 5; AMD family 26 model 2)"
    assert environment.cpu_kind_text({"cpu": "AMD EPYC", "cpu_id": environment.parse_cpu_id(UNKNOWN)}) == (
        "AMD EPYC (HygonGenuine family 24 model 1)")
    assert environment.cpu_kind_text({"cpu": "Apple M3"}) == "Apple M3"
    assert environment.cpu_kind_text({"cpu": "AMD EPYC", "cpu_id": "x"}) == "AMD EPYC"  # a hand-edited document
