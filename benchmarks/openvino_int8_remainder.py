#!/usr/bin/env python
"""OpenVINO int8: the float work between the int8 layers in f32 (accelport's setting) or in bf16, paired.

    python benchmarks/openvino_int8_remainder.py --batch-sizes 1,32 --rounds 10

NNCF's int8 model from the OpenVINO runner (its cache, calibrated on the bundled samples) is compiled twice in one
process, ``INFERENCE_PRECISION_HINT`` f32 and bf16 (depthwise convolutions, LayerNorm, GRN, GELU and the
quantise steps then run in bf16 where the CPU has bf16 arithmetic), one request each on the runner's threads.
Both are judged against eager fp32 on the bundled images (worst cosine) and timed in alternating blocks; the ratio
is the median over rounds of bf16's block median over f32's. Writes JSON with the CPU named. On the AMX Xeon the
bf16 remainder was slower (docs/int8.md); this measures it on the machine in hand.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worst_cosine(outputs, reference) -> float:
    import numpy as np

    a, b = outputs.reshape(len(outputs), -1), reference.reshape(len(reference), -1)
    return float(min((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def measure(loaded, images, batch_size: int, rounds: int, block: int) -> dict:
    import torch

    from accelport.latency import make_batch
    from accelport.runners import create_runner

    batch = make_batch(images, batch_size)
    with torch.inference_mode():
        reference = loaded.model(batch).numpy()
    with create_runner("openvino", loaded.model, torch.device("cpu"), "int8") as runner:
        runner.warm_up(batch)
        device_input = runner.to_device(batch)
        model_file = runner._graph_paths[tuple(device_input.shape)]  # NNCF's int8 model the runner compiled
        requests = {}
        for hint in ("f32", "bf16"):
            model = runner._core.read_model(str(model_file))
            model.reshape(list(device_input.shape))
            compiled = runner._core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": runner.threads,
                "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
            requests[hint] = (compiled.create_infer_request(),
                              compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
        cosines = {hint: worst_cosine(request.infer({0: device_input})[0], reference)
                   for hint, (request, _) in requests.items()}
        pairs = []
        for index in range(rounds):
            times = {}
            for hint in (("f32", "bf16") if index % 2 == 0 else ("bf16", "f32")):
                request = requests[hint][0]
                request.infer({0: device_input})  # untimed: the switch from the other one
                samples = []
                for _ in range(block):
                    started = time.perf_counter()
                    request.infer({0: device_input})
                    samples.append((time.perf_counter() - started) * 1e3)
                times[hint] = statistics.median(samples)
            pairs.append({"f32_ms": times["f32"], "bf16_ms": times["bf16"], "ratio": times["bf16"] / times["f32"]})
            print(f"batch {batch_size} round {index + 1}/{rounds}: f32 {times['f32']:.2f} ms, bf16 "
                  f"{times['bf16']:.2f} ms, ratio {pairs[-1]['ratio']:.3f}", file=sys.stderr)
    ratios = sorted(p["ratio"] for p in pairs)
    return {"batch_size": batch_size, "effective_precision": {h: r[1] for h, r in requests.items()},
            "worst_cosine_to_fp32": cosines, "pairs": pairs, "median_ratio_bf16_over_f32": statistics.median(ratios),
            "ratio_range": [ratios[0], ratios[-1]],
            "median_f32_ms": statistics.median(p["f32_ms"] for p in pairs),
            "median_bf16_ms": statistics.median(p["bf16_ms"] for p in pairs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="timm/convnextv2_atto.fcmae_ft_in1k")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", default="logs/openvino_int8_remainder.json")
    args = parser.parse_args()
    from accelport.arguments import set_allocator_or_exit

    set_allocator_or_exit(parser)  # as the CLI does (accelport/allocator.py)
    import torch

    from accelport.arguments import configure_logging
    from accelport.atomic import write_json_atomic
    from accelport.bench.document import bench_environment
    from accelport.models import load_model
    from accelport.preprocess import data_config_for, discover_images, load_images, make_transform

    configure_logging(verbose=False, quiet=True)
    loaded = load_model(args.model, weights_path=args.weights)
    images = load_images(discover_images([]), make_transform(data_config_for(loaded.model))).tensor
    results = [measure(loaded, images, int(size), args.rounds, 10 if int(size) == 1 else 3)
               for size in args.batch_sizes.split(",")]
    write_json_atomic(Path(args.out), {
        "schema_version": 1, "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": bench_environment(torch.device("cpu"), torch.get_num_threads()),
        "model": {"name": loaded.name, "weights_source": loaded.weights.source}, "results": results})
    for result in results:
        print(f"batch {result['batch_size']}: bf16 remainder / f32 remainder {result['median_ratio_bf16_over_f32']:.3f}"
              f" (range {result['ratio_range'][0]:.3f}-{result['ratio_range'][1]:.3f}; f32 "
              f"{result['median_f32_ms']:.2f} ms, bf16 {result['median_bf16_ms']:.2f} ms); worst cosine to fp32 "
              f"{result['worst_cosine_to_fp32']}")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
