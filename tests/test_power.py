"""accelport power: faults injected into copies of the seeded weights, judged by the run's verdict."""

from __future__ import annotations

import json

from accelport.cli import main
from accelport.power.faults import standard_faults


def test_standard_faults_cover_every_kind_and_change_only_their_tensor(seeded_state):
    import timm

    model = timm.create_model("convnextv2_atto", pretrained=False)
    model.load_state_dict(seeded_state)
    faults = standard_faults(model, (1e-2,))
    kinds = {f.kind for f in faults}
    assert kinds == {"noise (early)", "noise (middle)", "noise (late)", "channel swap (middle)", "norm scale",
                     "bias shift", "non-finite value"}
    for fault in faults:
        faulty = fault.model(model).state_dict()
        changed = [k for k, v in model.state_dict().items() if not v.equal(faulty[k])]
        assert changed == [fault.parameter], fault.kind


def test_power_reports_smallest_detected_sizes_and_localisation(tmp_path, seeded_weights, two_images, capsys):
    code = main(["power", "--weights", str(seeded_weights), "--device", "cpu", "--images", two_images[0],
                 "--sizes", "1e-3,1e-1", "--out-dir", str(tmp_path)])
    data = json.loads((tmp_path / "power.json").read_text())
    summary = {e["kind"]: e for e in data["summary"]}
    assert code == 0 and all(e["detected"] for e in data["summary"])
    assert summary["noise (middle)"]["smallest_detected"] == 1e-3  # fp32 sees 1e-3 in one tensor
    assert summary["channel swap (middle)"]["layers"]["names_module"]
    assert summary["non-finite value"]["detected"]
    report = (tmp_path / "power.md").read_text()
    assert report.count("| noise (") >= 3
    swap = next(line for line in report.splitlines() if line.startswith("| channel swap"))
    assert "chained: yes, isolated: yes" in swap  # per mode: both modes name the swapped module
    assert (tmp_path / "power.png").stat().st_size > 0
