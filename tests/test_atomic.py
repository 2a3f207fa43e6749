from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from accelport import atomic
from accelport.atomic import (
    STAGING_PREFIX,
    check_writable_dir,
    recover_interrupted,
    text_writer,
    write_atomic,
    write_json_atomic,
    write_set_atomic,
)
from accelport.errors import OutputError


def test_json_is_written_whole_without_leftover_temp_files(tmp_path):
    path = write_json_atomic(tmp_path / "out" / "summary.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # not mkstemp's private 0600


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = write_json_atomic(tmp_path / "summary.json", {"version": 1})

    def explode(fh):
        fh.write(b"{half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, explode)
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def _contents(folder) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def _set(version: str) -> dict:
    return {name: text_writer(f"{name} {version}") for name in ("summary.json", "accuracy_compare.log", "report.md")}


def test_a_full_disk_mid_set_keeps_the_previous_set_whole(tmp_path):
    write_set_atomic(tmp_path, _set("old"))
    writers = _set("new")

    def full(fh):
        raise OSError(errno.ENOSPC, "No space left on device")

    writers["report.md"] = full
    with pytest.raises(OSError, match="No space left"):
        write_set_atomic(tmp_path, writers)
    assert _contents(tmp_path) == {name: f"{name} old" for name in writers}  # nothing new, no staging folder


_KILLED_WRITER = """
import os, signal, sys, types
package = types.ModuleType("accelport")  # accelport.atomic alone, without importing torch (seconds under load)
package.__path__ = [sys.argv[3]]
sys.modules["accelport"] = package
from accelport import atomic
out = sys.argv[1]
atomic.write_set_atomic(out, {n: atomic.text_writer(n + " old") for n in ("summary.json", "accuracy_compare.log",
                                                                          "report.md")})
stage, real_replace, moved = sys.argv[2], os.replace, []
def replace(src, dst):
    if stage == "renames" and os.path.dirname(str(dst)) == out:  # killed after the first artifact is in place
        if moved:
            os.kill(os.getpid(), signal.SIGKILL)
        moved.append(dst)
    real_replace(src, dst)
def killing_writer(fh):
    fh.write(b"half")
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
writers = {n: atomic.text_writer(n + " new") for n in ("summary.json", "accuracy_compare.log", "report.md")}
if stage == "writing":
    writers["report.md"] = killing_writer
atomic.write_set_atomic(out, writers)
"""


@pytest.mark.parametrize("stage, expected", [("writing", "old"), ("renames", "new")])
def test_kill_9_while_writing_the_set_leaves_all_old_or_all_new_and_no_temp_files(tmp_path, stage, expected):
    out = tmp_path / "out"
    package_dir = Path(atomic.__file__).parent
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(out), stage, str(package_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir())  # the killed writer's leftovers
    recover_interrupted(out)  # what the next run does before writing
    names = ("summary.json", "accuracy_compare.log", "report.md")
    assert _contents(out) == {name: f"{name} {expected}" for name in names}


def test_temp_files_of_dead_writers_are_removed_and_a_live_writer_s_kept(tmp_path):
    finished = subprocess.Popen(["true"])  # its pid is free once it has exited and been waited for
    finished.wait()
    dead = finished.pid
    stale = tmp_path / f".summary.json.pid{dead}.abcd1234.tmp"
    live = tmp_path / f".report.md.pid{os.getpid()}.abcd1234.tmp"
    stale.write_text("half")
    live.write_text("being written")
    write_set_atomic(tmp_path, _set("new"))
    assert not stale.exists() and live.exists()


def test_an_output_folder_that_cannot_be_written_is_named_before_any_work(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match=f"--out-dir {a_file}: is a file"):
        check_writable_dir(a_file, "--out-dir")
    with pytest.raises(OutputError, match=f"--out-dir {a_file / 'sub'}: lies under {a_file}, which is a file"):
        check_writable_dir(a_file / "sub", "--out-dir")
    check_writable_dir(tmp_path / "new" / "deeper", "--out-dir")
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["file"]

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OutputError, match=r"--reference-cache .*: cannot write there \(No space left on device\)"):
        check_writable_dir(tmp_path / "cache", "--reference-cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_named(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot write there"):
            check_writable_dir(tmp_path / "out", "--out-dir")
    finally:
        tmp_path.chmod(0o700)


def test_json_files_are_standard_json_with_non_finite_numbers_as_null(tmp_path):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    path = write_json_atomic(tmp_path / "r.json", {"cosine": float("nan"), "ratios": [1.5, float("inf")],
                                                   "nested": {"low": -float("inf"), "count": 3}})
    data = json.loads(path.read_text(), parse_constant=refuse)  # what JavaScript's JSON.parse accepts
    assert data == {"cosine": None, "ratios": [1.5, None], "nested": {"low": None, "count": 3}}


def test_a_file_name_that_is_not_utf8_is_written_as_strict_json(tmp_path):
    """Undecodable bytes of a file name reach Python as lone surrogates, which json.dumps wrote as \\udcff: JSON
    that strict parsers (Rust's serde_json, Go's) refuse."""
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 on a UTF-8 file system
    path = write_json_atomic(tmp_path / "r.json", {"images": [name], name: 1, "plain": "caf\u00e9"})
    raw = path.read_bytes()
    raw.decode("utf-8")  # every byte valid UTF-8, no surrogate escapes
    assert b"\\udc" not in raw
    assert json.loads(raw) == {"images": ["caf\\xe9.jpg"], "caf\\xe9.jpg": 1, "plain": "caf\u00e9"}
