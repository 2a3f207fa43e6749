"""The roofline helpers: FLOPs counted by torch, and a measured matmul peak."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

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


def test_the_cpu_peak_is_the_best_kernel_at_any_size_and_names_it(monkeypatch):
    """torch.mm goes to MKL, which on an AMD Zen 5 ran at half of oneDNN's rate: the peak (and so every floor)
    must come from whichever kernel is faster, at whichever size, and say which."""
    import accelport.bench.roofline as roofline

    seconds = {("_square_matmul", 256): 1e-3, ("_square_matmul", 512): 4e-3,
               ("_pointwise_convolution", 256): 2e-3, ("_pointwise_convolution", 512): 2e-3}
    monkeypatch.setattr(roofline, "_best_seconds",
                        lambda device, dtype, size, repeats, build: seconds[(build.__name__, size)])
    peak = matmul_peak(torch.device("cpu"), "fp32", max_size=512)
    assert (peak["kernel"], peak["size"]) == ("oneDNN 1x1 convolution, channels-last", 512)
    assert peak["gflops_per_s"] == pytest.approx(2 * 512**3 / 2e-3 / 1e9)
    seconds[("_square_matmul", 512)] = 1e-3
    assert matmul_peak(torch.device("cpu"), "fp32", max_size=512)["kernel"] == "torch.mm"


def test_a_slow_kernel_stops_growing_on_its_own_rate(monkeypatch):
    """fp16 torch.mm ran at ~1 GFLOP/s on a Zen 5 beside oneDNN's ~56: judged on the fast kernel's rate it was
    timed at 1024 (1.85 s a call, 11 calls), and the peak took 22 s instead of a few."""
    import accelport.bench.roofline as roofline

    timed = []

    def seconds(device, dtype, size, repeats, build):
        timed.append((build.__name__, size))
        return 2 * size**3 / (1e9 if build.__name__ == "_square_matmul" else 56e9)

    monkeypatch.setattr(roofline, "_best_seconds", seconds)
    peak = matmul_peak(torch.device("cpu"), "fp16", max_size=2048, max_seconds_each=0.25)
    assert peak["kernel"] == "oneDNN 1x1 convolution, channels-last"
    assert max(size for name, size in timed if name == "_square_matmul") == 256  # 512 would take 0.27 s a call


def test_the_pointwise_convolution_does_the_flops_of_the_square_matmul():
    """The two kernels are compared per FLOP: both must compute the same size x size x size product."""
    from accelport.bench.roofline import _pointwise_convolution, _square_matmul

    with FlopCounterMode(display=False) as conv_flops:
        _pointwise_convolution(256, torch.device("cpu"), torch.float32)()
    with FlopCounterMode(display=False) as mm_flops:
        _square_matmul(256, torch.device("cpu"), torch.float32)()
    assert conv_flops.get_total_flops() == mm_flops.get_total_flops() == 2 * 256**3
