"""What the hardware allows: the model's arithmetic per image and the device's measured matrix-multiply peak.

No engine can run a batch faster than its FLOPs divided by the peak FLOP/s of the device, so comparing a speed
target with that floor tells a target that needs a better engine from one that needs other hardware. FLOPs
are counted by torch's own ``FlopCounterMode`` (convolutions and matrix multiplies, which dominate a ConvNeXt;
element-wise work is not counted, so the floor is a lower bound). The peak is measured, not taken from a data
sheet: the best of several large square matmuls in the given dtype, with the threads torch uses. On the CPU each
size is also run as a channels-last 1x1 convolution of the same FLOPs, which goes to oneDNN: ``torch.mm`` goes
to MKL, which on an AMD Zen 5 reached 207 GFLOP/s fp32 where oneDNN's convolution reached 447 (the engines under
test use oneDNN or their own kernels, so a peak from MKL alone put the floor below what they ran). For int8 the
multiply is ONNX Runtime's ``MatMulInteger`` (its MLAS u8s8 GEMM, on AMX, AVX-512 VNNI, AVX-VNNI or AVX2 as the
CPU has them): torch's own CPU int8 matmul is a reference kernel, far below what the quantised engines run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..devices import synchronize
from ..runners.base import DTYPES

_logger = logging.getLogger(__name__)


def model_flops(model: torch.nn.Module, input_shape: tuple[int, ...] | list[int]) -> int | None:
    """FLOPs (multiply and add counted apart) of one forward pass on a CPU fp32 input of ``input_shape``; None
    when torch cannot count this model."""
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(torch.zeros(tuple(input_shape)))
    except Exception as exc:  # an exotic op the counter cannot trace must not cost the benchmark
        _logger.warning("could not count the model's FLOPs: %s", exc)
        return None
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: str = "fp32", max_size: int = 2048, repeats: int = 10,
                max_seconds_each: float = 0.25) -> dict[str, Any]:
    """The best FLOP/s of square matmuls on ``device`` in ``dtype`` (on the CPU also as oneDNN 1x1 convolutions),
    over sizes 256, 512, 1024, ... up to ``max_size`` (best, not median: a peak is what the hardware can do, and
    interference only slows it down); ``kernel`` names the one that reached it.

    A kernel stops growing once one multiply would take longer than ``max_seconds_each`` at its own best rate so far
    (bf16 on a CPU without bf16 instructions runs at ~1 GFLOP/s; fp16 ``torch.mm`` at ~1 on a Zen 5 where oneDNN's
    fp16 convolution ran at ~56), so this stays a few seconds everywhere.
    """
    timers: dict[str, Callable[[int, int], float]]
    if dtype == "int8":
        timers = {"onnxruntime MatMulInteger (u8 x s8 -> s32)": _int8_timer(device)}
    elif dtype in DTYPES:
        timers = {"torch.mm": lambda size, repeats: _best_seconds(device, dtype, size, repeats, _square_matmul)}
        if device.type == "cpu":
            timers["oneDNN 1x1 convolution, channels-last"] = (
                lambda size, repeats: _best_seconds(device, dtype, size, repeats, _pointwise_convolution))
    else:
        raise ValueError(f"no {dtype} matmul peak: choose one of {', '.join((*DTYPES, 'int8'))}")
    best_rate, best_size, best_kernel, size = 0.0, 0, "", 256
    kernel_rates = dict.fromkeys(timers, 0.0)
    while size <= max_size:
        for kernel, timer in timers.items():
            own = kernel_rates[kernel]
            if own and 2.0 * size**3 / own > max_seconds_each:
                continue
            rate = 2.0 * size**3 / timer(size, repeats if own else 2)
            kernel_rates[kernel] = max(own, rate)
            if rate > best_rate:
                best_rate, best_size, best_kernel = rate, size, kernel
        size *= 2
    return {"device": str(device), "dtype": dtype, "size": best_size, "threads": torch.get_num_threads(),
            "gflops_per_s": best_rate / 1e9, "kernel": best_kernel}


def _int8_timer(device: torch.device) -> Callable[[int, int], float]:
    """Best seconds of an n x n x n u8 x s8 GEMM through ONNX Runtime's ``MatMulInteger`` on the CPU."""
    if device.type != "cpu":
        raise ValueError(f"no int8 matmul peak on {device}: measured on the CPU only (the int8 runtimes run there)")
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise ValueError(f"no int8 matmul peak: {exc} (pip install onnxruntime onnx)") from None
    import numpy as np

    def best_seconds(size: int, repeats: int) -> float:
        rng = np.random.default_rng(0)
        weights = numpy_helper.from_array(rng.integers(-128, 128, (size, size), dtype=np.int8), "b")
        graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8_gemm",
                                  [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])],
                                  [helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])], [weights])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = {"a": rng.integers(0, 256, (size, size), dtype=np.uint8)}
        session.run(None, feed)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            session.run(None, feed)
            best = min(best, time.perf_counter() - started)
        return best
    return best_seconds


Operation = Callable[[], torch.Tensor]


def _square_matmul(size: int, device: torch.device, dtype: torch.dtype) -> Operation:
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(device, dtype) for _ in range(2))
    return lambda: torch.mm(a, b)


