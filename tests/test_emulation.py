"""TF32/HF32 emulation: the fp32-fast baseline (issue 11 item 2) is TF32-rounded and never touches the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from accelport.emulation import emulate_tf32, round_to_tf32
from accelport.metrics import compare_per_sample
from accelport.preprocess import data_config_for, load_images, make_transform
from accelport.proofs import baseline_outputs
from accelport.runners import infer_all

ULP = 2.0**-10  # TF32's mantissa step at 1.0


def test_round_to_tf32_rounds_to_nearest_at_ten_mantissa_bits_and_keeps_layout():
    values = torch.tensor([1 + ULP / 4, 1 + ULP / 2, 1 + 3 * ULP / 4, -(1 + 3 * ULP / 4), 3.0, float("inf"),
                           float("nan"), 0.0])
    rounded = round_to_tf32(values)
    assert rounded[:5].tolist() == [1.0, 1 + ULP, 1 + ULP, -(1 + ULP), 3.0]  # ties away from zero, as cvt.rna
    assert rounded[5] == float("inf") and torch.isnan(rounded[6]) and rounded[7] == 0.0
    image = torch.randn(1, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    assert round_to_tf32(image).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(round_to_tf32(image.double()), image.double())  # only fp32 has a TF32 form


@pytest.fixture(scope="module")
def one_image(seeded_model, two_images):
    return load_images(two_images[:1], make_transform(data_config_for(seeded_model))).tensor


def test_emulated_model_makes_tf32_level_error_and_leaves_the_reference_untouched(seeded_model, one_image):
    before = {name: tensor.clone() for name, tensor in seeded_model.state_dict().items()}
    with torch.no_grad():
        reference = seeded_model(one_image).numpy()
        emulated = emulate_tf32(seeded_model)(one_image).numpy()
        again = seeded_model(one_image).numpy()
    rel_l2 = compare_per_sample(reference, emulated)[0].rel_l2_err
    assert 1e-5 < rel_l2 < 1e-2, rel_l2
    assert np.array_equal(again, reference)
    assert all(torch.equal(before[name], tensor) for name, tensor in seeded_model.state_dict().items())
    assert not any(module._forward_pre_hooks for module in seeded_model.modules())


def test_baseline_exists_for_half_precision_and_fp32_fast_only(seeded_model, one_image):
    def infer(runner):
        return infer_all(runner, [one_image])

    with torch.no_grad():
        reference = seeded_model(one_image).numpy()
    for precision in ("fp32", "int8"):  # strict fp32 (also fast math on a CPU target) and int8: no baseline
        assert baseline_outputs(seeded_model, precision, infer) is None
    fast = baseline_outputs(seeded_model, "fp32-fast", infer)
    assert fast is not None and fast.shape == reference.shape and not np.array_equal(fast, reference)
