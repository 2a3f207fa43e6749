"""Hostile flags and environments, through the CLI: exit 2, one line naming the culprit, no traceback, and
(where the check can come first) before any weights are read or anything is computed (issue 9)."""

from __future__ import annotations

import pytest

from accelport.cli import main

FAST = ["--iters", "1", "--warmup", "0"]


def exit_code_and_error(argv: list[str], capsys) -> tuple[int, str]:
    """The exit code of ``accelport ARGV`` and its stderr, whether argparse or the command refused it."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    return rc, capsys.readouterr().err


def assert_refused(argv: list[str], culprit: str, capsys) -> str:
    rc, err = exit_code_and_error(argv, capsys)
    assert rc == 2, (argv, err)
    assert culprit in err, (argv, err)
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("command", [["run"], ["layers"], ["bench"], ["eval", "--data", "."]])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_hub_timeout_that_is_not_a_positive_finite_number_is_refused(command, value, capsys):
    assert_refused([*command, "--hub-timeout", value], "--hub-timeout", capsys)


def test_a_nan_criterion_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    import accelport.pipeline as pipeline

    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: pytest.fail("weights loaded before the check"))
    assert_refused(["run", "--device", "cpu", "--criterion", "min_cosine=nan", "--out-dir", str(tmp_path / "o"),
                    *FAST], "--criterion min_cosine=nan: out of range", capsys)
