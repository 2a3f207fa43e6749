from __future__ import annotations

import json
import os
import stat

import pytest

from accelport.atomic import write_atomic, write_json_atomic


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
