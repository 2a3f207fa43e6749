"""How reports read: no bare ``None``, comparisons whose printed digits tell the truth, distinct plot series, and
no carriage-return progress bars in log files."""

from __future__ import annotations

import re
import shutil

import pytest

from accelport.bench.plot import series_style
from accelport.cli import main
from accelport.formatting import comparison_text, format_comparison, one_line
from accelport.progress import LoggedProgress, progress_bar

MODEL = ["--model", "test_convnext2", "--device", "cpu"]
BARE_NONE = re.compile(r"(?<![A-Za-z_])None(?![A-Za-z_])")


@pytest.mark.parametrize(("value", "op", "threshold", "passed"), [
    (0.99994, ">=", 0.99995, False),
    (0.9999996, ">=", 0.9999995, True),  # .6g would print "1 >= 1"
    (0.99999949, ">=", 0.9999995, False),  # .6g would print "1 >= 1" for a failure
    (1.0000004e-3, "<=", 1e-3, False),
    (0.0, "<=", 0.001, True),
    (1.0, ">=", 1.0, True),
])
def test_a_printed_comparison_reads_as_true_exactly_when_it_passed(value, op, threshold, passed):
    left, right = format_comparison(value, op, threshold)
    printed_holds = float(left) >= float(right) if op == ">=" else float(left) <= float(right)
    assert printed_holds is passed
    assert left != right or value == threshold
    assert comparison_text(0.999994, ">=", 0.99999) == "0.999994 >= 0.99999"  # short when short suffices


def test_sixteen_plot_series_never_share_a_colour_and_a_hundred_never_share_a_look():
    looks = [(tuple(series_style(i)["color"]), series_style(i)["marker"]) for i in range(100)]
    assert len({colour for colour, _ in looks[:16]}) == 16
    assert len(set(looks)) == 100


def test_progress_goes_to_the_log_not_to_a_redrawn_bar_when_stderr_is_a_file(caplog):
    bar = progress_bar(10, "bench", "point")  # pytest captures stderr: not a terminal
    assert isinstance(bar, LoggedProgress)
    bar.interval_s = 0.0
    with caplog.at_level("INFO", logger="accelport.progress"):
        bar.set_postfix_str("eager fp32 batch 1")
        bar.update(3)
    assert "bench: 3/10 point (eager fp32 batch 1)" in caplog.text


def test_random_init_reports_say_what_missing_values_mean(tmp_path, two_images, capfd):
    """A failing random-init run with its layer report, and an eval: every text artifact, no bare None, no \\r."""
    run_dir, eval_dir, data = tmp_path / "run", tmp_path / "eval", tmp_path / "data"
    data.mkdir()
    for path in two_images:
        shutil.copy(path, data)
    rc = main(["run", *MODEL, "--dtype", "bf16", "--criterion", "max_rel_l2=1e-6", "--layers-on-fail", "--images",
               two_images[0], "--iters", "2", "--warmup", "0", "--out-dir", str(run_dir)])
    assert rc == 1
    assert main(["eval", *MODEL, "--data", str(data), "--workers", "0", "--batch-size", "2", "--out-dir",
                 str(eval_dir)]) == 0
    texts = {path.name: path.read_text() for path in [*run_dir.glob("*.md"), *run_dir.glob("*.log"),
                                                      *eval_dir.glob("*.md")]}
    assert {"report.md", "layers.md", "accuracy_compare.log", "eval.md"} <= set(texts)
    for name, text in texts.items():
        assert not BARE_NONE.search(text), f"{name}: {BARE_NONE.search(text).group(0)!r} in {text[:2000]}"
    assert "path: none (random init)" in texts["report.md"] and "sha256: none (random init)" in texts["report.md"]
    assert "\r" not in capfd.readouterr().err  # eval's progress, with stderr not a terminal


def test_an_engine_error_of_many_lines_is_one_line_in_a_table_cell():
    first = "NotImplementedError: Could not run 'aten::conv2d' with arguments from the 'Autocastnpu' backend."
    assert one_line(first + "\n" + "CPU: registered at x.cpp\n" * 50) == first
    assert len(one_line("x" * 1000)) == 300 and one_line("x" * 1000).endswith("…")
    assert one_line("") == ""


def test_a_cut_list_says_how_many_it_left_out():
    from accelport.formatting import listed

    assert listed([f"img{i}" for i in range(6)]) == "img0, img1, img2, img3, img4 (+1 more)"
    assert listed(["a", "b"]) == "a, b"
    assert listed([]) == ""


def test_file_names_stay_one_cell_and_one_line_and_are_told_apart():
    from accelport.formatting import markdown_cell, printable, short_paths

    assert markdown_cell("new\nline|x.jpg") == "new\\nline\\|x.jpg"
    assert printable("caf\u00e9\tcat.jpg") == "caf\u00e9\\tcat.jpg"  # letters kept, control characters escaped
    assert short_paths(["/d/a/cat.jpg", "/d/b/cat.jpg"]) == ["a/cat.jpg", "b/cat.jpg"]
    assert short_paths(["/d/a/cat.jpg", "/d/a/dog.jpg"]) == ["cat.jpg", "dog.jpg"]


def test_a_small_speed_ratio_keeps_its_digits():
    from accelport.bench.report import _ratio

    assert _ratio(0.0036) == "0.0036" and _ratio(0.16) == "0.16" and _ratio(1.0) == "1.00" and _ratio(None) == "–"


def test_a_bench_row_says_what_its_structural_proof_found():
    from accelport.bench.report import _proof_note

    own_error = {"passed": False, "failed_checks": ["max_sample_rel_l2"], "structural_proof": {"status": "passed"}}
    assert _proof_note(own_error) == "; structural proof passed: the precision's own error, not the port's"
    port = {"passed": False, "failed_checks": ["structural_proof"], "structural_proof": {"status": "failed"}}
    assert _proof_note(port) == ""  # the failed check already names it
    assert _proof_note({"passed": True, "failed_checks": [], "structural_proof": {"status": "passed"}}) == (
        "; structural proof passed")
    assert _proof_note({"passed": True, "failed_checks": []}) == ""  # fp32: no proof
