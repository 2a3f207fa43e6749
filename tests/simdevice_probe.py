"""Checks that need the simulated device loaded in this process, printed as one JSON object on stdout.

tests/test_simdevice.py runs this in a subprocess with ``ACCELPORT_SIMULATED_DEVICE=npu``: registering a
PrivateUse1 backend cannot be undone, so it must not happen inside the pytest process. Each section measures
or records; the assertions live in the tests.
"""

from __future__ import annotations

import json
import time

import timm
import torch

from accelport import simdevice
from accelport.criteria import criteria_for
from accelport.devices import apply_numeric_settings, resolve_device, synchronize
from accelport.errors import DeviceError
from accelport.latency import measure_latency
from accelport.parity import compare_outputs
from accelport.runners import create_runner

KERNEL_US = 3000.0  # device time per kernel: ~20x the CPU's enqueue cost of one op (0.15 ms measured)
COPY_US_PER_MIB = 400000.0  # slow copies, so the copies' share of with_copies is visible
ITERS = 3


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def selection() -> dict:
    try:
        resolve_device("npu:1")
        one_index_error, exit_code = None, None
    except DeviceError as exc:  # the CLI prints the message and exits with the error's code
        one_index_error, exit_code = str(exc), exc.exit_code
    return {"auto": str(resolve_device("auto")), "npu": str(resolve_device("npu")),
            "npu_1_error": one_index_error, "npu_1_exit_code": exit_code,
            "accelerator": str(torch.accelerator.current_accelerator()),
            "device_count": torch.accelerator.device_count(), "device_name": torch.npu.get_device_name(0)}