def _pointwise_convolution(size: int, device: torch.device, dtype: torch.dtype) -> Operation:
    """The same 2 * size**3 FLOPs as a square matmul, as a 1x1 convolution: ``size`` channels in and out over
    ``size`` pixels (16 x 16 maps), channels-last like the MLPs of a ConvNeXt."""
    generator = torch.Generator().manual_seed(0)
    images, weight = (torch.randn(shape, generator=generator).to(device, dtype).contiguous(
        memory_format=torch.channels_last) for shape in ((max(1, size // 256), size, 16, 16), (size, size, 1, 1)))
    return lambda: torch.nn.functional.conv2d(images, weight)


def _best_seconds(device: torch.device, dtype: str, size: int, repeats: int,
                  build: Callable[[int, torch.device, torch.dtype], Operation]) -> float:
    """Best seconds of one ``build`` operation of ``size`` on ``device`` in ``dtype``."""
    operation = build(size, device, DTYPES[dtype])
    best = float("inf")
    with torch.inference_mode():
        operation()
        synchronize(device)
        for _ in range(repeats):
            started = time.perf_counter()
            operation()
            synchronize(device)
            best = min(best, time.perf_counter() - started)
    return best


def floor_ms(gflops: float, peak_gflops_per_s: float) -> float:
    """The least time ``gflops`` of work can take at ``peak_gflops_per_s``."""
    return gflops / peak_gflops_per_s * 1000.0


def add_achieved_flops(rows: list[dict[str, Any]], flops_per_image: int | None) -> None:
    """``achieved_gflops_per_s`` per measured row: the model's counted FLOPs over its p50 latency."""
    if not flops_per_image:
        return
    for row in rows:
        if row["status"] == "ok":
            seconds = row["latency"]["p50_ms"] / 1000.0
            row["achieved_gflops_per_s"] = flops_per_image * row["batch_size"] / seconds / 1e9


# The speed targets of issue 13, as same-run ratios: (dtype, batch, limit, what the ratio is against, the CPUs
# it is set for). "eager": p50 over the eager fp32 baseline; "peer": paired ratio pick / best peer.
TARGETS: tuple[dict[str, Any], ...] = (
    *({"dtype": d, "batch_size": b, "max_ratio": 1.0, "against": "peer", "isa": "any"}
      for d in ("fp32", "bf16") for b in (1, 32) if (d, b) not in (("fp32", 1), ("bf16", 32))),
    {"dtype": "fp32", "batch_size": 1, "max_ratio": 1 / 1.15, "against": "peer", "isa": "any"},
    {"dtype": "bf16", "batch_size": 32, "max_ratio": 1 / 1.15, "against": "peer", "isa": "any"},
    {"dtype": "fp32", "batch_size": 1, "max_ratio": 0.30, "against": "eager", "isa": "avx512"},
    {"dtype": "bf16", "batch_size": 32, "max_ratio": 0.17, "against": "eager", "isa": "avx512"},
    {"dtype": "int8", "batch_size": 1, "max_ratio": 0.20, "against": "eager", "isa": "avx512"},
    {"dtype": "int8", "batch_size": 32, "max_ratio": 0.10, "against": "eager", "isa": "avx512"},
    {"dtype": "fp32", "batch_size": 32, "max_ratio": 0.35, "against": "eager", "isa": "avx2"},
    {"dtype": "int8", "batch_size": 32, "max_ratio": 0.25, "against": "eager", "isa": "avx2"},
)


def isa_class(isa: dict[str, Any] | None) -> str:
    """"avx512" (AVX-512 or AMX), "avx2", or "other": the class of CPU a target of issue 13 is set for."""
    name = (isa or {}).get("name", "")
    return "avx512" if name.startswith(("AVX-512", "AMX")) else "avx2" if name == "AVX2" else "other"


def target_reach(target: dict[str, Any], isa: dict[str, Any] | None, floor_ratio: float | None) -> str:
    """Whether this machine can check and reach ``target``, in words: set for another CPU class; a precision
    without hardware arithmetic here; a roofline floor above the limit; or reachable (floor below it)."""
    here = isa_class(isa)
    if target["isa"] != "any" and target["isa"] != here:
        return f"not checkable here: set for {target['isa'].upper()} CPUs, this one is {(isa or {}).get('name')}"
    needs = {"bf16": "bf16_arithmetic", "int8": "int8_dot"}.get(target["dtype"])
    missing = needs and (isa or {}).get(needs) is False
    if target["against"] == "peer":
        return ("reachable only by a better engine than the peers (same hardware for both)"
                + ("; no bf16 arithmetic here: every bf16 row is emulated" if missing and needs == "bf16_arithmetic"
                   else ""))
    if target["dtype"] == "int8" and floor_ratio is None:  # without VNNI int8 is slower, not absent
        return ("unknown: no int8 roofline floor measured (needs onnxruntime); the int8 rows of the sweep decide"
                + ("; no VNNI here: each int8 dot product takes two instructions and 7-bit weights" if missing
                   else ""))
    if missing and target["dtype"] != "int8":
        return f"not reachable here: no {str(needs).replace('_', ' ')} on {(isa or {}).get('name')}"
    if floor_ratio is None:
        return "reachable: no roofline floor measured"
    verdict = "reachable" if floor_ratio <= target["max_ratio"] else "not reachable"
    return (f"{verdict}: roofline floor {floor_ratio:.3f} vs limit {target['max_ratio']:.2f}"
            + (" (int8 GEMM peak measured without VNNI: two instructions per dot product)"
               if missing and target["dtype"] == "int8" else ""))
