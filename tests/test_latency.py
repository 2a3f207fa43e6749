from __future__ import annotations

import pytest
import torch

from accelport.latency import LatencyStats, make_batch, measure_latency
from accelport.runners.base import Runner


def test_stats_against_hand_computed_values():
    stats = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0, 5.0], batch_size=4)
    assert (stats.mean_ms, stats.p50_ms, stats.min_ms, stats.max_ms) == (3.0, 3.0, 1.0, 5.0)
    assert stats.p90_ms == pytest.approx(4.6)
    assert stats.std_ms == pytest.approx(1.5811388)
    assert stats.images_per_s == pytest.approx(4 * 1000 / 3.0)


def test_make_batch_cycles_through_real_images():
    images = torch.arange(3.0).reshape(3, 1, 1, 1)
    assert make_batch(images, 7).flatten().tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert make_batch(images, 2).flatten().tolist() == [0, 1]


class CountingRunner(Runner):
    """Records the order of calls, to check the timer synchronises after every timed iteration."""

    name = "counting"

    def __init__(self):
        super().__init__(torch.nn.Identity(), torch.device("cpu"))
        self.calls: list[str] = []

    def _prepare_impl(self):
        pass

    def _to_device_impl(self, batch):
        self.calls.append("copy")
        return batch

    def _forward_impl(self, x):
        self.calls.append("forward")
        return x

    def synchronize(self):
        self.calls.append("sync")


def test_every_timed_iteration_is_synchronised():
    runner = CountingRunner().prepare()
    report = measure_latency(runner, torch.zeros(2, 3, 4, 4), warmup=2, iters=3)
    assert report.compute.iters == 3 and report.with_copies.iters == 3 and report.compute.batch_size == 2
    setup_and_warmup = ["copy", "sync", "forward", "forward", "sync"]
    compute = ["forward", "sync"] * 3
    with_copies = ["copy", "forward", "sync"] * 3
    assert runner.calls == setup_and_warmup + compute + with_copies


def test_runner_must_be_prepared():
    with pytest.raises(RuntimeError, match="prepare"):
        CountingRunner().forward(torch.zeros(1))
