"""zoo.json as a typed document (zoo/document.py): ``accelport zoo`` writes exactly its ``to_json``, zoo.csv and
zoo.md come from the typed rows, ``--resume`` reads the journal back as typed rows, a saved document reads back
byte for byte. The cells are canned (no child processes): what is tested is the document, not the cells."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from accelport import allocator
from accelport.cli import main
from accelport.zoo.document import ZooDocument
from accelport.zoo.report import CSV_FIELDS, cell_text

REPO = Path(__file__).resolve().parent.parent
# zoo.json's keys in order, as the untyped code (commit 38bc6a0) wrote them: the schema this module must keep
# (plus the allocator since b7dd6ff; absent from older files, which still read back byte for byte)
TOP_KEYS = ["schema_version", "kind", "created_utc", "device", "world_size", "settings", "allocator", "versions",
            "models", "columns", "counts", "pass_rate", "rows", "pick"]
ROW_KEYS = ["model", "runtime", "dtype", "status", "reason", "exit_code", "output_shape", "cosine", "max_abs_diff",
            "worst_rel_l2", "top1_match", "weights", "input_size", "export_route", "latency_ms", "p50_ms", "setup_s",
            "timing_reliable", "wall_s", "speedup_vs_eager", "speedup_reliable"]
UNMEASURED_ROW_KEYS = ["model", "runtime", "dtype", "status", "reason", "exit_code", "wall_s", "speedup_vs_eager"]


def as_text(document: dict[str, Any]) -> str:
    """The JSON text of a document: equal texts mean equal keys, values and key order."""
    return json.dumps(document, allow_nan=True)


def _canned_row(cell: Any, config: Any, device: str, env: Any) -> dict[str, Any]:
    """What cell.run_cell returns, without a child: eager 10 ms, ONNX Runtime 4 ms, OpenVINO unsupported; test_vit's
    eager cell judged its own timing unreliable (a busy machine)."""
    row = {"model": cell.model, "runtime": cell.runtime, "dtype": cell.dtype, "status": "passed", "reason": None,
           "exit_code": 0}
    if cell.runtime == "openvino":
        return row | {"status": "unsupported", "reason": "no | engine", "exit_code": 2, "wall_s": 0.5}
    return row | {"output_shape": [1, 1000], "cosine": 1.0, "max_abs_diff": 0.0, "worst_rel_l2": 0.0,
                  "top1_match": True, "weights": "random-init", "input_size": [3, 160, 160],
                  "export_route": "torchscript" if cell.runtime == "onnxruntime" else None,
                  "latency_ms": 10.0 if cell.runtime == "eager" else 4.0, "p50_ms": 9.0, "setup_s": 0.1,
                  "timing_reliable": not (cell.model == "test_vit" and cell.runtime == "eager"), "wall_s": 1.5}


def test_zoo_writes_its_typed_document_and_resumes_from_typed_rows(tmp_path, monkeypatch):
    import accelport.zoo.api

    monkeypatch.setattr(accelport.zoo.api, "run_cell", _canned_row)
    sweep = ["zoo", "--models", "test_resnet", "test_vit", "--runtimes", "eager,onnxruntime,openvino",
             "--no-progress", "--no-plot", "--out-dir", str(tmp_path)]
    assert main(sweep) == 0
    written = json.loads((tmp_path / "zoo.json").read_text())
    document = ZooDocument.from_json(written)
    assert as_text(document.to_json()) == as_text(written)
    assert list(written) == TOP_KEYS
    assert [list(row) for row in written["rows"]] == [ROW_KEYS, ROW_KEYS, UNMEASURED_ROW_KEYS] * 2
    assert (tmp_path / "zoo.md").read_text() == document.to_markdown()
    assert (tmp_path / "zoo.csv").read_text() == document.to_csv()
    assert [r.speedup_vs_eager for r in document.rows] == [1.0, 2.5, None, 1.0, 2.5, None]  # 10 ms / 4 ms
    assert [p.fastest.runtime if p.fastest else None for p in document.pick] == ["onnxruntime", "onnxruntime"]
    assert written["counts"] == {"passed": 4, "failed": 0, "unsupported": 2, "crashed": 0, "timed_out": 0}
    assert written["pass_rate"] == 1.0  # of the cells that ran: an unsupported one is by design, not a failure
    markdown = document.to_markdown()
    assert "4 passed, 2 unsupported; pass rate 100.0% of the 4 cells that ran;" in markdown
    assert "| test_resnet | pass 1.00x | pass 2.50x | n/a |" in markdown
    assert "| test_vit | pass 1.00x? | pass 2.50x? | n/a |" in markdown  # its eager baseline was timed on a busy box
    assert [r.speedup_reliable for r in document.rows] == [True, True, None, False, False, None]
    assert "`?` after a speed-up: the cell's or its eager fp32 baseline's own run judged its timing" in markdown
    assert "| test_vit | openvino/fp32 | unsupported | no \\| engine |" in markdown
    assert "| test_vit | onnxruntime | fp32 | 4.000 | 2.50x? |" in markdown
    csv_lines = document.to_csv().splitlines()
    assert csv_lines[0] == ",".join(CSV_FIELDS) and csv_lines[2].startswith("test_resnet,onnxruntime,fp32,passed,,1.0,")

    assert written["allocator"] == allocator.allocator_state()["settings"]  # the cells' children set it alike
    assert f"allocator: {written['allocator']}." in markdown

    monkeypatch.setattr(accelport.zoo.api, "run_cell", lambda *args: pytest.fail("a journaled cell ran again"))
    assert main([*sweep, "--resume"]) == 0  # every row from the journal, read back as typed rows
    resumed = json.loads((tmp_path / "zoo.json").read_text())
    assert as_text({**resumed, "created_utc": None}) == as_text({**written, "created_utc": None})


def test_a_sweep_where_every_cell_was_refused_is_exit_2_not_a_pass(tmp_path, monkeypatch, capsys):
    """A flag no cell could take (a batch too large for memory) had every child refuse it: every cell
    "unsupported", and the sweep exited 0 with nothing measured."""
    import accelport.zoo.api

    monkeypatch.setattr(accelport.zoo.api, "run_cell", _canned_row)
    sweep = ["zoo", "--models", "test_resnet", "test_vit", "--no-progress", "--no-plot", "--out-dir", str(tmp_path)]
    assert main([*sweep, "--runtimes", "openvino"]) == 2
    assert "no cell ran: every one was refused (test_resnet openvino/fp32: no | engine)" in capsys.readouterr().err
    assert json.loads((tmp_path / "zoo.json").read_text())["counts"]["unsupported"] == 2  # the rows are written
    # without eager fp32 there is no speed-up to give: the cells were blank with no word why
    assert "No speed-ups: they are over eager fp32, which this sweep did not run" in (tmp_path / "zoo.md").read_text()
    assert main([*sweep, "--runtimes", "eager,openvino"]) == 0  # one measured cell is a sweep that ran


def test_a_zoo_resumed_under_another_allocator_is_refused(tmp_path, monkeypatch, capsys):
    """Eager's latency, and so every cell's speed-up, depends on the allocator: rows measured with glibc's defaults
    were resumed beside rows measured without page faults, and the speed-ups compared across the two."""
    import accelport.zoo.api

    monkeypatch.setattr(accelport.zoo.api, "run_cell", _canned_row)
    monkeypatch.setattr(allocator, "_state", allocator._state)  # put back after the test
    sweep = ["zoo", "--models", "test_resnet", "--runtimes", "eager", "--no-progress", "--no-plot", "--out-dir",
             str(tmp_path)]
    assert main(sweep) == 0
    monkeypatch.setenv(allocator.ENV_VAR, "default")
    monkeypatch.setattr(allocator, "_state", None)  # a new process: this one cannot take its setting back
    assert main([*sweep, "--resume"]) == 2
    assert ("written by a sweep with other settings (allocator; allocator 'glibc, freed memory kept' there, 'glibc "
            "defaults' now, which ACCELPORT_ALLOCATOR sets)") in capsys.readouterr().err


def test_saved_zoo_document_reads_back_byte_for_byte():
    text = (REPO / "docs" / "zoo_cpu.json").read_text()
    saved = json.loads(text)
    assert as_text(ZooDocument.from_json(saved).to_json()) == as_text(saved)


def test_a_pass_that_cannot_see_a_target_ignoring_its_input_is_marked(tmp_path):
    from accelport.zoo.cell import summary_fields
    from accelport.zoo.document import CellMeasurement, ZooRow

    def summary(blind):
        path = tmp_path / f"summary_{blind}.json"
        path.write_text(json.dumps({"parity": {"checks": []}, **({} if blind is None else {"input_blind": blind})}))
        return summary_fields(path)["input_blind"]

    assert (summary(True), summary(False), summary(None)) == (True, False, None)  # run's own judgement, or unknown
    measured = {k: None for k in CellMeasurement.__dataclass_fields__}
    rows = [ZooRow("convmixer_768_32", "eager", "fp32", "passed", None, 0, 1.0,
                   CellMeasurement(**{**measured, "input_blind": True})),
            ZooRow("resnet18", "eager", "fp32", "passed", None, 0, 1.0, CellMeasurement(**measured))]
    assert [cell_text(r) for r in rows] == ["pass*", "pass"]
    assert "input_blind" not in rows[1].to_json()  # unknown: absent, as in zoo.json files from before
    assert ZooRow.from_json(rows[0].to_json()).input_blind is True
