#!/usr/bin/env python
"""Which NNCF settings the OpenVINO int8 runner should use: parity with fp32 and paired speed, per model.

    python benchmarks/int8_nncf_settings.py --models convnextv2_atto,convnext_atto,resnet18,deit_tiny_patch16_224

For each timm model (random init, seeded): the fp32 ONNX export, quantised by ``nncf.quantize`` three ways (NNCF's
default model type; ``ModelType.TRANSFORMER``; TRANSFORMER with SmoothQuant off), calibrated on --calibration of the
bundled samples and judged on ALL of them against eager fp32 (min cosine, top-1 agreement), then timed at
--batch-size in interleaved blocks in one process (ratio = median over rounds of the variant's block median over the
default's). Writes JSON with the CPU named. The runner's choice (``accelport.runners.quantize.transformer_style``
and ``SMOOTH_QUANT_MIN_IMAGES``) came from this script's output: docs/int8.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = ("default", "transformer", "transformer-no-smoothquant")


def quantize(nncf, core, onnx_path: Path, arrays: list, variant: str):
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    advanced = AdvancedQuantizationParameters()
    if variant.endswith("no-smoothquant"):
        advanced.smooth_quant_alphas = AdvancedSmoothQuantParameters(convolution=-1, matmul=-1)
    return nncf.quantize(core.read_model(str(onnx_path)), nncf.Dataset(arrays), subset_size=len(arrays),
                         preset=nncf.QuantizationPreset.PERFORMANCE, advanced_parameters=advanced,
                         model_type=None if variant == "default" else nncf.ModelType.TRANSFORMER)


def measure_model(name: str, args: argparse.Namespace, cache_dir: str) -> dict:
    import nncf
    import numpy as np
    import openvino as ov
    import timm
    import torch

    from accelport.runners.onnx_export import export_onnx
    from accelport.runners.quantize import load_calibration

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    chw = tuple(model.pretrained_cfg["input_size"])
    onnx = export_onnx(model, chw, "fp32", cache_dir, "torchscript")
    calibration = load_calibration([str(ROOT / "accelport" / "samples" / f) for f in args.calibration.split(",")],
                                   model, chw)
    judged = load_calibration([], model, chw)  # every bundled sample
    with torch.inference_mode():
        reference = model(judged.images).numpy()
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": args.threads}
    result: dict = {"model": name, "input": list(chw), "variants": {}}
    requests = {}
    batch = np.random.default_rng(0).standard_normal((args.batch_size, *chw)).astype(np.float32)
    for variant in VARIANTS:
        quantized = quantize(nncf, core, onnx.path, calibration.arrays(), variant)
        single = quantized.clone()
        single.reshape([1, *chw])
        compiled = core.compile_model(single, "CPU", config)
        outputs = np.concatenate([compiled({0: a})[0] for a in judged.arrays()])
        cosines = [float(np.dot(o, r) / (np.linalg.norm(o) * np.linalg.norm(r) + 1e-30))
                   for o, r in zip(outputs, reference, strict=True)]
        quantized.reshape([args.batch_size, *chw])
        requests[variant] = core.compile_model(quantized, "CPU", config).create_infer_request()
        result["variants"][variant] = {"min_cosine": min(cosines),
                                       "top1_agreement": float((outputs.argmax(1) == reference.argmax(1)).mean())}
    blocks: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for round_index in range(args.rounds):
        for variant in (VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]):
            request = requests[variant]
            request.infer({0: batch})  # untimed: the first call after a switch
            times = []
            for _ in range(args.block):
                started = time.perf_counter()
                request.infer({0: batch})
                times.append(time.perf_counter() - started)
            blocks[variant].append(statistics.median(times) * 1e3)
    for variant in VARIANTS:
        entry = result["variants"][variant]
        entry["median_ms"] = statistics.median(blocks[variant])
        pairs = zip(blocks[variant], blocks["default"], strict=True)
        entry["ratio_to_default"] = statistics.median(a / b for a, b in pairs)
        entry["round_ms"] = [round(t, 2) for t in blocks[variant]]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="convnextv2_atto,convnext_atto,resnet18,deit_tiny_patch16_224")
    parser.add_argument("--calibration", default="astronaut.jpg,coffee.jpg",
                        help="bundled sample files to calibrate on; all samples are judged")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="logs/int8_nncf_settings.json")
    args = parser.parse_args(argv)
    from accelport.arguments import set_allocator_or_exit

    set_allocator_or_exit(parser)  # as the CLI does (accelport/allocator.py): eager without page faults

    import nncf
    import openvino

    from accelport.environment import cpu_isa

    report = {"cpu": cpu_isa(), "openvino": openvino.__version__, "nncf": nncf.__version__,
              "calibration": args.calibration, "batch_size": args.batch_size, "threads": args.threads, "models": []}
    with tempfile.TemporaryDirectory() as cache_dir:
        for name in args.models.split(","):
            entry = measure_model(name, args, cache_dir)
            report["models"].append(entry)
            for variant, v in entry["variants"].items():
                print(f"{name:24s} {variant:28s} min cos {v['min_cosine']:.5f}  top-1 {v['top1_agreement']:.2f}  "
                      f"{v['median_ms']:7.1f} ms  x{v['ratio_to_default']:.3f} of default")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
