"""bench's journal: an interrupted sweep keeps every finished point, ``--resume`` goes on from them, and a journal
of another sweep or a damaged one is a clear error (exit 2 naming the difference or the file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from accelport.bench import points
from accelport.bench.journal import JOURNAL_FORMAT, JOURNAL_NAME, JournalWriter
from accelport.cli import main

PHOTO = str(Path(__file__).resolve().parent.parent / "samples" / "chelsea.jpg")
SWEEP = ["bench", "--model", "test_convnext2", "--device", "cpu", "--runtimes", "eager", "--dtypes", "fp32",
         "--batch-sizes", "1,2", "--iters", "3", "--warmup", "1", "--max-time", "1", "--no-progress", "--no-plot",
         "--images", PHOTO, "--no-peers", "--rounds", "1"]


ROW = {"label": "eager fp32", "runtime": "eager", "dtype": "fp32", "batch_size": 1, "status": "ok",
       "parity": {"passed": True}}


def interrupt_after(monkeypatch, rounds: int) -> None:
    """Ctrl-C right after the ``rounds``-th timing round reached the journal."""
    original, written = JournalWriter.round, []

    def round_then_interrupt(self, *args):
        original(self, *args)
        written.append(args)
        if len(written) == rounds:
            raise KeyboardInterrupt

    monkeypatch.setattr(JournalWriter, "round", round_then_interrupt)


def count_first_rounds(monkeypatch) -> list:
    calls, original = [], points.first_round
    monkeypatch.setattr(points, "first_round", lambda *a, **k: calls.append(a[1].label) or original(*a, **k))
    return calls


def journal_entries(out):
    return [json.loads(line) for line in (out / JOURNAL_NAME).read_text().splitlines()]


def test_an_interrupted_sweep_keeps_its_points_and_resume_measures_only_the_rest(monkeypatch, tmp_path, capsys):
    with monkeypatch.context() as patch:
        interrupt_after(patch, 1)
        assert main([*SWEEP, "--out-dir", str(tmp_path)]) == 130
    kept = {(e["label"], e["batch_size"]): e["samples"] for e in journal_entries(tmp_path) if e.get("kind") == "round"}
    assert set(kept) == {("eager fp32", 1)} and not (tmp_path / "bench.json").exists()
    assert "--resume" in capsys.readouterr().err

    measured = count_first_rounds(monkeypatch)
    assert main([*SWEEP, "--out-dir", str(tmp_path), "--resume"]) == 0
    assert measured == ["eager fp32"]  # only batch 2: the journaled batch 1 was not measured again
    document = json.loads((tmp_path / "bench.json").read_text())
    assert document["resumed_points"] == 1
    rows = {(r["label"], r["batch_size"]): r for r in document["rows"]}
    for key, samples in kept.items():
        assert rows[key]["latency"]["p50_ms"] == pytest.approx(float(np.median(samples)))
    assert rows["eager fp32", 2]["status"] == "ok" and rows["eager fp32", 1]["ratio_vs_eager"] == 1.0


def test_resume_finishes_the_missing_timing_rounds(monkeypatch, tmp_path):
    sweep = [*SWEEP, "--rounds", "2", "--out-dir", str(tmp_path)]
    with monkeypatch.context() as patch:
        interrupt_after(patch, 3)  # both first rounds, then round 2 of batch 1 only
        assert main(sweep) == 130
    measured = count_first_rounds(monkeypatch)
    assert main([*sweep, "--resume"]) == 0
    assert measured == []
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [len(r["round_p50_ms"]) for r in rows] == [2, 2]


def test_resume_with_other_settings_names_the_difference(tmp_path, capsys):
    JournalWriter(tmp_path / JOURNAL_NAME, {"batch_sizes": [1, 8]}, fresh=True).close()
    assert main([*SWEEP, "--out-dir", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "different sweep" in err and "batch_sizes (journal: [1, 8], now: [1, 2])" in err
    assert "Traceback" not in err


def test_a_journal_of_an_older_row_format_is_refused_not_resumed(tmp_path, capsys):
    """Its rows lack what this version records (parity.zero_target_count): resumed, an all-zero int8 row lost its
    note. A version installed as a package has the same version string at every commit, so the fingerprint alone
    could not tell."""
    path = tmp_path / JOURNAL_NAME
    JournalWriter(path, {"k": 1}, fresh=True).close()
    path.write_text(path.read_text().replace(JOURNAL_FORMAT, "accelport-bench-journal/1"))
    assert main([*SWEEP, "--out-dir", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{path} was written by another accelport version (accelport-bench-journal/1; this one reads" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("damage", [b"\x00\xff\xfe random bytes", b"{}\n{}\n"])
def test_a_damaged_journal_is_a_usage_error_naming_the_file(tmp_path, capsys, damage):
    path = tmp_path / JOURNAL_NAME
    path.write_bytes(damage)
    assert main([*SWEEP, "--out-dir", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err


def test_a_bad_entry_in_the_middle_is_named_but_a_cut_off_last_line_is_measured_again(tmp_path):
    from accelport.bench.journal import read_journal
    from accelport.errors import UsageError

    path = tmp_path / JOURNAL_NAME
    writer = JournalWriter(path, {"k": 1}, fresh=True)
    writer.point(ROW)
    writer.round(("eager fp32", 1), [1.0, 2.0], None)
    writer.close()
    with open(path, "a") as fh:
        fh.write('{"kind": "round", "label": "eager fp32", "batch_s')  # cut short by a kill
    assert read_journal(path, {"k": 1}).rounds_done(("eager fp32", 1)) == 1
    JournalWriter(path, {"k": 1}, fresh=False).close()  # --resume drops the cut line before appending
    assert path.read_text().count("\n") == 3 and path.read_text().endswith("\n")
    with open(path, "a") as fh:
        fh.write('{"kind": "point"}\n{"kind": "round", "label": "x", "batch_size": 1, "samples": [1]}\n')
    with pytest.raises(UsageError, match="line 4 is not a journal entry"):
        read_journal(path, {"k": 1})


def test_a_point_without_its_round_is_measured_again_and_a_round_without_its_point_is_damage(tmp_path, capsys):
    """A kill between a point's row and its first round (two writes) left a point with no timing: resumed, it was
    never timed and the end of the sweep crashed in numpy (exit 3). A round whose point the journal lacks (a line
    moved to another label or batch size) was taken without a word."""
    from accelport.bench.journal import read_journal
    from accelport.errors import UsageError

    assert main([*SWEEP, "--rounds", "1", "--out-dir", str(tmp_path)]) == 0
    path = tmp_path / JOURNAL_NAME
    lines = path.read_text().splitlines(keepends=True)
    kinds = [json.loads(line).get("kind") for line in lines]
    first_round = kinds.index("round")
    path.write_text("".join(lines[:first_round]))  # batch 1's row, then the kill
    assert main([*SWEEP, "--rounds", "1", "--out-dir", str(tmp_path), "--resume"]) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [(r["batch_size"], len(r["round_p50_ms"])) for r in rows] == [(1, 1), (2, 1)]
    moved = json.loads(lines[first_round])
    path.write_text("".join(lines[:first_round]) + json.dumps({**moved, "batch_size": 7}) + "\n")
    with pytest.raises(UsageError, match="holds timing rounds of 'eager fp32' at batch 7, which it never started"):
        read_journal(path, json.loads(lines[0])["fingerprint"])
    path.write_text("")  # killed as it was created: no header yet
    assert main([*SWEEP, "--rounds", "1", "--out-dir", str(tmp_path), "--resume"]) == 0
    assert "is empty: the sweep starts from the beginning" in capsys.readouterr().err


@pytest.mark.parametrize("entry, said", [
    # the verdict the pick reads: missing, it crashed the end of the sweep (exit 3) after every point was measured
    ({"kind": "point", "label": "eager fp32", "batch_size": 1, "row": {"label": "eager fp32", "runtime": "eager",
      "dtype": "fp32", "batch_size": 1, "status": "ok", "parity": None}}, "row 'eager fp32': parity None"),
    ({"kind": "round", "label": "eager fp32", "batch_size": 1, "samples": [3.0, -1.0]}, "not positive and finite"),
    ({"kind": "round", "label": "eager fp32", "batch_size": 1, "samples": []}, "a round without samples"),  # exit 3
    ({"kind": "round", "label": "eager fp32", "batch_size": 0, "samples": [3.0]}, "of batch size under 1"),
    ({"kind": "round", "label": "eager fp32", "batch_size": 1, "samples": ["5"]}, "a time that is not a number"),
])
def test_a_journal_entry_the_sweep_could_not_have_written_is_named_before_any_measuring(tmp_path, entry, said):
    from accelport.bench.journal import read_journal
    from accelport.errors import UsageError

    path = tmp_path / JOURNAL_NAME
    JournalWriter(path, {"k": 1}, fresh=True).close()
    with open(path, "a") as fh:
        fh.write(json.dumps(entry) + "\n")
    with pytest.raises(UsageError, match=f"line 2 is not a journal entry \\(the file is damaged: .*{said}"):
        read_journal(path, {"k": 1})
