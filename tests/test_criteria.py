"""The verdict: correct reduced-precision runs pass their criteria, really wrong ones fail."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import timm
import torch

from accelport.criteria import DEFAULT_CRITERIA, criteria_for, effective_precision, parse_criterion_flags
from accelport.emulation import emulate_tf32
from accelport.errors import UsageError
from accelport.parity import compare_outputs
from accelport.preprocess import data_config_for, load_images, make_transform


@pytest.fixture(scope="module")
def setup(seeded_model, sample_paths):
    model = seeded_model  # converted to other dtypes by the tests: this module's own copy
    images = load_images(sample_paths, make_transform(data_config_for(model))).tensor
    with torch.no_grad():
        reference = model(images).numpy()
    return model, images, reference


@pytest.fixture(scope="module")
def clean_outputs(setup):
    """The seeded model's outputs in bf16 and fp16 (the bf16 one is also the run's same-precision baseline),
    computed once: emulated half math on a CPU without native support takes seconds per pass."""
    model, images, _ = setup
    return {dtype: _outputs(copy.deepcopy(model), images, dtype) for dtype in (torch.bfloat16, torch.float16)}


def _outputs(model, images, dtype=torch.float32):
    with torch.no_grad():
        return model.to(dtype)(images.to(dtype)).float().numpy()


def _verdict(reference, target, precision):
    return compare_outputs(reference, target, DEFAULT_CRITERIA[precision], is_classifier=True)


def test_identical_outputs_pass_strict_fp32(setup):
    model, images, reference = setup
    assert _verdict(reference, _outputs(model, images), "fp32").passed


def test_tf32_fp32_passes_fast_criteria_but_not_strict(setup):
    model, images, reference = setup
    target = _outputs(emulate_tf32(model), images)
    assert not np.array_equal(target, reference)
    assert _verdict(reference, target, "fp32-fast").passed
    assert not _verdict(reference, target, "fp32").passed


def test_bf16_and_fp16_pass_their_own_criteria(setup, clean_outputs):
    _, _, reference = setup
    for dtype, precision in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
        result = _verdict(reference, clean_outputs[dtype], precision)
        assert result.passed, [c for c in result.checks if not c.passed]
        assert not _verdict(reference, clean_outputs[dtype], "fp32").passed


@pytest.mark.parametrize("precision", ["fp32", "fp32-fast", "bf16"])
def test_perturbed_weight_fails_every_precision(setup, precision):
    model, images, reference = setup
    faulty = copy.deepcopy(model)
    weight = faulty.stages[2].blocks[1].mlp.fc2.weight
    weight.data += weight.data.std() * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
    result = _verdict(reference, _outputs(faulty, images), precision)
    assert not result.passed


def test_changed_grn_fails_strict_and_fast_fp32(setup):
    model, images, reference = setup
    faulty = copy.deepcopy(model)
    faulty.stages[2].blocks[1].mlp.grn.weight.data.zero_()
    for precision in ("fp32", "fp32-fast"):
        assert not _verdict(reference, _outputs(faulty, images), precision).passed


def test_swapped_top1_of_well_separated_classes_fails_even_with_good_overall_metrics():
    reference = np.tile(np.linspace(-1, 1, 1000), (2, 1))
    target = reference.copy()
    target[0, 998] += 0.003  # overtakes class 999, which the reference put only 0.002 ahead: a near-tie
    near = _verdict(reference, target, "fp32-fast")
    assert near.samples[0].top1_near_tie and near.top1_match is False
    assert [c.passed for c in near.checks if c.name == "real_top1_mismatches"] == [True]
    target = reference.copy()
    target[0, 0] = 5.0  # the smallest logit becomes the top-1: real mismatch
    assert not _verdict(reference, target, "bf16").passed


def test_effective_precision_only_relaxes_fp32_on_accelerators():
    assert effective_precision("fp32", "fast", "cuda") == "fp32-fast"
    assert effective_precision("fp32", "fast", "npu") == "fp32-fast"
    assert effective_precision("fp32", "fast", "cpu") == "fp32"
    assert effective_precision("fp32", "strict", "cuda") == "fp32"
    assert effective_precision("bf16", "fast", "cuda") == "bf16"


def test_criterion_overrides_and_their_errors():
    criteria = criteria_for("fp32", parse_criterion_flags(["min_cosine=0.9", "max_top1_mismatches=2"]))
    assert (criteria.min_cosine, criteria.max_top1_mismatches, criteria.max_rel_l2) == (0.9, 2, 1e-3)
    with pytest.raises(UsageError, match="unknown key"):
        criteria_for("fp32", {"min_cosin": "0.9"})
    with pytest.raises(UsageError, match="not a number"):
        criteria_for("fp32", {"min_cosine": "high"})
    with pytest.raises(UsageError, match="out of range"):
        criteria_for("fp32", {"min_cosine": "1.5"})
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_criterion_flags(["min_cosine"])


def test_rolled_outputs_are_real_top1_mismatches_in_every_precision(setup, clean_outputs):
    _, _, reference = setup
    rolled = np.roll(reference, 1, 0)
    assert (rolled.argmax(1) != reference.argmax(1)).all()
    baseline = clean_outputs[torch.bfloat16]
    for precision, base in (("fp32", None), ("bf16", baseline)):  # bf16 as run judges it: with its baseline
        result = compare_outputs(reference, rolled, DEFAULT_CRITERIA[precision], True, baseline=base)
        check = next(c for c in result.checks if c.name == "real_top1_mismatches")
        assert check.value == len(reference) and not check.passed


def test_a_padded_batch_counts_a_mismatching_image_once_whatever_its_repeats():
    """bench fills batch 32 by repeating its images: one image whose top-1 flipped counted once per repeat, so
    max_top1_mismatches=1 passed at batch 1 and failed at batch 32 for the same single image."""
    reference = np.eye(3, 10)[[0, 1, 2, 0, 1]] * 10.0  # 3 images, then images 0 and 1 again (positions 3, 4)
    target = reference.copy()
    target[[0, 3]] = np.eye(10)[5] * 10.0  # image 0, at both its positions, now says class 5
    criteria = criteria_for("fp32", {"max_top1_mismatches": "1"})
    names = ["image 0", "image 1", "image 2", "image 0 (repeated at position 3)", "image 1 (repeated at position 4)"]
    judged = compare_outputs(reference, target, criteria, True, sample_names=names, sample_images=[0, 1, 2, 0, 1])
    check = next(c for c in judged.checks if c.name == "real_top1_mismatches")
    assert (check.value, check.passed) == (1, True)
    assert check.detail == "image 0, image 0 (repeated at position 3)"  # every position is still named
    positions = next(c for c in compare_outputs(reference, target, criteria, True).checks
                     if c.name == "real_top1_mismatches")
    assert (positions.value, positions.passed) == (2, False)  # without the mapping every row is an image


def test_rgb_bgr_swap_is_real_top1_mismatches_not_near_ties(setup, clean_outputs):
    model, images, reference = setup
    swapped = _outputs(model, images.flip(1))
    margins = reference.max(1) - reference[np.arange(len(reference)), swapped.argmax(1)]
    clear = int((margins > 0.05).sum())  # flips between classes the reference separates by 7x bf16's own error
    assert clear > 0
    baseline = clean_outputs[torch.bfloat16]
    for precision, base in (("fp32", None), ("bf16", baseline)):
        result = compare_outputs(reference, swapped, DEFAULT_CRITERIA[precision], True, baseline=base)
        assert next(c for c in result.checks if c.name == "real_top1_mismatches").value >= clear


def test_near_tie_allowance_comes_from_the_baseline_not_the_target(setup):
    reference = np.tile(np.linspace(-1, 1, 1000), (1, 1))
    target = reference.copy()
    target[0, 998] += 0.01  # overtakes class 999, 0.002 ahead in the reference
    target[0, :500] += 5.0  # and a large error elsewhere, which the old rule took as the allowance
    criteria = DEFAULT_CRITERIA["bf16"]
    tight = reference + 1e-4  # a baseline whose error is far below the 0.002 margin
    result = compare_outputs(reference, target, criteria, is_classifier=True, baseline=tight)
    assert result.samples[0].top1_near_tie is False and not result.passed
    loose = reference.copy()
    loose[0, 5] += 0.01  # a correct bf16 implementation moves a logit by 0.01: 0.002 is within its error
    assert compare_outputs(reference, reference + np.eye(1, 1000, 998) * 0.003, criteria, True,
                           baseline=loose).samples[0].top1_near_tie


@pytest.mark.parametrize("dtype, precision", [(torch.float32, "fp32"), (torch.bfloat16, "bf16")])
@pytest.mark.parametrize("arch", ["resnet18", "vit_tiny_patch16_224", "mobilenetv3_small_050"])
def test_clean_runs_count_no_real_top1_mismatch(arch, dtype, precision, sample_paths):
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False).eval()
    images = load_images(sample_paths[:2], make_transform(data_config_for(model))).tensor
    reference = _outputs(model, images)
    baseline = _outputs(copy.deepcopy(model), images, dtype) if dtype != torch.float32 else None
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)  # another kernel path: correct
    target = _outputs(channels_last, images.contiguous(memory_format=torch.channels_last), dtype)
    result = compare_outputs(reference, target, DEFAULT_CRITERIA[precision], True, baseline=baseline)
    assert result.passed, [c for c in result.checks if not c.passed]


def test_nonfinite_values_fail_on_either_side_and_say_where(setup):
    _, _, reference = setup
    target = reference.copy()
    target[1, 3] = np.nan
    result = compare_outputs(reference, target, DEFAULT_CRITERIA["fp32"], True, sample_names=list("abcdef"))
    failed = {c.name: c for c in result.checks if not c.passed}
    assert "nonfinite_target_values" in failed and "b (1)" in failed["nonfinite_target_values"].detail
    assert np.isnan(result.samples[1].metrics.cosine_similarity) and result.samples[1].top1_match is False
    same_nan = compare_outputs(target, target, DEFAULT_CRITERIA["fp32"], True)  # the reference has it too
    assert not same_nan.passed and "nonfinite_reference_values" in {c.name for c in same_nan.checks if not c.passed}
    weights = compare_outputs(reference, reference, DEFAULT_CRITERIA["fp32"], True,
                              nonfinite_weights={"target weights: head.fc.bias": 1})
    failed = {c.name: c for c in weights.checks if not c.passed}
    assert list(failed) == ["nonfinite_weights"] and "head.fc.bias" in failed["nonfinite_weights"].detail


def test_baseline_ratio_fails_a_fault_the_absolute_bf16_limits_pass(setup, clean_outputs):
    model, images, reference = setup
    baseline = clean_outputs[torch.bfloat16]
    faulty = copy.deepcopy(model)
    faulty.stages[2].blocks[1].mlp.grn.weight.data *= 0.1
    target = _outputs(faulty, images, torch.bfloat16)
    absolute = compare_outputs(reference, target, DEFAULT_CRITERIA["bf16"], True)
    judged = compare_outputs(reference, target, DEFAULT_CRITERIA["bf16"], True, baseline=baseline)
    assert absolute.passed
    failed = {c.name for c in judged.checks if not c.passed}
    assert "max_baseline_rel_l2_ratio" in failed
    assert judged.to_json()["baseline"]["per_image"][0]["rel_l2_ratio"] > DEFAULT_CRITERIA["bf16"].max_baseline_ratio


def test_baseline_ratios_judge_the_mean_over_images_not_one_image_that_rounded_worse():
    rng = np.random.default_rng(3)
    reference = rng.standard_normal((6, 1000))
    scale = 4e-3  # a bf16-sized error, relative to the logits' RMS of 1
    baseline = reference + scale * rng.standard_normal((6, 1000))
    per_image = np.array([0.8, 0.8, 2.6, 0.8, 0.8, 0.8])[:, None]  # a correct engine: one image rounds worse
    correct = reference + scale * per_image * rng.standard_normal((6, 1000))
    judged = compare_outputs(reference, correct, DEFAULT_CRITERIA["bf16"], True, baseline=baseline,
                             sample_names=[f"img{i}" for i in range(6)])
    checks = {c.name: c for c in judged.checks}
    assert max(row["rel_l2_ratio"] for row in judged.to_json()["baseline"]["per_image"]) > 2  # the worst image alone
    assert checks["max_baseline_rel_l2_ratio"].passed and checks["max_baseline_rel_l2_ratio"].value < 1.3
    assert "worst image img2" in checks["max_baseline_rel_l2_ratio"].detail
    faulty = reference + 3 * scale * rng.standard_normal((6, 1000))  # a fault: every image 3x the baseline's error
    failed = {c.name for c in compare_outputs(reference, faulty, DEFAULT_CRITERIA["bf16"], True,
                                              baseline=baseline).checks if not c.passed}
    assert {"max_baseline_rel_l2_ratio", "max_baseline_outside_0.01_ratio"} <= failed
