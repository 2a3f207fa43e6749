"""The allocator accelport sets for its process (accelport/allocator.py): fault-free, recorded, opt-out."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from accelport import allocator
from accelport.cli import main

# A 64 MiB block (an activation at batch 32, above the 32 MiB cap of glibc's dynamic mmap threshold)
# allocated, written and freed ten times in a fresh process, through the C library itself: the pattern of an
# eager activation. Prints the minor page faults per round.
FAULTS_PER_ROUND = """
import ctypes, json, resource, sys
sys.path.insert(0, {root!r})
from accelport.allocator import configure_allocator
state = configure_allocator()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rounds(n):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        block = libc.malloc(64 << 20)
        ctypes.memset(block, 1, 64 << 20)
        libc.free(block)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n
rounds(2)
print(json.dumps({{"faults": rounds(10), "state": state}}))
"""

needs_glibc = pytest.mark.skipif(allocator._glibc() is None, reason="glibc's mallopt only")


def _faults_in_fresh_process(environment_value: str | None) -> dict:
    import os
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in (allocator.ENV_VAR, "LD_PRELOAD")}
    if environment_value is not None:
        env[allocator.ENV_VAR] = environment_value
    root = str(Path(allocator.__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-c", FAULTS_PER_ROUND.format(root=root)], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(done.stdout)


@needs_glibc
def test_the_set_allocator_faults_no_page_in_again_and_default_keeps_glibcs_behaviour():
    """glibc's defaults fault a freed 64 MiB block back in at every round (the eager activation's cost);
    accelport's setting keeps it, and ACCELPORT_ALLOCATOR=default leaves glibc as it is."""
    retained = _faults_in_fresh_process(None)
    default = _faults_in_fresh_process("default")
    assert retained["state"]["retain"] is True and retained["faults"] < 50, retained
    assert default["state"]["retain"] is False and default["faults"] > 1000, default
    assert "ACCELPORT_ALLOCATOR=default" in default["state"]["settings"]


