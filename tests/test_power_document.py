"""power.json as a typed document (``PowerDocument``): the per-kind summary is derived from the fault rows, the
JSON keeps power.json's schema, and power.md is rendered from the typed rows."""

from __future__ import annotations

import json

from accelport.criteria import criteria_for
from accelport.power import api as power_api
from accelport.power import run_power
from accelport.power.document import FaultLocation, FaultRow, PowerDocument
from accelport.power.faults import standard_faults

POWER_ORDER = ["schema_version", "model", "device", "runtime", "dtype", "precision", "criteria", "num_images",
               "sizes", "wall_time_s", "summary", "faults"]


def _document(rows: tuple[FaultRow, ...]) -> PowerDocument:
    return PowerDocument("convnextv2_atto", "cpu", "eager", "fp32", "fp32", criteria_for("fp32"), 2, (1e-3, 1e-1),
                         1.5, rows)


def test_summary_takes_the_smallest_detected_size_and_its_location():
    found = FaultLocation("fp32", {"chained": "stages.1", "isolated": "stages.1.blocks.0.mlp.fc1"}, True)
    rows = (FaultRow("noise (early)", 1e-3, "stages.1.blocks.0.mlp.fc1.weight", "stages.1.blocks.0.mlp.fc1", (),
                     2e-4),
            FaultRow("noise (early)", 1e-1, "stages.1.blocks.0.mlp.fc1.weight", "stages.1.blocks.0.mlp.fc1",
                     ("max_sample_rel_l2",), 3e-2, found),
            FaultRow("bias shift", 1e-3, "head.fc.bias", "head.fc", (), 1e-5),
            FaultRow("bias shift", 1e-1, "head.fc.bias", "head.fc", (), 1e-4))
    document = _document(rows)
    early, bias = document.summary
    assert (early.kind, early.tried, early.detected, early.smallest_detected) == ("noise (early)", (1e-3, 1e-1),
                                                                                   True, 1e-1)
    assert early.layers is found and not bias.detected and bias.smallest_detected is None
    assert not document.passed  # the bias shift was never detected: exit 1
    data = document.to_json()
    assert list(data) == POWER_ORDER
    assert data["summary"][0]["layers"] == {"dtype": "fp32", "first_divergent": found.first_divergent,
                                            "names_module": True}
    assert "layers" not in data["faults"][0] and data["faults"][1]["layers"]["names_module"] is True
    markdown = document.to_markdown()
    assert "| bias shift | `head.fc` | **not detected** |" in markdown
    assert "| noise (early) | `stages.1.blocks.0.mlp.fc1` | 0.1 | chained: yes, isolated: yes |" in markdown
    assert "| noise (early) | 0.1 | yes | max_sample_rel_l2 | 0.03 |" in markdown


def test_power_files_are_the_typed_documents_renderings(tmp_path, seeded_weights, two_images, monkeypatch):
    def two_kinds(model, sizes, seed):  # a noise fault and a NaN (a NaN rel L2 in the JSON), not all seven kinds
        return [f for f in standard_faults(model, sizes, seed) if f.kind in ("noise (middle)", "non-finite value")]

    monkeypatch.setattr(power_api, "standard_faults", two_kinds)
    result = run_power(weights=str(seeded_weights), device="cpu", images=tuple(two_images[:1]), sizes=(1e-1,),
                       locate=False, batch_size=1, out_dir=str(tmp_path))
    text = (tmp_path / "power.json").read_text()
    assert text == json.dumps(result.document.to_json(), indent=2) + "\n"  # the file is the typed document's JSON
    written = json.loads(text)
    assert list(written) == POWER_ORDER
    assert [entry["kind"] for entry in written["summary"]] == ["noise (middle)", "non-finite value"]
    assert all(entry["detected"] for entry in written["summary"]) and result.document.passed
    assert (tmp_path / "power.md").read_text() == result.document.to_markdown()
    assert [row.kind for row in result.document.faults] == [row["kind"] for row in written["faults"]]
