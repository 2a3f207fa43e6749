"""accelport layers: the first divergent module is the faulty one, in chained and isolated mode; clean ports: none."""

from __future__ import annotations

import copy
import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from accelport.cli import main
from accelport.criteria import criteria_for
from accelport.errors import RuntimeUnavailableError
from accelport.layers import LayersConfig, compare_layers
from accelport.layers.config import validate
from accelport.layers.stats import ModuleStats
from accelport.main_job.config import RunConfig
from accelport.metrics import compare_arrays, compare_per_sample
from accelport.weights import sha256_of

FC2 = "stages.2.blocks.1.mlp.fc2"
GRN = "stages.1.blocks.0.mlp.grn"
SMALL = 64  # px: ConvNeXt takes any multiple of 32; keeps the in-process comparisons well under a second


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # hundreds of small per-module ops


@pytest.fixture(scope="module")
def reference(seeded_model):
    """The CPU fp32 reference, with seeded weights whose GRN and biases are non-zero (so GRN does something)."""
    return seeded_model


@pytest.fixture(scope="module")
def small_photos(reference, two_images):
    """Two real photos through the model's own preprocessing, scaled down to SMALL px."""
    config = timm.data.resolve_model_data_config(reference)
    transform = timm.data.create_transform(**config)
    from accelport.preprocess import open_rgb

    batch = torch.stack([transform(open_rgb(p)) for p in two_images])
    return F.interpolate(batch, size=SMALL, mode="bilinear", antialias=True)


def compare(reference, target, images, precision="fp32", batch_size=1):
    batches = [images[i : i + batch_size] for i in range(0, images.shape[0], batch_size)]
    return compare_layers(reference, target, batches, criteria_for(precision)).to_json()


def rows_by_name(data):
    return {row["module"]: row for row in data["modules"]}


def divergent(data, mode):
    return [row["module"] for row in data["modules"] if row[mode] and row[mode]["divergent"]]


