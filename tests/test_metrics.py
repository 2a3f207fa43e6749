from __future__ import annotations

import math

import numpy as np
import pytest

from accelport.metrics import compare_arrays, compare_per_sample, cosine, relative_errors, topk_agreement


def test_every_metric_against_hand_computed_values():
    m = compare_arrays(np.array([[1.0, 2.0, 3.0, 4.0]]), np.array([[1.0, 2.0, 3.0, 5.0]]))
    assert m.num_elements == 4
    assert m.max_abs_diff == 1.0
    assert m.mean_abs_diff == 0.25
    assert m.max_rel_err == pytest.approx(0.25)
    assert m.rel_l2_err == pytest.approx(1 / math.sqrt(30))
    assert m.rmse == pytest.approx(0.5)
    assert m.cosine_similarity == pytest.approx(34 / math.sqrt(30 * 39))
    assert (m.share_within_1e_3, m.share_within_5e_3, m.share_within_1e_2) == (0.75, 0.75, 0.75)
    assert (m.nonfinite_reference, m.nonfinite_target) == (0, 0)


def test_relative_error_is_guarded_where_the_reference_is_near_zero():
    ref = np.array([[0.0, 10.0, -10.0, 1e-9]])
    tgt = np.array([[1e-3, 10.0, -10.0, 2e-9]])
    errors = relative_errors(ref, tgt)
    # floor = 1e-3 * max|ref| = 0.01: |1e-3 - 0| / 0.01 = 0.1 and |1e-9| / 0.01 = 1e-7, not 1.0 (unguarded)
    assert errors[0] == pytest.approx([0.1, 0.0, 0.0, 1e-7])


def test_each_sample_gets_its_own_floor():
    ref = np.array([[1000.0, 0.0], [1.0, 0.0]])
    tgt = np.array([[1000.0, 0.5], [1.0, 0.5]])
    errors = relative_errors(ref, tgt)
    assert errors[0, 1] == pytest.approx(0.5 / 1.0)  # floor 1e-3 * 1000
    assert errors[1, 1] == pytest.approx(0.5 / 1e-3)  # floor 1e-3 * 1


def test_nan_and_inf_are_counted_and_make_every_magnitude_nan_never_zero():
    m = compare_arrays(np.array([1.0, 2.0, 3.0]), np.array([1.0, np.nan, np.inf]))
    assert m.nonfinite_target == 2
    for name in ("max_abs_diff", "mean_abs_diff", "max_rel_err", "rel_l2_err", "rmse", "cosine_similarity"):
        assert math.isnan(getattr(m, name)), name  # the finite element matches: 0 there would read as a match
    assert m.share_within_1e_2 == pytest.approx(1 / 3)  # non-finite elements count as outside
    every = compare_arrays(np.array([1.0, 2.0]), np.array([np.nan, np.nan]))
    assert math.isnan(every.max_abs_diff) and math.isnan(every.mean_abs_diff) and every.share_within_1e_2 == 0


def test_cosine_of_zero_vectors():
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine(np.zeros(3), np.ones(3)) == 0.0
    assert cosine(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == -1.0


def test_per_sample_metrics_follow_the_batch_axis():
    ref = np.array([[1.0, 1.0], [1.0, 1.0]])
    tgt = np.array([[1.0, 1.0], [2.0, 1.0]])
    first, second = compare_per_sample(ref, tgt)
    assert first.max_abs_diff == 0.0 and second.max_abs_diff == 1.0


def test_identical_top1_and_top5_match():
    logits = np.arange(10.0)
    result = topk_agreement(logits, logits + 0.1, 5, tolerance=0.1)
    assert result.match and not result.real_mismatch


def test_swap_within_the_measured_error_is_a_near_tie():
    ref = np.array([5.0, 4.999, 0.0, -1.0])
    tgt = np.array([4.998, 5.0, 0.0, -1.0])  # max_abs_diff = 0.002 > margin 0.001
    result = topk_agreement(ref, tgt, 1, tolerance=0.002)
    assert not result.match and result.near_tie and not result.real_mismatch


def test_swap_of_well_separated_classes_is_a_real_mismatch():
    ref = np.array([5.0, 1.0, 0.0])
    tgt = np.array([3.0, 3.5, 0.0])  # max_abs_diff 2.5 < margin 4
    result = topk_agreement(ref, tgt, 1, tolerance=2.5)
    assert not result.match and not result.near_tie and result.real_mismatch


def test_top5_boundary_swap_is_judged_at_the_boundary():
    ref = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.9995, 0.0])
    near = ref.copy()
    near[5] = 5.0005  # class 5 overtakes class 4 by the measured error
    assert topk_agreement(ref, near, 5, tolerance=1e-3).near_tie
    far = ref.copy()
    far[6] = 10.0  # class 6 was 5 below the boundary
    assert topk_agreement(ref, far, 5, tolerance=10.0).near_tie
    assert topk_agreement(ref, far, 5, tolerance=1.0).real_mismatch
