"""power.json as a typed document (``PowerDocument``): the per-kind summary is derived from the fault rows, the
JSON keeps power.json's schema, and power.md is rendered from the typed rows."""

from __future__ import annotations

import json

import pytest
import torch

from accelport.atomic import json_safe
from accelport.cli import main
from accelport.criteria import criteria_for
from accelport.power import api as power_api
from accelport.power import run_power
from accelport.power.document import FaultLocation, FaultRow, PowerDocument
from accelport.power.faults import Site, standard_faults

POWER_ORDER = ["schema_version", "model", "device", "runtime", "dtype", "precision", "criteria", "num_images",
               "sizes", "wall_time_s", "sites", "summary", "faults", "weights_sha256"]


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
    # a whole stage does not localise the fault; the module itself does
    assert "| noise (early) | `stages.1.blocks.0.mlp.fc1` | 0.1 | chained: **no**, isolated: yes |" in markdown
    assert "| noise (early) | 0.1 | yes | max_sample_rel_l2 | 0.03 | - |" in markdown  # its own effect: not measured


def test_power_files_are_the_typed_documents_renderings(tmp_path, seeded_weights, two_images, monkeypatch):
    def two_kinds(model, sizes, seed, sites):  # a noise fault and a NaN (a NaN rel L2 in the JSON), not all seven
        return [f for f in standard_faults(model, sizes, seed, sites)
                if f.kind in ("noise (middle)", "non-finite value")]

    monkeypatch.setattr(power_api, "standard_faults", two_kinds)
    result = run_power(weights=str(seeded_weights), device="cpu", images=tuple(two_images[:1]), sizes=(1e-1,),
                       locate=False, batch_size=1, out_dir=str(tmp_path))
    text = (tmp_path / "power.json").read_text()
    assert text == json.dumps(json_safe(result.document.to_json()), indent=2) + "\n"  # the typed document's JSON
    written = json.loads(text)
    assert list(written) == [*POWER_ORDER, "environment"]  # a real run records where it ran
    environment = written["environment"]
    assert environment["device_name"] and environment["torch"] == torch.__version__ and environment["allocator"]
    assert f"host CPU: {environment['cpu']}" in (tmp_path / "power.md").read_text()
    assert [entry["kind"] for entry in written["summary"]] == ["noise (middle)", "non-finite value"]
    assert all(entry["detected"] for entry in written["summary"]) and result.document.passed
    assert (tmp_path / "power.md").read_text() == result.document.to_markdown()
    assert [row.kind for row in result.document.faults] == [row["kind"] for row in written["faults"]]


def test_a_kind_whose_site_reaches_no_output_is_untestable_not_a_miss_and_moved_sites_are_listed(monkeypatch,
                                                                                                  capsys):
    rows = (FaultRow("noise (middle)", 1e-1, "layer3.0.downsample.0.weight", "layer3.0.downsample.0",
                     ("max_sample_rel_l2",), 3e-2, site="middle", reference_rel_l2=3e-2),
            FaultRow("bias shift", 1e-1, "layer3.0.bn1.bias", "layer3.0.bn1", (), 1e-7, site="bias",
                     reference_rel_l2=0.0))
    sites = (Site("middle", "layer3.0.downsample.0.weight", ("layer3.0.conv1.weight",)),
             Site("bias", "layer3.0.bn1.bias", ("layer3.0.bn1.bias", "layer3.0.bn2.bias"), no_effect=True))
    document = PowerDocument("resnet18", "cpu", "eager", "fp32", "fp32", criteria_for("fp32"), 2, (1e-1,), 1.5,
                             rows, sites)
    middle, bias = document.summary
    assert middle.detected and not middle.no_effect and bias.no_effect and not bias.detected
    assert document.passed  # the bias shift could not be tested here; it is not a miss
    assert document.to_json()["sites"][1] == {"where": "bias", "parameter": "layer3.0.bn1.bias",
                                              "skipped": ["layer3.0.bn1.bias", "layer3.0.bn2.bias"],
                                              "no_effect": True}
    markdown = document.to_markdown()
    assert "| bias shift | `layer3.0.bn1` | untestable: no effect on the output |" in markdown
    assert "**middle**: `layer3.0.downsample.0.weight`; passed over `layer3.0.conv1.weight`" in markdown
    assert "| bias shift | 0.1 | no | - | 1e-07 | 0 |" in markdown
    monkeypatch.setattr(power_api, "run_power", lambda config: power_api.PowerResult(document, {}))
    assert main(["power", "--device", "cpu"]) == 0
    console = capsys.readouterr().out
    assert "bias shift               untestable: no tensor near its site changes the output" in console
    undetected = PowerDocument(*[getattr(document, f) for f in ("model", "device", "runtime", "dtype", "precision",
                                                                 "criteria", "num_images", "sizes", "wall_time_s",
                                                                 "faults")], sites=sites[:1])
    assert not undetected.passed  # the same miss on a live site fails


def test_the_console_says_which_mode_missed_the_faulted_module():
    from accelport.power.command import _naming

    module = "stages.2.downsample.norm"
    assert _naming({"chained": module, "isolated": "stages.2.downsample"}, module) == ", layers names it"
    assert _naming({"chained": "stages.2.blocks.0.mlp.fc2", "isolated": module}, module) == (
        ", layers names it in isolated only (chained: stages.2.blocks.0.mlp.fc2)")
    assert _naming({"chained": None, "isolated": "head"}, module) == ", layers does NOT name it"


@pytest.mark.parametrize(("first", "named"), [
    ("stages.2.blocks.1.mlp.fc1", True), ("stages.2.blocks.1.mlp", True), ("stages.2.blocks.1", True),
    ("stages.2", False), ("stages", False),  # a stage, or every stage, does not localise a fault (they counted)
    ("stages.2.blocks.10", False), ("stages.2.blocks.1.mlp.fc2", False), (None, False),
])
def test_layers_names_a_fault_by_its_module_or_its_block_not_a_whole_stage(first, named):
    from accelport.power.faults import names_module

    assert names_module(first, "stages.2.blocks.1.mlp.fc1") is named