def test_fc2_fault_is_named_first_divergent_module_by_the_cli(tmp_path, seeded_state, seeded_weights, two_images,
                                                               capsys):
    """End to end on a real photo at full size: exit 1, the perturbed fc2 named in both modes, files written."""
    faulty = dict(seeded_state)
    faulty[f"{FC2}.weight"] = seeded_state[f"{FC2}.weight"] * 1.05  # a re-saved copy with one layer 5 % off
    faulty_file = tmp_path / "faulty.safetensors"
    save_file(faulty, str(faulty_file))
    out = tmp_path / "out"
    rc = main(["layers", "--device", "cpu", "--weights", str(seeded_weights), "--target-weights", str(faulty_file),
               "--images", two_images[0], "--out-dir", str(out), "-q"])
    printed = capsys.readouterr().out
    assert rc == 1
    assert {f.name for f in out.iterdir()} == {"layers.json", "layers.csv", "layers.md", "layers.png"}
    data = json.loads((out / "layers.json").read_text())
    assert data["schema_version"] == 1 and data["status"] == "diverged"
    assert {mode: first["module"] for mode, first in data["first_divergent"].items()} == {"chained": FC2,
                                                                                            "isolated": FC2}
    assert f"first divergent module: {FC2}" in printed and "layers.png" in printed
    names = [row["module"] for row in data["modules"]]
    fault = names.index(FC2)
    for row in data["modules"][:fault]:  # same weights, same inputs: identical outputs before the fault
        assert row["chained"]["metrics"]["max_abs_diff"] == 0 and row["isolated"]["metrics"]["max_abs_diff"] == 0
    # After the fault, chained rows carry the error on; isolated leaves (fed the reference's input) do not.
    later_leaves = [row for row in data["modules"][fault + 1 :] if row["leaf"]]
    assert all(row["chained"]["divergent"] for row in later_leaves if row["module"].startswith("stages.3"))
    assert not any(row["isolated"]["divergent"] for row in later_leaves)
    assert names[-1] == "(model)" and data["modules"][-1]["output_shape"] == [1000]
    assert {"stem", "stages.2", "stages.2.blocks.1.conv_dw", "stages.2.blocks.1.mlp.grn", "head.fc"} <= set(names)
    assert data["target"]["weights"]["sha256"] == sha256_of(faulty_file)
    assert data["reference"]["weights"]["sha256"] == sha256_of(seeded_weights)
    assert data["target"]["weights_same_as_reference"] is False
    memory = data["memory"]
    assert 0 < memory["held_activations_peak_bytes"] < memory["all_module_outputs_bytes"] / 4
    assert memory["process_rss_peak_bytes"] > 0
    with open(out / "layers.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["module"] for r in table] == names
    assert [r["module"] for r in table if r["chained_first_divergent"] == "True"] == [FC2]
    assert all(r["chained_worst_cosine_image"] in ("0", "1") for r in table if r["chained_divergent"])
    assert (out / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"`{FC2}`" in (out / "layers.md").read_text()


def test_grn_with_changed_behaviour_is_named_first_divergent_module(reference, small_photos):
    """A GRN that normalises over the wrong axes (a porting bug, no weight changed) is found in both modes."""
    target = copy.deepcopy(reference)
    grn = target.get_submodule(GRN)
    grn.spatial_dim = (1, 3)  # H and C instead of H and W
    data = compare(reference, target, small_photos[:1])
    assert data["first_divergent"]["chained"]["module"] == GRN
    assert data["first_divergent"]["isolated"]["module"] == GRN
    assert divergent(data, "isolated")[0] == GRN and rows_by_name(data)[GRN]["type"] == "GlobalResponseNorm"


def test_clean_fp32_cpu_target_shows_no_divergence_anywhere(reference, small_photos):
    data = compare(reference, copy.deepcopy(reference), small_photos)
    assert data["first_divergent"] == {"chained": None, "isolated": None}
    for row in data["modules"]:
        for mode in ("chained", "isolated"):
            assert row[mode]["worst_sample_rel_l2"] <= 1e-6 and row[mode]["metrics"]["num_elements"] > 0


def test_bf16_error_grows_with_depth_chained_but_stays_at_bf16_level_isolated(reference, small_photos):
    data = compare(reference, copy.deepcopy(reference).to(torch.bfloat16), small_photos[:1], precision="bf16")
    rows = rows_by_name(data)
    chained = {name: rows[name]["chained"]["worst_sample_rel_l2"] for name in ("stem", "stages.1", "stages.3")}
    isolated_leaves = [row["isolated"]["worst_sample_rel_l2"] for row in data["modules"] if row["leaf"]]
    bf16_eps = 2.0**-8
    assert chained["stem"] < chained["stages.1"] < chained["stages.3"]
    assert chained["stages.3"] > 1.5 * chained["stem"]
    assert max(isolated_leaves) < 2 * bf16_eps  # one op in bf16: a couple of rounding units at most
    assert chained["stages.3"] > max(isolated_leaves)  # accumulation, not any single op, explains the end error
    assert data["first_divergent"] == {"chained": None, "isolated": None}  # a correct bf16 port passes bf16 criteria


def test_metrics_do_not_depend_on_the_batch_size(reference, small_photos):
    target = copy.deepcopy(reference)
    with torch.no_grad():
        target.get_submodule(FC2).weight.mul_(1.05)
    one, two = (compare(reference, target, small_photos, batch_size=b) for b in (1, 2))
    assert [r["module"] for r in one["modules"]] == [r["module"] for r in two["modules"]]
    for a, b in zip(one["modules"], two["modules"], strict=True):
        for mode in ("chained", "isolated"):
            assert a[mode]["divergent"] == b[mode]["divergent"]
            np.testing.assert_allclose(a[mode]["metrics"]["rel_l2_err"], b[mode]["metrics"]["rel_l2_err"],
                                       rtol=1e-3, atol=1e-9)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy on the NaN we planted
def test_accumulated_metrics_equal_the_core_metrics_on_all_images():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((5, 300)).astype(np.float32)
    target = (reference + 1e-3 * rng.standard_normal((5, 300))).astype(np.float32)
    reference[1] = 0.0  # an all-zero sample
    target[3, 7], reference[4, 2] = np.nan, np.inf  # new and pre-existing non-finite values
    stats = ModuleStats()
    stats.update(torch.from_numpy(reference[:2]), torch.from_numpy(target[:2]), 0)
    stats.update(torch.from_numpy(reference[2:]), torch.from_numpy(target[2:]), 2)
    expected, got = compare_arrays(reference, target).to_json(), stats.metrics().to_json()
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-9, err_msg=key)
    per_sample = compare_per_sample(reference, target)
    assert [np.isnan(m.rel_l2_err) for m in per_sample] == [False, False, False, True, True]
    # the first image with NaN/Inf is the worst, as the core's worst_index counts it: no finite "worst" hides it
    assert np.isnan(stats.worst_rel_l2) and stats.worst_rel_l2_image == 3
    assert np.isnan(stats.worst_cosine) and stats.worst_cosine_image == 3
    assert stats.new_nonfinite == 1


def test_an_error_in_the_target_forward_surfaces_instead_of_hanging(reference, small_photos):
    target = copy.deepcopy(reference)

    def broken(x):
        raise RuntimeError("kernel not implemented on this device")

    target.get_submodule(GRN).forward = broken
    with pytest.raises(RuntimeError, match="kernel not implemented"):
        compare_layers(reference, target, [small_photos[:1]], criteria_for("fp32"), modes=("chained",))
    assert not reference._forward_hooks and not target.get_submodule(GRN)._forward_hooks  # hooks removed


def test_mismatching_target_checkpoint_is_exit_2_naming_the_file(tmp_path, seeded_state, seeded_weights, two_images,
                                                                  capsys):
    wrong = {k: v for k, v in seeded_state.items() if not k.startswith("head.fc")}
    wrong_file = tmp_path / "other_model.safetensors"
    save_file(wrong, str(wrong_file))
    common = ["layers", "--device", "cpu", "--weights", str(seeded_weights), "--images", two_images[0],
              "--out-dir", str(tmp_path / "out")]
    assert main([*common, "--target-weights", str(wrong_file)]) == 2
    message = capsys.readouterr().err
    assert f"--target-weights {wrong_file}" in message  # no classifier: 0 classes against the reference's 1000
    assert "0 classes, the reference's checkpoint 1000: not a copy of the same model" in message
    assert main([*common, "--target-weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors: no such file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_runtimes_without_module_outputs_are_refused_with_the_reason(capsys):
    with pytest.raises(RuntimeUnavailableError, match="supports PyTorch eager, OpenVINO and ONNX Runtime targets"):
        validate(LayersConfig.of(runtime="compile"))
    validate(LayersConfig.of(runtime="onnxruntime"))  # its graph keeps module names (tests/test_layers_engine.py)
    with pytest.raises(RuntimeUnavailableError) as int8:  # the advice is one that int8 can follow
        validate(LayersConfig.of(runtime="compile", dtype="int8"))
    assert "--runtime openvino` or `onnxruntime` with --dtype int8" in str(int8.value)
    assert "--runtime eager` on the same" not in str(int8.value)
    assert main(["layers", "--runtime", "compile", "--device", "cpu"]) == 2
    assert "--runtime compile" in capsys.readouterr().err


def test_layers_config_of_a_run_keeps_its_model_inputs_target_and_criteria():

    run = RunConfig.of(weights="w.safetensors", target_weights="t.safetensors", images=("a.jpg",), device="cuda",
                       dtype="bf16", batch_size=8, criteria=(("max_rel_l2", "0.2"),), out_dir="logs/run1",
                       features=True, streams=2)
    config = LayersConfig(spec=run.spec, target=run.target)  # what run --layers-on-fail passes: nothing copied
    spec, target = config.spec, config.target
    assert (spec.weights, spec.target_weights, spec.images, spec.device, target.dtype, target.batch_size,
            spec.criteria, spec.out_dir, spec.head) == ("w.safetensors", "t.safetensors", ("a.jpg",), "cuda", "bf16",
                                                         8, (("max_rel_l2", "0.2"),), "logs/run1", "features")
    assert target.option("streams") == 2 and config.effective_modes == ("chained", "isolated")
    openvino = LayersConfig(spec=run.spec, target=replace(run.target, runtime="openvino"))
    assert openvino.effective_modes == ("chained",)  # a run on OpenVINO localises in the mode the engine has


@pytest.fixture(scope="module")
def class_swapped_file(tmp_path_factory, seeded_state, reference, two_images):
    """The reference's top class of the first photo swapped with its bottom class in head.fc: every output value
    stays where it was but two, so relative L2 and cosine move little while top-1 flips."""
    config = timm.data.resolve_model_data_config(reference)
    from accelport.preprocess import open_rgb

    with torch.no_grad():
        logits = reference(timm.data.create_transform(**config)(open_rgb(two_images[0]))[None])[0]
    top, bottom = int(logits.argmax()), int(logits.argmin())
    state = dict(seeded_state)
    for key in ("head.fc.weight", "head.fc.bias"):
        rows = list(range(state[key].shape[0]))
        rows[top], rows[bottom] = bottom, top
        state[key] = seeded_state[key][rows].contiguous()
    path = tmp_path_factory.mktemp("swapped") / "class_swapped.safetensors"
    save_file(state, str(path))
    return path


# Only the top-1 check can fail: a class swap's rel L2 (~0.3) and cosine (~0.96) pass these, every element share too.
TOP1_ONLY = ["--criterion", "max_rel_l2=0.5", "--criterion", "min_cosine=0.5", "--criterion", "min_within_share=0"]


@pytest.mark.parametrize("target", ["clean", "class swapped"])
def test_layers_exits_1_exactly_when_run_fails_on_top1_alone(tmp_path, seeded_weights, class_swapped_file,
                                                             two_images, target, capsys):
    """run and layers on the same target and criteria: the same exit code, and layers says which output check
    failed and where the error grows fastest when no module crosses a limit."""
    target_file = seeded_weights if target == "clean" else class_swapped_file
    common = ["--device", "cpu", "--weights", str(seeded_weights), "--target-weights", str(target_file),
              "--images", two_images[0], *TOP1_ONLY]
    run_rc = main(["run", *common, "--iters", "1", "--warmup", "0", "--out-dir", str(tmp_path / "run"), "-q"])
    layers_rc = main(["layers", *common, "--mode", "chained", "--out-dir", str(tmp_path / "layers"), "-q"])
    printed = capsys.readouterr().out
    assert (run_rc, layers_rc) == ((0, 0) if target == "clean" else (1, 1))
    if target == "clean":
        return
    checks = json.loads((tmp_path / "run" / "summary.json").read_text())["parity"]["checks"]
    assert [c["name"] for c in checks if not c["passed"]] == ["real_top1_mismatches"]
    data = json.loads((tmp_path / "layers" / "layers.json").read_text())
    assert data["status"] == "output-failed" and data["first_divergent"] == {"chained": None}
    assert data["output_verdict"]["failed_checks"][0].startswith("real_top1_mismatches 1 ")
    assert data["output_verdict"]["fastest_growth"]["chained"]["module"] == "head.fc"
    assert "fails run's check(s): real_top1_mismatches" in printed and "grows fastest at head.fc" in printed
    assert "fails: real_top1_mismatches" in (tmp_path / "layers" / "layers.md").read_text()


def test_a_nan_in_an_unused_weight_fails_the_output_verdict_though_no_module_diverges():
    """run scans the loaded weights for NaN/Inf; so does layers' verdict, even where no output carries it."""
    from accelport.layers.verdict import judge_output, layers_status

    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    target = copy.deepcopy(reference)
    target.register_parameter("unused", torch.nn.Parameter(torch.tensor([1.0, float("nan")])))
    comparison = compare_layers(reference, target, [torch.randn(2, 8)], criteria_for("fp32"))
    verdict = judge_output(comparison, None, criteria_for("fp32"), is_classifier=True, names=["a", "b"],
                           baseline=None, weights={"reference": reference, "target": target})
    assert not comparison.diverged and layers_status(comparison, None, verdict) == "output-failed"
    assert [check.name for _, check in verdict.failed_checks()] == ["nonfinite_weights"]
    assert "target weights: unused (1)" in verdict.to_json()["failed_checks"][0]


def test_the_same_precision_baseline_ratio_alone_fails_the_output_verdict(reference, small_photos):
    """A bf16 target whose every module is within the bf16 criteria, judged against a baseline that is exact:
    the baseline-ratio check of run fails it, so layers must too."""
    from accelport.layers.verdict import judge_output, layers_status

    target = copy.deepcopy(reference).to(torch.bfloat16)
    comparison = compare_layers(reference, target, [small_photos], criteria_for("bf16"), modes=("chained",))
    exact_baseline = comparison.model_outputs[0]  # as good as the fp32 reference: any bf16 error is > 2x its floor
    verdict = judge_output(comparison, None, criteria_for("bf16"), is_classifier=True, names=["a", "b"],
                           baseline=exact_baseline, weights={"reference": reference})
    assert not comparison.diverged and layers_status(comparison, None, verdict) == "output-failed"
    assert {check.name for _, check in verdict.failed_checks()} >= {"max_baseline_rel_l2_ratio"}
    assert verdict.fastest_growth["chained"]["module"]  # where the error grows fastest is named


def test_chained_mode_names_the_module_whose_own_weights_feed_its_activation_child():
    """timm's BatchNormAct2d normalises with its own weight and bias, then calls its child `act`: a wrong bias shows
    first in `act`'s output, but the module at fault is the BatchNormAct2d itself, in both modes."""
    from timm.layers import BatchNormAct2d

    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), BatchNormAct2d(8)).eval()
    target = copy.deepcopy(reference)
    with torch.no_grad():
        target[1].bias.add_(0.5)
    comparison = compare_layers(reference, target, [torch.randn(2, 3, 8, 8)], criteria_for("fp32"))
    assert {mode: comparison.first_divergent(mode)[1].key for mode in comparison.modes} == {"chained": "1",
                                                                                            "isolated": "1"}


def test_fastest_growth_names_a_module_only_where_some_error_grows():
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3)).eval()
    identical = compare_layers(reference, copy.deepcopy(reference), [torch.randn(2, 3, 8, 8)], criteria_for("fp32"))
    assert all(identical.fastest_growth(mode) is None for mode in identical.modes)  # nothing to point at
    target = copy.deepcopy(reference)
    with torch.no_grad():
        target[2].weight.mul_(1 + 1e-5)  # under every limit, but an error that starts at the last conv
    slightly = compare_layers(reference, target, [torch.randn(2, 3, 8, 8)], criteria_for("fp32"))
    assert {mode: slightly.fastest_growth(mode)["module"] for mode in slightly.modes} == {"chained": "2",
                                                                                          "isolated": "2"}


def test_a_passing_layers_run_reads_as_a_pass(tmp_path, seeded_weights, two_images, capsys):
    """Same weights both sides: exit 0, no divergent module, and no failure's clue ("the error grows fastest at"
    was printed on passing runs too)."""
    rc = main(["layers", "--device", "cpu", "--weights", str(seeded_weights), "--images", two_images[0],
               "--mode", "chained", "--out-dir", str(tmp_path), "-q"])
    printed = capsys.readouterr().out
    assert rc == 0 and "no divergent module" in printed and "grows fastest" not in printed
