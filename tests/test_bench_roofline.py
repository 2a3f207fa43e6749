"""The roofline helpers: FLOPs counted by torch, and a measured matmul peak."""

from __future__ import annotations

import pytest
import torch

from accelport.bench.roofline import floor_ms, matmul_peak, model_flops


def test_model_flops_counts_convolutions_and_linear_layers():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(128, 5))
    conv = 2 * (8 * 4 * 4) * (3 * 3 * 3)  # one multiply-add per output element and kernel tap
    linear = 2 * 128 * 5
    assert model_flops(model, (1, 3, 4, 4)) == conv + linear
    assert model_flops(model, (2, 3, 4, 4)) == 2 * (conv + linear)


def test_a_model_that_cannot_be_counted_gives_none():
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("no")

    assert model_flops(Broken(), (1, 3, 4, 4)) is None


def test_matmul_peak_stays_within_its_sizes_and_reports_a_rate():
    peak = matmul_peak(torch.device("cpu"), "fp32", max_size=512, repeats=2)
    assert peak["size"] in (256, 512) and peak["gflops_per_s"] > 0 and peak["threads"] == torch.get_num_threads()
    assert floor_ms(2.0, peak["gflops_per_s"]) == pytest.approx(2000.0 / peak["gflops_per_s"])
