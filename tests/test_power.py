"""accelport power: faults injected into copies of the seeded weights, judged by the run's verdict."""

from __future__ import annotations

import json

import torch

from accelport.cli import main
from accelport.power.faults import MAX_PROBES_PER_SITE, Fault, choose_sites, preferred_sites, standard_faults


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
    # its own NaN fault is injected and judged in the table: no ERROR line in a power run that passed
    assert "ERROR" not in capsys.readouterr().err
    report = (tmp_path / "power.md").read_text()
    assert report.count("| noise (") >= 3
    swap = next(line for line in report.splitlines() if line.startswith("| channel swap"))
    assert "chained: yes, isolated: yes" in swap  # per mode: both modes name the swapped module
    assert (tmp_path / "power.png").stat().st_size > 0
    assert data["device"] == "cpu" and data["weights_sha256"]  # what run matches before it links power.md
    for dtype, linked in (("fp32", True), ("bf16", False)):  # another dtype's run was shown this analysis as its own
        main(["run", "--weights", str(seeded_weights), "--device", "cpu", "--dtype", dtype, "--images", two_images[0],
              "--iters", "1", "--warmup", "0", "--no-structural-proof", "--out-dir", str(tmp_path)])
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert (summary.get("power_report") == "power.md") is linked, dtype
        assert ("[power.md](power.md)" in (tmp_path / "report.md").read_text()) is linked


def _output_change(images):
    """A faulty copy's worst-image rel L2 against the clean model, both in eager fp32 on the CPU."""
    def change(clean, faulty):
        with torch.inference_mode():
            a, b = clean(images).double(), faulty(images).double()
        return float(((b - a).norm(dim=1) / a.norm(dim=1)).max())
    return change


def test_a_site_whose_fault_does_not_reach_the_output_is_passed_over_for_its_nearest_live_neighbour():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10).eval()  # random init: every branch's last BN weight is 0
    change = _output_change(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    sites = choose_sites(model, (0.1,), 0, lambda faulty: change(model, faulty))
    preferred = preferred_sites(model)
    assert preferred["middle"].parameter == "layer3.0.conv1.weight"
    for where in ("middle", "late", "norm"):
        site = sites[where]
        assert site.skipped[0] == preferred[where].parameter and not site.no_effect
        for dead in site.skipped:  # each passed-over tensor really leaves the output as it was
            fault = (lambda p: p.mul_(1.1)) if where == "norm" else (lambda p: p.add_(0.1 * p.abs().mean()
                                                                                    * torch.randn(p.shape)))
            assert change(model, Fault("probe", 0.1, dead, fault).model(model)) < 1e-6, dead
    middle = next(f for f in standard_faults(model, (0.1,), 0, sites) if f.kind == "noise (middle)")
    assert middle.parameter == sites["middle"].parameter and change(model, middle.model(model)) > 1e-3
    assert sites["early"] == preferred["early"]  # the stem matters: nothing to move


def test_live_sites_stay_where_they_were_and_an_all_dead_site_is_kept_and_marked(seeded_state):
    import timm

    model = timm.create_model("convnextv2_atto", pretrained=False)
    model.load_state_dict(seeded_state)
    change = _output_change(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    assert choose_sites(model, (1e-2,), 0, lambda faulty: change(model, faulty)) == preferred_sites(model)
    # live whatever sizes are judged: probed at 1e-6 (the largest size asked), every tensor looked dead
    assert choose_sites(model, (1e-6,), 0, lambda faulty: change(model, faulty)) == preferred_sites(model)
    dead = choose_sites(model, (1e-2,), 0, lambda faulty: 0.0)  # as if no tensor reached the output
    assert all(site.no_effect and site.parameter == preferred_sites(model)[where].parameter
               for where, site in dead.items())
    assert len(dead["bias"].skipped) == MAX_PROBES_PER_SITE


def test_power_on_a_dead_branch_model_reports_live_sites_and_each_faults_own_effect(tmp_path, two_images):
    code = main(["power", "--model", "resnet18", "--device", "cpu", "--images", two_images[0], "--sizes", "1e-1",
                 "--no-locate", "--out-dir", str(tmp_path)])
    data = json.loads((tmp_path / "power.json").read_text())
    moved = {site["where"]: site for site in data["sites"] if site["skipped"]}
    assert code == 0 and all(entry["detected"] for entry in data["summary"])  # random init, yet every kind is seen
    assert moved["middle"]["skipped"][0] == "layer3.0.conv1.weight"
    assert all(row["reference_rel_l2"] > 1e-5 for row in data["faults"] if row["kind"] != "non-finite value")
    report = (tmp_path / "power.md").read_text()
    assert "Sites moved" in report and "passed over `layer3.0.conv1.weight`" in report


def test_power_refuses_a_target_that_fails_without_a_fault_and_weights_that_do_not_compute(tmp_path, seeded_state,
                                                                                            seeded_weights, two_images,
                                                                                            capsys):
    """Every fault read "detected from 1e-3" on a target that failed without any (here a criterion no bf16 run can
    meet), and power.md said a PASS of run rules them out; a NaN in --weights judged every fault, then crashed
    drawing power.png (exit 3, nothing written)."""
    from safetensors.torch import save_file

    code = main(["power", "--weights", str(seeded_weights), "--device", "cpu", "--images", two_images[0],
                 "--sizes", "1e-1", "--dtype", "bf16", "--criterion", "max_rel_l2=1e-9", "--out-dir",
                 str(tmp_path / "clean_fails")])
    err = capsys.readouterr().err
    assert code == 2 and "power: the target without any fault already fails run's checks (max_sample_rel_l2 " in err
    assert not (tmp_path / "clean_fails" / "power.json").exists()
    nan = dict(seeded_state)
    nan["head.fc.bias"] = seeded_state["head.fc.bias"].clone()
    nan["head.fc.bias"][3] = float("nan")
    save_file({k: v.contiguous() for k, v in nan.items()}, str(tmp_path / "nan.safetensors"))
    code = main(["power", "--weights", str(tmp_path / "nan.safetensors"), "--device", "cpu", "--images",
                 two_images[0], "--sizes", "1e-1", "--out-dir", str(tmp_path / "nan")])
    err = capsys.readouterr().err
    assert code == 2 and "nan.safetensors: head.fc.bias hold(s) NaN/Inf" in err and "Traceback" not in err
