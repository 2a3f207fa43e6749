"""The verdict end to end: --target-weights, the structural proof, the same-precision baseline, NaN weights."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import accelport
from accelport.cli import main

FC2 = "stages.2.blocks.1.mlp.fc2.weight"


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory, seeded_state):
    """The seeded checkpoint, and faulty copies of it as a careless conversion would write them."""
    root = tmp_path_factory.mktemp("faulty")
    files = {"clean": root / "clean.safetensors"}
    save_file(seeded_state, str(files["clean"]))
    noisy = dict(seeded_state)
    weight = noisy[FC2]
    noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
    noisy[FC2] = weight + 1e-2 * weight.abs().mean() * noise  # 1 % noise: hidden by bf16, not by fp32
    swapped = dict(seeded_state)
    swapped[FC2] = seeded_state[FC2][[1, 0, *range(2, weight.shape[0])]]  # two output channels swapped
    nan = dict(seeded_state)
    nan["head.fc.bias"] = seeded_state["head.fc.bias"].clone()
    nan["head.fc.bias"][7] = float("nan")
    for name, state in (("noisy", noisy), ("swapped", swapped), ("nan", nan)):
        files[name] = root / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(files[name]))
    # the converted copies a porting engineer makes: the checkpoint saved in bf16, and the noisy one saved so
    for name, state in (("bf16_copy", seeded_state), ("noisy_bf16_copy", noisy)):
        files[name] = root / f"{name}.safetensors"
        save_file({k: v.bfloat16().contiguous() if v.is_floating_point() else v for k, v in state.items()},
                  str(files[name]))
    return files


def _run(tmp_path, files, target, dtype, images, **kwargs):
    return accelport.run(weights=str(files["clean"]), target_weights=str(files[target]), device="cpu", dtype=dtype,
                         images=tuple(images), out_dir=str(tmp_path / f"{target}-{dtype}"), iters=1, warmup=0,
                         **kwargs)


def test_clean_bf16_run_passes_with_its_structural_proof_and_baseline(tmp_path, weights_files, two_images):
    result = _run(tmp_path, weights_files, "clean", "bf16", two_images)
    assert result.passed, [c for c in result.summary["parity"]["checks"] if not c["passed"]]
    proof, baseline = result.summary["structural_proof"], result.summary["parity"]["baseline"]
    assert proof["status"] == "passed" and proof["parity"]["criteria"]["precision"] == "fp32"
    assert baseline["per_image"][0]["baseline_rel_l2"] > 0 and baseline["per_image"][0]["rel_l2_ratio"] <= 2
    assert result.summary["target_weights"]["sha256"] == result.summary["weight_sha256"]  # same bytes, two files
    assert result.summary["target_weights"]["differing_tensors"] == []
    assert result.summary["target_weights"]["caution"] is None
    report = (tmp_path / "clean-bf16" / "report.md").read_text()
    assert "structural proof" in report and "same-precision baseline" in report
    assert "; identical to --weights in every floating-point tensor" in report


def test_a_fault_too_small_to_fail_is_still_named_with_the_tensors_that_differ(tmp_path, seeded_state, two_images,
                                                                              weights_files, caplog):
    """A port that changes a tensor passed without a word when the change moved the outputs, but less than the
    criteria (random init: ConvNeXt's layer scale starts at 1e-6, so a zeroed channel moved them by 3e-7)."""
    import logging

    tiny = dict(seeded_state)
    tiny[FC2] = seeded_state[FC2] * (1 + 1e-6)
    save_file({k: v.contiguous() for k, v in tiny.items()}, str(tmp_path / "tiny.safetensors"))
    with caplog.at_level(logging.WARNING, logger="accelport"):
        result = accelport.run(weights=str(weights_files["clean"]), target_weights=str(tmp_path / "tiny.safetensors"),
                               device="cpu", images=tuple(two_images), out_dir=str(tmp_path / "out"), iters=1,
                               warmup=0)
    assert result.passed and result.summary["parity"]["worst_sample_rel_l2"] > 0  # moved, within fp32's limits
    assert result.summary["target_weights"]["differing_tensors"] == [FC2]
    caution = (f"PASSED, yet --target-weights differs from --weights in 1 tensor(s) ({FC2}): their effect on these "
               "images is within the criteria. A faithful port differs nowhere")  # real --weights: no random init
    assert caution in caplog.text and result.summary["target_weights"]["caution"].startswith(caution)
    for name in ("report.md", "accuracy_compare.log"):  # the artifacts, not only the console (a reader sees a PASS)
        text = (tmp_path / "out" / name).read_text()
        assert f"differs from --weights in 1 tensor(s): {FC2}" in text and f"caution: {caution}" in text
    assert "structural proof" not in result.summary["target_weights"]["caution"]  # fp32: there is none to run
    # bf16 hides a 1 % fault that strict fp32 sees; without the proof the caution blamed random-init layer scales
    result = accelport.run(weights=str(weights_files["clean"]), target_weights=str(weights_files["noisy"]),
                           device="cpu", dtype="bf16", structural_proof=False, images=tuple(two_images[:1]),
                           out_dir=str(tmp_path / "bf16"), iters=1, warmup=0)
    assert result.passed and result.summary["target_weights"]["caution"].endswith(
        "The structural proof, which judges the same target in strict fp32 where the precision's own error hides a "
        "fault, did not run (disabled by --no-structural-proof: weight and layout bugs that bf16's rounding hides "
        "are NOT ruled out): run with it before trusting this PASS")


@pytest.mark.parametrize("fault", ["noisy", "swapped"])
def test_weight_faults_fail_bf16_through_the_structural_proof(tmp_path, weights_files, two_images, fault):
    result = _run(tmp_path, weights_files, fault, "bf16", two_images[:1])
    assert not result.passed
    assert result.summary["structural_proof"]["status"] == "failed"
    summary = json.loads((tmp_path / f"{fault}-bf16" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["target_weights"]["path"].endswith(f"{fault}.safetensors")


def test_features_still_names_a_port_classifier_it_drops(tmp_path, seeded_state, weights_files, two_images, caplog):
    """--features drops both heads before the comparison: a port with two classifier rows swapped passed without a
    word. The rounding of a bf16 copy's head is not a difference."""
    import logging

    swapped = dict(seeded_state)
    swapped["head.fc.weight"] = seeded_state["head.fc.weight"][[1, 0, *range(2, 1000)]]
    save_file({k: v.contiguous() for k, v in swapped.items()}, str(tmp_path / "swapped_head.safetensors"))
    runs = {}
    with caplog.at_level(logging.WARNING, logger="accelport"):
        for name, path in (("swapped", tmp_path / "swapped_head.safetensors"), ("copy", weights_files["bf16_copy"])):
            runs[name] = accelport.run(weights=str(weights_files["clean"]), target_weights=str(path), features=True,
                                       device="cpu", images=tuple(two_images[:1]), out_dir=str(tmp_path / name),
                                       iters=1, warmup=0, dtype="bf16")
    assert runs["swapped"].passed  # the features do not depend on the classifier ...
    assert runs["swapped"].summary["target_weights"]["differing_tensors"] == ["head.fc.weight"]  # ... but it is named
    assert "differs from --weights in 1 classifier tensor(s) (head.fc.weight) that --features drops" in caplog.text
    assert "PASSED, yet" not in caplog.text  # not "within the criteria": no output computed it
    assert runs["copy"].summary["target_weights"]["differing_tensors"] == []


def test_a_bf16_copy_of_the_checkpoint_is_proved_against_the_reference_rounded_as_it_stores_it(tmp_path, seeded_state,
                                                                                              weights_files,
                                                                                              two_images):
    """A bf16 copy of the fp32 checkpoint failed every bf16 run's strict-fp32 proof by its rounding alone (rel L2
    ~4e-3 against the fp32 limit 1e-3), though its bf16 run equals accelport's own bf16 baseline."""
    rounded = sum(1 for v in seeded_state.values()
                  if v.is_floating_point() and not torch.equal(v.bfloat16().float(), v))
    result = _run(tmp_path, weights_files, "bf16_copy", "bf16", two_images[:1])
    proof = result.summary["structural_proof"]
    assert result.passed and proof["status"] == "passed"
    assert proof["parity"]["worst_sample_rel_l2"] == 0  # the same values on both sides of the proof
    assert proof["reference_rounded_like_target_weights"] == {"tensors_rounded": {"bfloat16": rounded}}
    assert f"({rounded} tensor(s) to bfloat16; every other tensor as loaded)" in (
        tmp_path / "bf16_copy-bf16" / "report.md").read_text()
    # the run itself is still judged against the checkpoint as loaded: in fp32 the copy's rounding fails
    fp32 = _run(tmp_path, weights_files, "bf16_copy", "fp32", two_images[:1])
    assert not fp32.passed and fp32.summary["structural_proof"]["status"] == "not-needed"
    # fp16 computes finer than the copy stores: its run fails against fp16's baseline, read as the file's rounding
    fp16 = _run(tmp_path, weights_files, "bf16_copy", "fp16", two_images[:1])
    assert not fp16.passed and fp16.summary["structural_proof"]["status"] == "passed"
    assert "measure fp16's own error (fp16 rounding) plus the file's bfloat16 rounding, which a fp16 run of the " \
           "original checkpoint does not carry" in (tmp_path / "bf16_copy-fp16" / "report.md").read_text()
    # a fault larger than the rounding is still the proof's: 1 % noise in one tensor, then saved in bf16
    noisy = _run(tmp_path, weights_files, "noisy_bf16_copy", "bf16", two_images[:1])
    assert not noisy.passed and noisy.summary["structural_proof"]["status"] == "failed"
    assert noisy.summary["structural_proof"]["reference_rounded_like_target_weights"] == {
        "tensors_rounded": {"bfloat16": rounded - 1}}  # the noisy tensor is not the rounding of the reference's
    # the tensors that differ are counted beyond the copy's rounding: none for the copy, the noisy one for the other
    assert (result.summary["target_weights"]["differing_tensors"], noisy.summary["target_weights"][
        "differing_tensors"], noisy.summary["target_weights"]["compared_with_rounded_reference"]) == ([], [FC2], True)
    assert f"differs from --weights beyond the bf16/fp16 rounding it stores in 1 tensor(s): {FC2}" in (
        tmp_path / "noisy_bf16_copy-bf16" / "report.md").read_text()
    assert noisy.summary["target_weights"]["underflowed_tensors"] == []  # noise is no rounding of the reference's


def test_an_exact_fp16_copy_of_tiny_values_is_named_as_lossy_not_as_a_wrong_tensor(tmp_path, seeded_state,
                                                                                   two_images, caplog):
    """An exact fp16 copy of a checkpoint with values under fp16's smallest normal (random-init ConvNeXt's layer
    scales of 1e-6) read as "differs beyond the rounding it stores" and nothing more, as a misplaced tensor reads."""
    tiny = dict(seeded_state)
    tiny[FC2] = seeded_state[FC2] * 1e-4  # ~1e-6: subnormal in fp16, a few bits left
    files = {"clean": tmp_path / "tiny.safetensors", "fp16_copy": tmp_path / "tiny_fp16.safetensors"}
    save_file({k: v.contiguous() for k, v in tiny.items()}, str(files["clean"]))
    save_file({k: v.half().contiguous() if v.is_floating_point() else v for k, v in tiny.items()},
              str(files["fp16_copy"]))
    lost = float((tiny[FC2].half().float() - tiny[FC2]).norm() / tiny[FC2].norm())
    assert lost > 2.0 ** -11  # more than fp16's rounding of a normal value moves it
    result = _run(tmp_path, files, "fp16_copy", "fp32", two_images[:1])
    port = result.summary["target_weights"]
    assert port["differing_tensors"] == [FC2] and port["compared_with_rounded_reference"]
    assert port["underflowed_tensors"] == [{"tensor": FC2, "dtype": "float16", "rel_change": pytest.approx(lost)}]
    assert (f"differs from --weights beyond the bf16/fp16 rounding it stores in 1 tensor(s): {FC2} (all of them: "
            "exactly --weights rounded to float16 to nearest, with values under its smallest normal (6.1e-05), which "
            f"it keeps with fewer bits or as zero: {100 * lost:.2g} % of each tensor lost, precision rather than a "
            "misplaced value)") in (tmp_path / "fp16_copy-fp32" / "report.md").read_text()
    tiny_only = dict(tiny)
    tiny_only[FC2] = tiny[FC2].half().float()  # the copy's only rounding: the tiny tensor, read as lossy when it passes
    save_file({k: v.contiguous() for k, v in tiny_only.items()}, str(tmp_path / "tiny_only.safetensors"))
    files["tiny_only"] = tmp_path / "tiny_only.safetensors"
    caplog.clear()
    with caplog.at_level("WARNING", logger="accelport"):
        lossy = _run(tmp_path, files, "tiny_only", "fp32", two_images[:1])
    assert lossy.passed and lossy.summary["target_weights"]["underflowed_tensors"][0]["tensor"] == FC2
    assert (f"PASSED; --target-weights is --weights rounded to half precision, which keeps 1 tensor(s) ({FC2}) with "
            "fewer bits or as zero") in caplog.text and "PASSED, yet" not in caplog.text


def test_the_layers_strict_pass_of_a_bf16_copy_names_the_faulty_module_not_the_rounding(tmp_path, weights_files,
                                                                                      two_images, capsys):
    """Against the unrounded reference, the strict fp32 pass of any bf16 copy diverged at the stem convolution."""
    argv = ["layers", "--device", "cpu", "--dtype", "bf16", "--weights", str(weights_files["clean"]), "--images",
            two_images[0], "--mode", "isolated"]
    assert main([*argv, "--target-weights", str(weights_files["bf16_copy"]), "--out-dir", str(tmp_path / "a")]) == 0
    assert "isolated  strict fp32 pass of the same target (fp32 criteria): no divergent module" in \
        capsys.readouterr().out
    layers_md = (tmp_path / "a" / "layers.md").read_text()
    assert "- strict fp32 pass: against the reference with its weights rounded as --target-weights stores them" \
        in layers_md
    assert "| isolated, strict fp32 pass (fp32 criteria) | none | | | 124 modules, all within" in layers_md
    assert main([*argv, "--target-weights", str(weights_files["noisy_bf16_copy"]), "--out-dir",
                 str(tmp_path / "b")]) == 1
    assert (f"isolated  strict fp32 pass of the same target (fp32 criteria): first divergent module: "
            f"{FC2.rsplit('.', 1)[0]} ") in capsys.readouterr().out


def test_bench_and_eval_prove_a_bf16_copy_against_the_reference_rounded_like_it(tmp_path, weights_files,
                                                                               two_images):
    common = ["--device", "cpu", "--weights", str(weights_files["clean"])]
    for name, expected_rc in (("bf16_copy", 0), ("noisy_bf16_copy", 1)):
        target = ["--target-weights", str(weights_files[name])]
        assert main(["bench", *common, *target, "--runtimes", "eager", "--dtypes", "bf16", "--batch-sizes", "1",
                     "--images", two_images[0], "--rounds", "1", "--no-peers", "--no-plot", "--iters", "1",
                     "--warmup", "0", "--out-dir", str(tmp_path / f"bench-{name}")]) == expected_rc
        bench = json.loads((tmp_path / f"bench-{name}" / "bench.json").read_text())
        proof = bench["rows"][0]["parity"]["structural_proof"] if bench["rows"][0]["label"] == "eager bf16" else \
            bench["rows"][1]["parity"]["structural_proof"]
        assert proof["status"] == ("passed" if expected_rc == 0 else "failed")
        assert "rounded as --target-weights stores them" in proof["reason"]
        assert {c["name"]: c["passed"] for c in bench["rows"][0]["parity"]["checks"]}["nonfinite_weights"]
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        shutil.copy(two_images[0], data)
        assert main(["eval", *common, *target, "--dtype", "bf16", "--data", str(data), "--labels", "none",
                     "--out-dir", str(tmp_path / f"eval-{name}")]) == expected_rc
        evaluation = json.loads((tmp_path / f"eval-{name}" / "eval.json").read_text())
        assert evaluation["target"]["structural_proof"]["status"] == ("passed" if expected_rc == 0 else "failed")
        assert "tensors_rounded" in evaluation["target"]["structural_proof"]["reference_rounded_like_target_weights"]


@pytest.mark.parametrize("target", ["clean", "noisy"])
def test_a_precision_failure_with_an_intact_port_is_read_as_the_precisions_own_error(tmp_path, weights_files,
                                                                                     two_images, target):
    """Criteria too tight for bf16 fail a clean port; the log then says the weights arrived intact (the structural
    proof passed), so the user looks at the precision, not the conversion. A faulty port gets no such reading."""
    result = _run(tmp_path, weights_files, target, "bf16", two_images[:1], criteria=(("max_rel_l2", "1e-9"),))
    log = (tmp_path / f"{target}-bf16" / "accuracy_compare.log").read_text()
    assert not result.passed
    assert ("weights and layout arrived intact" in log) == (target == "clean")
    assert "bf16 rounding" in log or target == "noisy"
    assert "RANDOM-INIT" not in log  # real (seeded) checkpoint files: no random-init caveat
    report = (tmp_path / f"{target}-bf16" / "report.md").read_text()
    assert ("weights and layout arrived intact" in report) == (target == "clean")


def test_skipping_the_structural_proof_is_said_plainly(tmp_path, weights_files, two_images):
    result = _run(tmp_path, weights_files, "clean", "bf16", two_images[:1], structural_proof=False)
    assert result.summary["structural_proof"]["status"] == "skipped"
    log = (tmp_path / "clean-bf16" / "accuracy_compare.log").read_text()
    assert "bugs that bf16's rounding hides are NOT ruled out" in log


def test_nan_in_target_weights_fails_and_names_the_tensor(tmp_path, weights_files, two_images, capsys):
    code = main(["run", "--weights", str(weights_files["clean"]), "--target-weights", str(weights_files["nan"]),
                 "--device", "cpu", "--images", two_images[0], "--iters", "1", "--warmup", "0",
                 "--out-dir", str(tmp_path)])
    assert code == 1
    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=_refuse_non_standard_json)
    checks = {c["name"]: c for c in summary["parity"]["checks"]}
    assert not checks["nonfinite_weights"]["passed"]
    assert "target weights: head.fc.bias (1)" in checks["nonfinite_weights"]["detail"]
    assert not checks["nonfinite_target_values"]["passed"]
    assert summary["max_abs_diff"] is None and summary["cosine_similarity"] is None  # not a number, never "0 apart"
    log = (tmp_path / "accuracy_compare.log").read_text()
    assert re.search(r"max abs diff +nan\n", log)
    assert f"target weights (--target-weights): {weights_files['nan']}" in log  # the log named only --weights


def _refuse_non_standard_json(token: str):
    raise ValueError(f"summary.json holds the non-standard token {token}")


def test_a_reference_whose_logits_are_all_zero_fails_as_proving_nothing(tmp_path, seeded_state, weights_files,
                                                                         two_images):
    dead = {k: (torch.zeros_like(v) if k.startswith("head.fc.") else v) for k, v in seeded_state.items()}
    weights = tmp_path / "dead_head.safetensors"  # as timm's random init leaves MLP-Mixer's classifier
    save_file(dead, str(weights))
    runs = {name: accelport.run(weights=str(path), device="cpu", images=tuple(two_images), iters=1, warmup=0,
                                out_dir=str(tmp_path / name))
            for name, path in (("dead", weights), ("alive", weights_files["clean"]))}
    checks = {name: {c["name"]: c for c in json.loads((tmp_path / name / "summary.json").read_text())["parity"]
                     ["checks"]} for name in runs}
    assert not runs["dead"].passed and not checks["dead"]["zero_reference_outputs"]["passed"]
    assert checks["dead"]["min_sample_cosine"]["passed"]  # zeros against zeros: closeness is met, vacuously
    assert "all zero for 2 of 2 image(s)" in checks["dead"]["zero_reference_outputs"]["detail"]
    assert "or compare the features before the head with --features" in \
        checks["dead"]["zero_reference_outputs"]["detail"]
    assert runs["alive"].passed and checks["alive"]["zero_reference_outputs"]["passed"]
    # in bf16 the zeros are the same zeros: that is the dead head, not "the engine fell back to fp32" (exit 2)
    bf16 = accelport.run(weights=str(weights), device="cpu", dtype="bf16", images=tuple(two_images[:1]), iters=1,
                         warmup=0, out_dir=str(tmp_path / "dead-bf16"))
    assert [c["name"] for c in bf16.summary["parity"]["checks"] if not c["passed"]] == ["zero_reference_outputs"]
    assert "reading:" not in (tmp_path / "dead-bf16" / "accuracy_compare.log").read_text()


def test_a_target_that_outputs_only_zeros_is_said_so(tmp_path, seeded_state, weights_files, two_images, capsys):
    """lcnet_050's int8 program returned all zeros on random init (its logits ~1e-7 rounded away): the report
    showed cosine 0 and rel L2 1 and said nothing of why. Here a port whose classifier lost its weights."""
    dead = {k: (torch.zeros_like(v) if k.startswith("head.fc.") else v) for k, v in seeded_state.items()}
    save_file(dead, str(tmp_path / "dead_head.safetensors"))
    result = accelport.run(weights=str(weights_files["clean"]), target_weights=str(tmp_path / "dead_head.safetensors"),
                           device="cpu", images=tuple(two_images), iters=1, warmup=0, out_dir=str(tmp_path / "out"))
    assert not result.passed
    assert result.summary["parity"]["zero_target_images"] == list(two_images)
    assert "caution: the target's outputs are all zero for 2 of 2 image(s) where the reference's are not" in \
        (tmp_path / "out" / "accuracy_compare.log").read_text()
    # bench says it in its row too (its table showed only "FAIL" and the failed checks), counting each image once
    # although batch 3 repeats the first to fill the batch
    assert main(["bench", "--weights", str(weights_files["clean"]), "--target-weights",
                 str(tmp_path / "dead_head.safetensors"), "--device", "cpu", "--images", *map(str, two_images),
                 "--runtimes", "eager", "--dtypes", "fp32", "--batch-sizes", "3", "--rounds", "1", "--iters", "2",
                 "--warmup", "0", "--no-peers", "--no-plot", "--no-progress",
                 "--out-dir", str(tmp_path / "bench")]) == 1
    row = json.loads((tmp_path / "bench" / "bench.json").read_text())["rows"][0]
    assert (row["parity"]["zero_target_count"], row["parity"]["images"], row["parity"]["samples"]) == (2, 2, 3)
    assert "**outputs all zero** for 2 of 2 image(s) where the reference's are not" in \
        (tmp_path / "bench" / "bench.md").read_text()
    clean = accelport.run(weights=str(weights_files["clean"]), device="cpu", images=tuple(two_images[:1]), iters=1,
                          warmup=0, out_dir=str(tmp_path / "clean"))
    assert "zero_target_images" not in clean.summary["parity"]
    # layers named the first divergent module and said nothing of the zeros
    capsys.readouterr()
    assert main(["layers", "--weights", str(weights_files["clean"]), "--target-weights",
                 str(tmp_path / "dead_head.safetensors"), "--device", "cpu", "--images", *map(str, two_images),
                 "--out-dir", str(tmp_path / "layers")]) == 1
    said = "caution: the target's outputs are all zero for 2 of 2 image(s) where the reference's are not"
    assert said in capsys.readouterr().out and said in (tmp_path / "layers" / "layers.md").read_text()
    verdict = json.loads((tmp_path / "layers" / "layers.json").read_text())["output_verdict"]
    assert verdict["zero_target_images"] == [str(p) for p in two_images]


@pytest.mark.parametrize("precision, random_init, expected", [
    ("int8", True, "; int8 rounds activations below its scales to zero: random-init weights make them tiny, use "
                   "real --weights"),
    ("int8", False, "; int8 rounds activations below its scales to zero"), ("fp32", True, "")])
def test_bench_names_the_int8_cause_and_random_init_only_where_they_apply(precision, random_init, expected):
    from accelport.bench.report import _zero_target_note

    note = _zero_target_note({"zero_target_count": 1, "images": 6, "precision": precision}, random_init)
    assert note == "; **outputs all zero** for 1 of 6 image(s) where the reference's are not" + expected


def test_zero_outputs_are_judged_only_where_the_models_output_is():
    from accelport.criteria import criteria_for
    from accelport.parity import compare_outputs

    zeros = np.zeros((2, 5))
    for asked in (False, True):  # the structural proof and power compare against the same, already judged, zeros
        names = [c.name for c in compare_outputs(zeros, zeros, criteria_for("fp32"), False,
                                                 judge_zero_reference=asked).checks]
        assert ("zero_reference_outputs" in names) is asked
    one_zero = np.array([[0.0, 0.0], [1.0, 2.0]])
    check = next(c for c in compare_outputs(one_zero, one_zero, criteria_for("fp32"), False,
                                            judge_zero_reference=True).checks if c.name == "zero_reference_outputs")
    assert not check.passed and check.value == 1 and "image 0" in check.detail


def test_missing_target_weights_is_exit_2_naming_the_flag(tmp_path, weights_files, two_images, capsys):
    code = main(["run", "--weights", str(weights_files["clean"]), "--target-weights", str(tmp_path / "nope.pt"),
                 "--device", "cpu", "--images", two_images[0], "--out-dir", str(tmp_path)])
    assert code == 2 and "--target-weights" in capsys.readouterr().err


def test_silent_fp32_fallback_of_a_half_precision_target_is_exit_2(tmp_path, weights_files, two_images, monkeypatch,
                                                                    capsys):
    import accelport.main_job.api as pipeline

    real = pipeline.create_runner
    monkeypatch.setattr(pipeline, "create_runner",  # an engine that ignores the requested precision
                        lambda runtime, model, device, dtype="fp32", *a, **k: real(runtime, model, device, "fp32",
                                                                                   *a, **k))
    code = main(["run", "--weights", str(weights_files["clean"]), "--device", "cpu", "--dtype", "bf16",
                 "--images", two_images[0], "--iters", "1", "--warmup", "0", "--out-dir", str(tmp_path)])
    assert code == 2 and "fell back to fp32" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()
    # a port whose classifier was never loaded outputs its bias alone, the same in every precision: its proof fails
    # (exit 1, the port's fault), where it read "the engine fell back to fp32" (exit 2, the environment's)
    unloaded = load_file(str(weights_files["clean"]))
    unloaded["head.fc.weight"] = torch.zeros_like(unloaded["head.fc.weight"])
    unloaded["head.fc.bias"] = torch.randn(unloaded["head.fc.bias"].shape, generator=torch.Generator().manual_seed(1))
    save_file(unloaded, str(tmp_path / "unloaded_head.safetensors"))
    code = main(["run", "--weights", str(weights_files["clean"]), "--target-weights",
                 str(tmp_path / "unloaded_head.safetensors"), "--device", "cpu", "--dtype", "bf16", "--images",
                 two_images[0], "--iters", "1", "--warmup", "0", "--out-dir", str(tmp_path)])
    assert code == 1 and "fell back" not in capsys.readouterr().err
    proof = json.loads((tmp_path / "summary.json").read_text())["structural_proof"]
    assert proof["status"] == "failed"


def test_openvino_blobs_are_cached_per_precision_and_plan(tmp_path):
    from accelport.runners import openvino as openvino_runner

    runner = openvino_runner.OpenVinoRunner(torch.nn.Identity(), torch.device("cpu"), dtype="fp32",
                                            cache_dir=tmp_path)
    runner._prepare_impl()
    first = runner._config["CACHE_DIR"]
    runner.dtype, runner.streams = "fp16", 2  # what a second run in the same cache folder would ask for
    runner._prepare_impl()
    assert runner._config["CACHE_DIR"] != first and "f16" in runner._config["CACHE_DIR"]


@pytest.mark.parametrize("order", [("fp32", "fp16"), ("fp16", "fp32")])
def test_openvino_fp16_and_fp32_in_one_cache_folder_each_compute_in_their_precision(tmp_path, weights_files,
                                                                                    two_images, order, monkeypatch):
    """Issue 11: fp16 after fp32 in one cache folder must not reuse the fp32 blob, and fp32 after fp16 must pass.

    Runs only where OpenVINO offers fp16 on this CPU (AMX-FP16 / AVX512-FP16); elsewhere it says why it skipped.
    """
    pytest.importorskip("openvino")
    from accelport.runners.openvino import shared_core

    capabilities = shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "FP16" not in capabilities:
        pytest.skip(f"OpenVINO has no fp16 on this CPU (capabilities: {', '.join(capabilities)})")
    monkeypatch.setenv("ACCELPORT_CACHE_DIR", str(tmp_path / "one_cache"))  # exports and blobs of both runs
    outputs = {}
    for dtype in order:
        result = _run(tmp_path, weights_files, "clean", dtype, two_images[:1], runtime="openvino")
        if dtype == "fp32":  # fp32 after fp16 must not run the fp16 blob
            assert result.passed, result.summary["parity"]
        outputs[dtype] = result.target
    assert not (outputs["fp16"] == outputs["fp32"]).all()  # a reused fp32 blob would be bit-identical


def test_a_reference_that_barely_depends_on_its_input_is_said_to_be_blind_to_a_target_that_ignores_it(
        tmp_path, seeded_state, weights_files, two_images):
    blind = dict(seeded_state)  # the classifier answers its bias, whatever the image: a constant output
    blind["head.fc.weight"] = torch.zeros_like(seeded_state["head.fc.weight"])
    blind["head.fc.bias"] = torch.linspace(-1, 1, seeded_state["head.fc.bias"].numel())
    weights = tmp_path / "blind.safetensors"
    save_file(blind, str(weights))
    for name, path in (("blind", weights), ("seeded", weights_files["clean"])):
        result = accelport.run(weights=str(path), device="cpu", images=tuple(two_images), iters=1, warmup=0,
                               out_dir=str(tmp_path / name))
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        log = (tmp_path / name / "accuracy_compare.log").read_text()
        blind_run = name == "blind"
        assert result.passed  # the target is right; what the run cannot show is said beside the verdict
        assert (summary["parity"]["constant_output_rel_l2"] < 1e-6) is blind_run
        assert ("cannot see a target that ignores it" in log) is blind_run
        assert ("cannot see a target that ignores it" in (tmp_path / name / "report.md").read_text()) is blind_run
    copy = tmp_path / f"copy{Path(two_images[0]).suffix}"  # a second file: one path named twice is compared once
    shutil.copyfile(two_images[0], copy)
    copies = accelport.run(weights=str(weights_files["clean"]), device="cpu", images=(two_images[0], str(copy)),
                           iters=1, warmup=0, out_dir=str(tmp_path / "copies"))  # a model that sees, one image twice
    assert copies.passed and json.loads((tmp_path / "copies" / "summary.json").read_text())["input_blind"]
    assert "or the images are near-copies" in (tmp_path / "copies" / "accuracy_compare.log").read_text()
    one = accelport.run(weights=str(weights), device="cpu", images=tuple(two_images[:1]), iters=1, warmup=0,
                        out_dir=str(tmp_path / "one"))
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["parity"]["constant_output_rel_l2"] is None and summary["input_blind"] is None  # not judged
    assert "is not judged here" in (tmp_path / "one" / "accuracy_compare.log").read_text()
    assert one.passed  # one image: nothing to compare it with
    twice = accelport.run(weights=str(weights), device="cpu", images=(two_images[0], two_images[0]), iters=1,
                          warmup=0, out_dir=str(tmp_path / "twice"))
    assert json.loads((tmp_path / "twice" / "summary.json").read_text())["inputs"]["num_images"] == 1
    assert twice.passed


def test_blindness_is_judged_by_the_tightest_limit_that_applies_to_the_target():
    from accelport.criteria import criteria_for
    from accelport.parity import compare_outputs

    rng = np.random.default_rng(0)
    common = rng.standard_normal(100)
    reference = common + 0.01 * rng.standard_normal((3, 100))  # a constant answer is ~1.4e-2 off: under bf16's 0.1
    bf16 = criteria_for("bf16")
    alone = compare_outputs(reference, reference, bf16, False)
    assert alone.constant_output_rel_l2 is not None and 1e-3 < alone.constant_output_rel_l2 < bf16.max_rel_l2
    assert alone.input_blind  # bf16's own limit would let a target that ignores its input through
    baseline = reference * (1 + 1e-3)  # a correct bf16 implementation's error, 1e-3: the ratio limit is far tighter
    assert not compare_outputs(reference, reference, bf16, False, baseline=baseline).input_blind
    assert not compare_outputs(reference, reference, criteria_for("fp32"), False).input_blind  # fp32: 1e-3


def test_bench_of_a_port_fails_its_bf16_rows_through_the_structural_proof(tmp_path, weights_files, two_images):
    """1 % noise in one layer passes bf16's absolute limits; bench's bf16 row of the port passed and was picked
    while the fp32 row failed. With --target-weights the half-precision rows get run's structural proof."""
    rc = main(["bench", "--device", "cpu", "--weights", str(weights_files["clean"]), "--target-weights",
               str(weights_files["noisy"]), "--runtimes", "eager", "--dtypes", "fp32,bf16", "--batch-sizes", "1",
               "--images", *two_images, "--rounds", "1", "--no-peers", "--no-plot", "--iters", "1", "--warmup", "0",
               "--out-dir", str(tmp_path)])
    rows = {row["label"]: row for row in json.loads((tmp_path / "bench.json").read_text())["rows"]}
    bf16 = rows["eager bf16"]["parity"]
    assert rc == 1 and not bf16["passed"]
    assert bf16["failed_checks"] == ["structural_proof"]  # bf16's own limits alone let the fault through
    assert bf16["structural_proof"]["status"] == "failed"


def test_layers_answers_with_the_strict_fp32_pass_where_it_diverges_else_with_the_targets_own(tmp_path,
                                                                                             weights_files,
                                                                                             two_images, capsys):
    """The answer was the earlier of the two passes: where the precision's own error crossed a module's limit
    before the fault (int8 on ViT and ResNet, bf16 on EfficientNet: here a tightened bf16 criterion), it named that
    module, the one a correct port names too, and a correct port's named module read as a fault."""
    argv = ["layers", "--device", "cpu", "--dtype", "bf16", "--weights", str(weights_files["clean"]), "--images",
            two_images[0]]
    module = FC2.rsplit(".", 1)[0]
    for tightened in ([], ["--criterion", "max_rel_l2=1e-4"]):  # bf16 diverges after the fault, then at the stem
        out_dir = tmp_path / f"noisy{len(tightened)}"
        rc = main([*argv, *tightened, "--target-weights", str(weights_files["noisy"]), "--out-dir", str(out_dir)])
        out = capsys.readouterr().out
        assert rc == 1  # 1 % noise: hidden by bf16's own error, named by the strict fp32 pass
        assert (f"answer    the strict fp32 pass's where it diverges (a weight or layout fault), else the target's "
                f"own: chained {module}, isolated ") in out
        assert "**Answer** (the strict fp32 pass's where it diverges" in (out_dir / "layers.md").read_text()
        assert "reading   " not in out
        # where the fault is exactly: what the chained answer names may be a module after a parameter's owner
        assert f"weights   --target-weights differs from --weights in 1 tensor(s): {FC2} (of {module})" in out
        if tightened:
            assert f"chained   first divergent module: {module}" not in out  # bf16's own pass: earlier
    rc = main([*argv, "--criterion", "max_rel_l2=1e-4", "--target-weights", str(weights_files["clean"]),
               "--out-dir", str(tmp_path / "clean")])
    out = capsys.readouterr().out
    assert rc == 1 and "strict fp32 pass of the same target (fp32 criteria): no divergent module" in out
    assert ("reading   the same target in strict fp32 diverges at no module, so the weights and layout arrived "
            "intact: the module named is where bf16's own error first crosses a per-module limit, not a fault") in out
    report = (tmp_path / "clean" / "layers.md").read_text()
    assert "Reading: the same target in strict fp32 diverges at no module" in report


def test_a_port_whose_faulty_tensor_cannot_reach_the_outputs_is_said(tmp_path, capsys, two_images):
    """timm's random init zero-initialises the last BatchNorm of each ResNet block: a convolution 5 % off in that
    branch changes no output, so every runtime PASSED the port without a word."""
    import timm

    from accelport.cli import main

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}
    assert float(state["layer1.0.bn2.weight"].abs().max()) == 0  # the branch's last BatchNorm: zeros
    port = dict(state, **{"layer1.0.conv2.weight": state["layer1.0.conv2.weight"] * 1.05})
    save_file(state, str(tmp_path / "reference.safetensors"))
    save_file(port, str(tmp_path / "port.safetensors"))
    argv = ["run", "--model", "test_resnet", "--weights", str(tmp_path / "reference.safetensors"), "--device", "cpu",
            "--images", *two_images, "--iters", "1", "--warmup", "0", "--out-dir", str(tmp_path / "out")]
    assert main([*argv, "--target-weights", str(tmp_path / "port.safetensors")]) == 0  # nothing to see: passes
    assert "differs from --weights in 1 tensor(s) (layer1.0.conv2.weight), yet the model computes bit-identical" \
           in capsys.readouterr().err
    port["layer1.0.bn2.weight"] = torch.full_like(state["layer1.0.bn2.weight"], 0.5)  # now it shows: no warning
    save_file(port, str(tmp_path / "port.safetensors"))
    assert main([*argv, "--target-weights", str(tmp_path / "port.safetensors")]) == 1
    assert "bit-identical" not in capsys.readouterr().err


def test_an_inf_the_outputs_never_reach_fails_bench_too_and_is_not_read_as_the_precisions_error(tmp_path, capsys,
                                                                                                  two_images):
    """An Inf in a running variance whose channel the next layer ignores (here: timm's zero-initialised BatchNorm)
    changes no output: bench passed and picked the port (it had no weights scan), and run's failure was read as
    "the weights and layout arrived intact" because the proof passed."""
    import timm

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}
    port = dict(state)
    port["layer1.0.bn2.running_var"] = state["layer1.0.bn2.running_var"].clone()
    port["layer1.0.bn2.running_var"][0] = float("inf")
    save_file(state, str(tmp_path / "reference.safetensors"))
    save_file(port, str(tmp_path / "port.safetensors"))
    common = ["--model", "test_resnet", "--weights", str(tmp_path / "reference.safetensors"), "--target-weights",
              str(tmp_path / "port.safetensors"), "--device", "cpu", "--images", two_images[0], "--iters", "1",
              "--warmup", "0"]
    assert main(["run", *common, "--dtype", "bf16", "--out-dir", str(tmp_path / "run")]) == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["structural_proof"]["status"] == "passed"  # the outputs are the reference's
    assert [c["name"] for c in summary["parity"]["checks"] if not c["passed"]] == ["nonfinite_weights"]
    assert "reading:" not in (tmp_path / "run" / "accuracy_compare.log").read_text()
    assert main(["bench", *common, "--runtimes", "eager", "--dtypes", "fp32,bf16", "--batch-sizes", "1",
                 "--rounds", "1", "--no-peers", "--no-plot", "--out-dir", str(tmp_path / "bench")]) == 1
    rows = json.loads((tmp_path / "bench" / "bench.json").read_text())["rows"]
    assert {row["label"]: row["parity"]["failed_checks"] for row in rows} == {
        "eager fp32": ["nonfinite_weights"], "eager bf16": ["nonfinite_weights"]}
    assert "the precision's own error" not in (tmp_path / "bench" / "bench.md").read_text()


