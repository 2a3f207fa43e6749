"""The software and hardware a result was measured on, for every artifact."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from .allocator import allocator_state
from .devices import cpu_name, device_name
from .errors import UsageError


def package_version(package: str) -> str | None:
    """Installed version of ``package``, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def usable_cpus() -> set[int]:
    """The logical CPUs this process may run on (its affinity; every CPU where the OS has no affinity call)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return set(affinity(0)) if affinity else set(range(os.cpu_count() or 1))


def check_thread_count(flag: str, threads: int) -> None:
    """A thread count from ``flag``: at least 1, at most the CPUs this process may use (more threads than CPUs
    only wait on each other: 999 threads on 2 CPUs ran for minutes)."""
    if threads < 1:
        raise UsageError(f"{flag} {threads}: must be at least 1")
    cpus = len(usable_cpus())
    if threads > cpus:
        raise UsageError(f"{flag} {threads}: this process may run on {cpus} CPU(s) (its affinity); more threads "
                         "than CPUs only contend for them")


@functools.cache
def accelport_version() -> str | None:
    """accelport's version: the installed package's, or, run from a checkout as the README does (not installed),
    pyproject's version with the git commit (``0.1.0+git.59280a4``, ``.dirty`` with uncommitted changes), so a
    report still says which code made it."""
    installed = package_version("accelport")
    if installed is not None:
        return installed
    root = Path(__file__).resolve().parent.parent
    try:
        declared = re.search(r'^version\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(), re.MULTILINE)
    except OSError:
        return None
    if declared is None:
        return None
    try:
        git = ["git", "-C", str(root)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return declared.group(1)
    return f"{declared.group(1)}+git.{commit}" + (".dirty" if dirty else "")


def describe_environment(device: torch.device) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": package_version("torchvision"),
        "timm": package_version("timm"),
        # the installed wheel's, else the module's own (the simulated NPU's "0.0.0+accelport.simulated")
        "torch_npu": package_version("torch_npu") or getattr(sys.modules.get("torch_npu"), "__version__", None),
        "numpy": package_version("numpy"),
        "safetensors": package_version("safetensors"),
        "huggingface_hub": package_version("huggingface_hub"),
        "accelport": accelport_version(),
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_isa": cpu_isa(),
        "cpu_id": cpu_id(),
        "torch_threads": torch.get_num_threads(),
        "allocator": allocator_state(),
        "executable": sys.executable,
    }


# /proc/cpuinfo flag -> the name people use for it, in the order the tiers build on each other.
_ISA_FLAGS = {"avx2": "AVX2", "fma": "FMA", "avx_vnni": "AVX-VNNI", "avx512f": "AVX-512",
              "avx512_vnni": "AVX-512 VNNI", "avx512_bf16": "AVX-512 BF16", "avx512_fp16": "AVX-512 FP16",
              "amx_tile": "AMX", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8", "amx_fp16": "AMX-FP16"}


def parse_isa(flags_line: str) -> dict[str, Any]:
    """The vector/matrix ISA a ``/proc/cpuinfo`` ``flags`` line offers, and what it means for each precision.

    ``bf16_arithmetic``: the CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX-BF16); without it bf16 is
    emulated through fp32 conversions and runs far slower than fp32. ``int8_dot``: a VNNI or AMX-INT8 dot
    product, which int8 kernels need to beat fp32. ``name``: the widest tier, as used in reports.
    """
    flags = set(flags_line.replace("flags", "").replace(":", " ").split())
    present = [name for flag, name in _ISA_FLAGS.items() if flag in flags]
    tiers = [("AMX-BF16/INT8", {"amx_bf16", "amx_int8"}), ("AVX-512 BF16", {"avx512_bf16"}),
             ("AVX-512 VNNI", {"avx512_vnni"}), ("AVX-512", {"avx512f"}), ("AVX2", {"avx2"})]
    name = next((tier for tier, needed in tiers if needed <= flags), "below AVX2")
    return {"name": name, "extensions": present,
            "bf16_arithmetic": bool(flags & {"avx512_bf16", "amx_bf16"}),
            "fp16_arithmetic": bool(flags & {"avx512_fp16", "amx_fp16"}),
            "int8_dot": bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})}


def cpu_isa() -> dict[str, Any]:
    """``parse_isa`` of this machine's first ``flags`` line (Linux; elsewhere only torch's view), with torch's
    own ``get_cpu_capability()`` (the kernels ATen dispatches to)."""
    line = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            line = next((row for row in cpuinfo if row.startswith("flags")), "")
    except OSError:
        pass
    isa = parse_isa(line) if line else {"name": "unknown", "extensions": [], "bf16_arithmetic": None,
                                        "fp16_arithmetic": None, "int8_dot": None}
    return {**isa, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


# (vendor, family, first model, last model) -> microarchitecture, for the CPU kinds a cloud VM's bare "AMD EPYC" or
# "Intel Xeon" model name hides. Only families whose model ranges are public and unambiguous; anything else is None.
_MICROARCHITECTURES = (
    ("AuthenticAMD", 0x17, 0x00, 0xFF, "Zen / Zen+ / Zen 2"),
    ("AuthenticAMD", 0x19, 0x00, 0x0F, "Zen 3"), ("AuthenticAMD", 0x19, 0x20, 0x5F, "Zen 3"),
    ("AuthenticAMD", 0x19, 0x10, 0x1F, "Zen 4"), ("AuthenticAMD", 0x19, 0x60, 0x7F, "Zen 4"),
    ("AuthenticAMD", 0x19, 0xA0, 0xAF, "Zen 4"),
    ("AuthenticAMD", 0x1A, 0x00, 0x2F, "Zen 5"), ("AuthenticAMD", 0x1A, 0x40, 0x4F, "Zen 5"),
    ("AuthenticAMD", 0x1A, 0x60, 0x7F, "Zen 5"),
    ("GenuineIntel", 6, 85, 85, "Skylake-SP / Cascade Lake / Cooper Lake"),
    ("GenuineIntel", 6, 106, 106, "Ice Lake-SP"), ("GenuineIntel", 6, 108, 108, "Ice Lake-D"),
    ("GenuineIntel", 6, 143, 143, "Sapphire Rapids"), ("GenuineIntel", 6, 207, 207, "Emerald Rapids"),
    ("GenuineIntel", 6, 173, 174, "Granite Rapids"),
)


def parse_cpu_id(cpuinfo: str) -> dict[str, Any]:
    """Vendor, family, model and stepping of the first processor in a ``/proc/cpuinfo`` text, and the
    microarchitecture they name where known.

    Why: in a VM the model name is often just "AMD EPYC", the same for a Zen 4 and a Zen 5, whose fp32 peaks differ
    almost twofold (Zen 5 executes AVX-512 at full width). Without this, benchmarks from two CPU kinds read as one
    and a saved pick from one would be reused on the other.
    """
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block only
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    arm = "vendor_id" not in fields and "CPU implementer" in fields  # Arm names implementer, architecture, part
    keys = ("CPU architecture", "CPU part", "CPU revision") if arm else ("cpu family", "model", "stepping")
    family, model, stepping = (_integer(fields.get(key, "")) for key in keys)
    vendor = f"Arm implementer {fields['CPU implementer']}" if arm else fields.get("vendor_id")
    micro = next((name for v, f, first, last, name in _MICROARCHITECTURES
                  if v == vendor and f == family and model is not None and first <= model <= last), None)
    return {"vendor": vendor, "family": family, "model": model, "stepping": stepping, "microarchitecture": micro}


def _integer(text: str) -> int | None:
    """A decimal or 0x-prefixed number as /proc/cpuinfo writes them; None for anything else."""
    text = text.strip()
    if re.fullmatch(r"[0-9]+", text):
        return int(text, 10)
    return int(text, 16) if re.fullmatch(r"0[xX][0-9a-fA-F]+", text) else None


def cpu_id() -> dict[str, Any]:
    """``parse_cpu_id`` of this machine (Linux); every field None where ``/proc/cpuinfo`` cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return parse_cpu_id(cpuinfo.read())
    except OSError:
        return parse_cpu_id("")


def allocator_text(environment: dict[str, Any]) -> str:
    """The allocator line of a report; "not recorded" for a document written before accelport recorded it."""
    allocator = environment.get("allocator")
    settings = allocator.get("settings") if isinstance(allocator, dict) else None
    return settings if isinstance(settings, str) else "not recorded"


def cpu_kind_text(environment: dict[str, Any]) -> str:
    """``AMD EPYC (Zen 5; AMD family 26 model 2)``: the CPU as a report names it, model name and identity."""
    ident = environment.get("cpu_id")
    if not isinstance(ident, dict) or ident.get("family") is None:
        return str(environment.get("cpu"))
    vendor = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}.get(ident.get("vendor") or "",
                                                                  ident.get("vendor") or "CPU")
    detail = f"{vendor} family {ident['family']}" + (f" model {ident['model']}" if ident.get("model") is not None
                                                     else "")
    return (f"{environment.get('cpu')} ("
            + (f"{ident['microarchitecture']}; " if ident.get("microarchitecture") else "") + detail + ")")
