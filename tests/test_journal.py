"""The resume journal file format shared by bench, eval and zoo: header once, fsynced rows, a torn tail repaired."""

from __future__ import annotations

import math

import pytest

from accelport import journal


def test_a_new_journal_gets_its_header_once_and_rows_read_back_with_their_line_numbers(tmp_path):
    path = tmp_path / "sub" / "j.jsonl"
    with journal.JournalWriter(path, {"format": "x"}) as writer:
        writer.write([{"a": 1}, {"a": float("nan")}])
    with journal.JournalWriter(path, {"format": "x"}) as writer:  # reopened: no second header
        writer.write([{"a": 2}])
    lines = journal.read_lines(path)
    assert [line.number for line in lines] == [1, 2, 3, 4] and lines[0].value == {"format": "x"}
    assert lines[1].value == {"a": 1} and lines[3].value == {"a": 2}
    assert lines[2].value is not None and math.isnan(lines[2].value["a"])  # NaN survives (allow_nan)
    assert not any(line.torn for line in lines)


@pytest.mark.parametrize(("torn_tail", "expected"), [
    ("close", ['{"h": 1}', '{"a": 1}', '{"a": 2, "cut', '{"a": 3}']),  # kept, on a line of its own: the reader sees it
    ("drop", ['{"h": 1}', '{"a": 1}', '{"a": 3}']),  # gone: a damaged line found later is real damage
])
def test_a_line_cut_short_by_a_kill_is_closed_or_dropped_before_appending(tmp_path, torn_tail, expected):
    path = tmp_path / "j.jsonl"
    path.write_text('{"h": 1}\n{"a": 1}\n{"a": 2, "cut')
    assert journal.read_lines(path)[-1].torn and journal.read_lines(path)[-1].value is None
    with journal.JournalWriter(path, {"h": 1}, torn_tail=torn_tail) as writer:
        writer.write([{"a": 3}])
    assert path.read_text().splitlines() == expected


def test_a_header_cut_short_and_dropped_is_written_again(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"h": ')
    journal.JournalWriter(path, {"h": 1}, torn_tail="drop").close()
    assert path.read_text() == '{"h": 1}\n'


def test_fresh_starts_over_and_append_adds_to_an_existing_journal(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"old": 1}\n')
    journal.JournalWriter(path, {"h": 2}, fresh=True).close()
    journal.append(path, [{"row": 1}])
    assert [line.value for line in journal.read_lines(path)] == [{"h": 2}, {"row": 1}]
    with pytest.raises(FileNotFoundError):  # append never creates a journal without its header
        journal.append(tmp_path / "missing.jsonl", [{"row": 1}])


def test_fingerprints_compare_as_they_read_back_and_name_what_differs():
    assert journal.canonical({"b": (1, 2), "a": 1}) == {"a": 1, "b": [1, 2]}
    assert journal.differing_keys({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 0}) == ["b", "c"]
    options = ({"options": {"calibration": ["a.jpg"], "streams": 1}},
               {"options": {"calibration": ["b.jpg"], "streams": 1}})
    assert journal.differing_keys(*options) == ["options"]
    assert journal.differing_keys(*options, nested=True) == ["options.calibration"]  # eval said just "options"
    assert journal.parse_object("[1]") is None and journal.parse_object("{") is None