def test_only_a_rounding_that_lost_values_under_the_smallest_normal_is_called_underflow():
    from accelport.proofs import underflowed_tensors

    torch.manual_seed(0)
    normal, tiny, noisy = torch.randn(64), torch.randn(64) * 1e-6, torch.randn(64)
    reference = {"normal": normal, "tiny": tiny, "noisy": noisy}
    target = {"normal": normal.half().float(), "tiny": tiny.half().float(), "noisy": noisy * 1.001}
    (found,) = underflowed_tensors(reference, target, ["normal", "tiny", "noisy"])
    assert (found["tensor"], found["dtype"]) == ("tiny", "float16") and found["rel_change"] > 2.0 ** -11
    assert underflowed_tensors(reference, {"tiny": tiny.bfloat16().float()}, ["tiny"]) == []  # bf16's range is fp32's


def test_a_tensor_no_rounding_explains_is_named_before_the_lossy_roundings():
    """An fp16 copy of convnext_atto (12 layer scales subnormal in fp16) plus one noised tensor passed with a caution
    listing five layer scales and "(+8 more)": the noised tensor, the one to look at, was never named."""
    from accelport.proofs import WeightDifferences, differing_text

    scales = [f"stages.{i}.gamma" for i in range(12)]
    noisy = "stages.2.blocks.0.conv_dw.weight"
    underflowed = [{"tensor": name, "dtype": "float16", "rel_change": 0.013} for name in scales]
    differing = [*scales[:5], noisy, *scales[5:]]
    text = differing_text(differing, True, underflowed)
    assert text.startswith(f"differs from --weights beyond the bf16/fp16 rounding it stores in 13 tensor(s): {noisy} "
                           "(12 more (stages.0.gamma, ")
    caution = WeightDifferences(differing, [], [], True, underflowed).passed_caution()
    assert caution.startswith(f"PASSED, yet --target-weights differs from --weights in 1 tensor(s) ({noisy}) beyond "
                              "the bf16/fp16 rounding it stores (and 12 more that it stores as half-precision "
                              "roundings with fewer bits)")
    flushed = [{"tensor": name, "dtype": "float16", "rel_change": 1.0} for name in scales]
    assert ("100 % of each tensor lost, most or all of their values flushed to zero, which changes what the model "
            "computes)") in differing_text(scales, True, flushed)