def latency(device: torch.device) -> dict:
    """accelport's latency next to a timer that does not synchronise, with a known device time per kernel."""
    simdevice.configure(kernel_us=0.0, copy_us_per_mib=0.0)  # the 44 MiB of weights would take 18 s to copy
    batch = torch.randn(1, 3, 32, 32)  # small: the host's share of each kernel (enqueue) stays far below 3 ms
    runner = create_runner("eager", timm.create_model("resnet18", num_classes=10).eval(), device).prepare()
    simdevice.configure(kernel_us=KERNEL_US, copy_us_per_mib=COPY_US_PER_MIB)
    device_input = runner.to_device(runner.host_batch(batch))
    synchronize(device)
    before, unsynchronised = simdevice.kernel_launches(), []
    for _ in range(ITERS):  # what a benchmark without synchronisation would report
        start = time.perf_counter()
        runner.forward(device_input)
        unsynchronised.append(ms_since(start))
    kernels = (simdevice.kernel_launches() - before) / ITERS
    synchronize(device)
    report = measure_latency(runner, batch, warmup=0, iters=ITERS)
    return {"kernels_per_forward": kernels, "kernel_ms": KERNEL_US / 1000.0,
            "input_bytes": batch.nbytes, "output_bytes": 10 * 4, "copy_ms_per_mib": COPY_US_PER_MIB / 1000.0,
            "unsynchronised_ms": sorted(unsynchronised)[ITERS // 2],
            "compute": report.compute.to_json(), "with_copies": report.with_copies.to_json(),
            "host_batch_pinned": runner.host_batch(batch).is_pinned(), "pageable_pinned": batch.is_pinned()}


def copies(device: torch.device) -> dict:
    """A non-blocking copy from pinned memory returns at once; a blocking device-to-host copy waits."""
    simdevice.configure(kernel_us=20000.0, copy_us_per_mib=0.0)
    x = torch.ones(4, 4, device=device)
    for _ in range(5):
        x = x + 1  # 100 ms of device time queued
    queued_ms = simdevice.pending_us(device.index) / 1000.0
    start = time.perf_counter()
    torch.ones(8).pin_memory().to(device, non_blocking=True)
    h2d_ms = ms_since(start)
    start = time.perf_counter()
    host = x.cpu()
    return {"queued_ms": queued_ms, "pinned_h2d_ms": h2d_ms, "d2h_ms": ms_since(start),
            "d2h_value": float(host[0, 0]), "pending_after_d2h_ms": simdevice.pending_us(device.index) / 1000.0}


def memory_and_views(device: torch.device) -> dict:
    simdevice.configure(kernel_us=0.0, copy_us_per_mib=0.0)
    base = torch.accelerator.memory_allocated(device.index)
    t = torch.zeros(1024, device=device)  # 4096 bytes
    grown = torch.accelerator.memory_allocated(device.index) - base
    view = t.view(32, 32)
    view[1].add_(2.0)
    try:
        t + torch.ones(1024)
        mixed = None
    except RuntimeError as exc:
        mixed = str(exc)
    try:
        timm.create_model("resnet18", num_classes=10).eval().to(device)(torch.randn(1, 3, 32, 32))
        model_mixed = None
    except RuntimeError as exc:
        model_mixed = str(exc)
    return {"allocated_growth": grown, "view_shares_memory": float(t[32:64].sum().cpu()),
            "view_is_alias": view.data_ptr() == t.data_ptr(), "mixed_error": mixed,
            "model_cpu_input_error": model_mixed}


def half_precision(device: torch.device) -> dict:
    """bf16 and fp16 targets on the device against the CPU fp32 reference, judged by their own criteria."""
    simdevice.configure(kernel_us=0.0, copy_us_per_mib=0.0)
    model = timm.create_model("resnet18", num_classes=10).eval()
    batch = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    reference = model(batch).numpy()
    result = {}
    for dtype in ("bf16", "fp16"):
        runner = create_runner("eager", model, device, dtype).prepare()
        weight = next(runner.module.parameters())
        parity = compare_outputs(reference, runner.infer(batch).numpy(), criteria_for(dtype), is_classifier=True)
        result[dtype] = {"passed": parity.passed, "cosine": parity.overall.cosine_similarity,
                         "weights": f"{weight.device} {weight.dtype}"}
        runner.close()
    return result


def ascend_settings(device: torch.device) -> dict:
    import torch_npu

    strict = apply_numeric_settings(device, "strict").effective
    mark = len(torch_npu.recorded)
    fast = apply_numeric_settings(device, "fast").effective
    return {"strict": strict, "fast": fast, "strict_calls": torch_npu.recorded[:mark],
            "fast_calls": torch_npu.recorded[mark:], "version": torch_npu.__version__}


def autocast_region(device: torch.device) -> dict:
    """A model that opens an autocast region on its input's device (timm's EfficientViT disables autocast there)."""
    torch.manual_seed(0)
    model = timm.create_model("efficientvit_b0", num_classes=10).eval()
    image = torch.randn(1, 3, 64, 64)
    try:
        on_device = model.to(device)(image.to(device)).cpu()
    except (AssertionError, RuntimeError) as exc:  # torch asserts when the backend lacks get_amp_supported_dtype
        return {"error": str(exc)[:300]}
    result = {"error": None, "max_abs_diff": float((on_device - model.cpu()(image)).abs().max())}
    # torch.autocast on the device itself, as a user's half-precision recipe (bench's autocast peers) opens it
    x = torch.randn(2, 8, device=device)
    linear, norm = torch.nn.Linear(8, 8).to(device), torch.nn.LayerNorm(8).to(device)
    conv = torch.nn.Conv2d(3, 4, 3).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        lowered = linear(x)
        normalised = norm(lowered)
        added = x + 1
        convolved = conv(torch.randn(1, 3, 8, 8, device=device))
        softmax = torch.softmax(lowered, dim=-1)
        softmax_as_asked = torch.softmax(lowered, dim=-1, dtype=torch.bfloat16)
        in_double = linear.double()(x.double())
    with torch.autocast(device.type, dtype=torch.float16):
        in_fp16 = torch.nn.Linear(8, 8).to(device)(x)
    result["autocast_dtypes"] = {"linear": str(lowered.dtype), "layer_norm": str(normalised.dtype),
                                 "add": str(added.dtype), "conv2d": str(convolved.dtype),
                                 "softmax": str(softmax.dtype), "softmax_dtype_given": str(softmax_as_asked.dtype),
                                 "linear_fp64": str(in_double.dtype), "linear_under_fp16": str(in_fp16.dtype),
                                 "device": str(lowered.device)}
    expected = torch.nn.functional.linear(x.cpu().bfloat16(), linear.float().weight.cpu().bfloat16(),
                                          linear.bias.cpu().bfloat16())
    result["autocast_linear_equals_cpu_bf16"] = bool(torch.equal(lowered.cpu(), expected))
    return result


def main() -> None:
    result = {"selection": selection()}
    device = resolve_device("npu")
    with torch.inference_mode():
        result |= {"latency": latency(device), "copies": copies(device), "memory": memory_and_views(device),
                   "half_precision": half_precision(device),
                   "autocast": autocast_region(device)}
    result["ascend"] = ascend_settings(device)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