def test_a_bad_allocator_value_is_a_usage_error_naming_the_variable(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(allocator, "_state", allocator._state)
    monkeypatch.setenv(allocator.ENV_VAR, "jemalloc")
    assert main(["bench", "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ACCELPORT_ALLOCATOR='jemalloc': expected one of retain, default" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


class _RecordingLibc:
    def __init__(self, answer: int) -> None:
        self.answer, self.calls = answer, []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return self.answer


def test_a_preloaded_allocator_is_left_alone_and_named(monkeypatch):
    libc = _RecordingLibc(1)
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(allocator, "_glibc", lambda: (libc, "2.99"))
    monkeypatch.setattr(allocator, "_malloc_library", lambda: None)  # dladdr cannot tell: the names decide
    monkeypatch.setattr(allocator, "_mapped_libraries", lambda: {"libc.so.6", "libjemalloc.so.2"})
    state = allocator.configure_allocator({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})
    assert state == {"settings": "libjemalloc.so.2 (LD_PRELOAD)", "retain": False} and libc.calls == []
    assert allocator.allocator_state() == state


def test_mallopt_sets_no_mmap_and_no_trimming_and_a_refusal_is_said(monkeypatch, caplog):
    monkeypatch.setattr(allocator, "_state", None)
    libc = _RecordingLibc(1)
    monkeypatch.setattr(allocator, "_glibc", lambda: (libc, "2.99"))
    assert allocator.configure_allocator({})["retain"] is True
    assert sorted(libc.calls) == [(-4, 0), (-1, -1)]  # M_MMAP_MAX 0, M_TRIM_THRESHOLD -1 (never trim)
    monkeypatch.setattr(allocator, "_glibc", lambda: (_RecordingLibc(0), "2.99"))
    with caplog.at_level(logging.WARNING, logger="accelport"):
        state = allocator.configure_allocator({})
    assert state["retain"] is False and "mallopt refused" in state["settings"]
    assert "glibc 2.99 refused mallopt" in caplog.text


def test_without_glibc_nothing_is_set_and_that_is_recorded(monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.allocator_state() == {"settings": "not glibc", "retain": False}
    assert allocator.configure_allocator({})["settings"] == "not glibc: left as it is"


def test_every_environment_block_records_the_allocator():
    import torch

    from accelport.environment import allocator_text, describe_environment

    environment = describe_environment(torch.device("cpu"))
    assert environment["allocator"] == allocator.allocator_state()
    assert allocator_text(environment) == environment["allocator"]["settings"]
    assert allocator_text({}) == allocator_text({"allocator": "mangled"}) == "not recorded"


def test_a_preload_the_loader_could_not_find_leaves_glibc_in_charge_and_is_set(monkeypatch):
    """LD_PRELOAD=/nonexistent/libjemalloc.so.2: ld.so warns and ignores it, so glibc's malloc runs; it was
    recorded as jemalloc and left with glibc's page-faulting defaults."""
    libc = _RecordingLibc(1)
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(allocator, "_glibc", lambda: (libc, "2.99"))
    monkeypatch.setattr(allocator, "_malloc_library", lambda: None)
    monkeypatch.setattr(allocator, "_mapped_libraries", lambda: {"libc.so.6"})
    state = allocator.configure_allocator({"LD_PRELOAD": "/nonexistent/libjemalloc.so.2"})
    assert state["retain"] is True and sorted(libc.calls) == [(-4, 0), (-1, -1)]


def test_the_kind_compares_what_the_allocator_does_not_how_it_was_set():
    """A bench made through the API (never set: glibc's defaults) was refused by run --runtime auto under
    ACCELPORT_ALLOCATOR=default, whose record adds how it was chosen to the same defaults."""
    api = {"settings": allocator.DEFAULT_SETTINGS, "retain": False, "glibc": "2.36"}
    cli = {"settings": f"{allocator.DEFAULT_SETTINGS}; ACCELPORT_ALLOCATOR=default", "retain": False}
    refused = {"settings": f"{allocator.DEFAULT_SETTINGS}; mallopt refused", "retain": False}
    assert allocator.allocator_kind(api) == allocator.allocator_kind(cli) == allocator.allocator_kind(refused) \
        == "glibc defaults"
    assert allocator.allocator_kind({"settings": allocator.RETAIN_SETTINGS, "retain": True}) == \
        "glibc, freed memory kept"
    assert allocator.allocator_kind({"settings": "libtcmalloc.so.4 (LD_PRELOAD)", "retain": False}) == \
        allocator.allocator_kind({"settings": "libtcmalloc.so.4 (LD_PRELOAD)", "retain": True}) == \
        "libtcmalloc.so.4 preloaded"
    # absent (an older accelport) or hand-edited: never taken for a kind it does not say
    assert allocator.allocator_kind(None) == allocator.allocator_kind({"settings": 3, "retain": False}) == \
        allocator.allocator_kind({"settings": allocator.RETAIN_SETTINGS, "retain": "true"}) == \
        allocator.allocator_kind({"settings": allocator.RETAIN_SETTINGS}) == "not recorded"
    assert allocator.allocator_kind({"settings": "garbage", "retain": False}) == "unrecognised"


def test_every_job_opened_through_the_api_sets_it_too(monkeypatch, tmp_path):
    """accelport.run, run_bench, evaluate and run_layers timed with glibc's defaults when called from Python:
    only the CLI set the allocator. Each opens its job through open_job, which now sets it first."""
    import accelport.job.context as context
    from accelport.job import JobSpec

    calls = []
    monkeypatch.setattr(context, "configure_allocator", lambda: calls.append("set"))
    monkeypatch.setattr(context, "resolve_device", lambda device: pytest.fail(f"set after the device: {calls}")
                        if not calls else __import__("torch").device("cpu"))
    context.open_job(JobSpec(model="test_convnext2", out_dir=str(tmp_path)))
    assert calls == ["set"]


def test_default_after_retain_in_one_process_keeps_and_records_retain(monkeypatch, caplog):
    """mallopt cannot be taken back: an API caller that set ACCELPORT_ALLOCATOR=default after an earlier call had
    set the allocator got results recording glibc's defaults from a process that kept freed memory."""
    libc = _RecordingLibc(1)
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(allocator, "_glibc", lambda: (libc, "2.99"))
    assert allocator.configure_allocator({})["retain"] is True
    with caplog.at_level(logging.WARNING, logger="accelport"):
        state = allocator.configure_allocator({allocator.ENV_VAR: "default"})
    assert state["retain"] is True and allocator.allocator_state()["retain"] is True
    assert "ACCELPORT_ALLOCATOR=default: this process already keeps freed memory" in caplog.text


@needs_glibc
def test_the_library_that_serves_malloc_decides_whatever_its_name(monkeypatch):
    """PyTorch's run_cpu preloads lib{jemalloc,tcmalloc}.so, a symlink to the versioned file: the name in
    LD_PRELOAD and the one mapped differ, and jemalloc was recorded as glibc with accelport's setting. dladdr on
    malloc names the library that serves it, under any name."""
    assert allocator._malloc_library().startswith("libc.so")  # this process: glibc's own malloc
    monkeypatch.setattr(allocator, "_malloc_library", lambda: "libjemalloc.so.2")
    assert allocator._preloaded({}) == "libjemalloc.so.2"  # even with LD_PRELOAD unset (/etc/ld.so.preload)
    monkeypatch.setattr(allocator, "_malloc_library", lambda: "libc.so.6")
    assert allocator._preloaded({"LD_PRELOAD": "/opt/lib/libtcmalloc.so"}) is None  # named, yet not serving malloc


def test_a_really_preloaded_jemalloc_behind_a_symlink_is_named_and_left_alone(tmp_path):
    """The end-to-end case of the test above, where the machine has jemalloc (not a dependency: skipped without)."""
    import ctypes.util
    import os

    found = ctypes.util.find_library("jemalloc")
    real = next((Path(d) / found for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
                 if found and (Path(d) / found).exists()), None)
    if real is None:
        pytest.skip("no jemalloc on this machine")
    link = tmp_path / "libjemalloc.so"
    link.symlink_to(real)
    env = {**os.environ, "LD_PRELOAD": str(link)}
    env.pop(allocator.ENV_VAR, None)
    root = str(Path(allocator.__file__).resolve().parent.parent)
    code = (f"import sys; sys.path.insert(0, {root!r}); import json; from accelport.allocator import "
            "configure_allocator; print(json.dumps(configure_allocator()))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          check=True)
    assert json.loads(done.stdout) == {"settings": f"{real.name} (LD_PRELOAD)", "retain": False}
