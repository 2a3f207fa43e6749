#!/usr/bin/env python
"""One speed ratio, measured so that a shared, noisy machine cannot fake it: eager fp32 and one target
configuration timed in ALTERNATING blocks, the ratio taken within each pair of neighbouring blocks.

A sweep measures the baseline and the target minutes apart, so a burst of load on the host during either one
moves their ratio. Here both run in the same process, block after block (who goes first alternates; the
first call after each switch is untimed, so one engine's idle worker threads do not slow the other's first
timed call); each pair gives one ratio of block medians, and the result is the median over pairs with its
quartiles and the share of pairs within --limit. The target's parity with the CPU fp32 reference is checked
with the criteria of its precision first: a ratio of a wrong configuration is worthless.

    python benchmarks/paired_ratio.py --runtime openvino --streams 2 --micro-batch 4 --batch-size 32 --limit 0.40
    python benchmarks/paired_ratio.py --runtime openvino --batch-size 1 --limit 0.30
    python benchmarks/paired_ratio.py --runtime openvino --batch-size 1 --baseline unrewritten   # what the
        # graph rewrite (accelport/runners/graph_rewrites.py) buys: the same configuration, exported as it is

Prints a summary and writes --out (JSON) with the hardware, every pair, and the verdict.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def block_median_ms(runner, device_input, block: int) -> float:
    from accelport.latency import time_calls

    runner.forward(device_input)  # untimed: the switch from the other engine
    runner.synchronize()
    return statistics.median(time_calls(lambda: runner.forward(device_input), runner, block))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="timm/convnextv2_atto.fcmae_ft_in1k")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runtime", default="openvino")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--micro-batch", type=int, default=0, help="OpenVINO request size (0: one per stream)")
    parser.add_argument("--int8-remainder", choices=("fp32", "bf16"), default=None,
                        help="OpenVINO --dtype int8: the precision of the float work between the int8 layers")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--block", type=int, default=3, help="timed calls per block (after one untimed call)")
    parser.add_argument("--limit", type=float, default=None, help="the ratio a target sets, for the verdict")
    parser.add_argument("--baseline", choices=("eager", "unrewritten"), default="eager",
                        help="eager fp32, or the target's own configuration exported without accelport's graph "
                             "rewrites (OpenVINO)")
    parser.add_argument("--out", default="logs/paired_ratio.json")
    args = parser.parse_args()

    import torch

    from accelport.arguments import configure_logging, set_allocator_or_exit
    from accelport.atomic import write_json_atomic
    from accelport.bench.document import bench_environment, reference_outputs
    from accelport.bench.points import check_parity
    from accelport.bench.sweep import BASELINE, Configuration
    from accelport.criteria import criteria_for
    from accelport.latency import make_batch
    from accelport.models import load_model
    from accelport.preprocess import data_config_for, discover_images, load_images, make_transform
    from accelport.runners import create_runner

    configure_logging(verbose=False, quiet=True)
    set_allocator_or_exit(parser)  # as the CLI does: ACCELPORT_ALLOCATOR=default measures with glibc's defaults
    device = torch.device(args.device)
    loaded = load_model(args.model, weights_path=args.weights)
    images = load_images(discover_images([]), make_transform(data_config_for(loaded.model))).tensor
    batch = make_batch(images, args.batch_size)
    target = Configuration(args.runtime, args.dtype, args.channels_last, args.streams, args.micro_batch)
    reference = reference_outputs(loaded.model, images)
    options = {"streams": args.streams, "micro_batch": args.micro_batch or None,
               **({"int8_remainder": args.int8_remainder} if args.int8_remainder else {})}
    baseline = (create_runner("eager", loaded.model, device, "fp32") if args.baseline == "eager" else
                create_runner(args.runtime, loaded.model, device, args.dtype, args.channels_last, **options))
    if args.baseline == "unrewritten":
        if not hasattr(baseline, "rewrite_graph"):
            parser.error(f"--baseline unrewritten: --runtime {args.runtime} has no graph rewrites")
        baseline.rewrite_graph = False
    baseline_label = BASELINE.label if args.baseline == "eager" else f"{target.label} without graph rewrites"
    with baseline, create_runner(args.runtime, loaded.model, device, args.dtype, args.channels_last,
                                 **options) as candidate:
        parity = check_parity(candidate, images, reference, args.batch_size, criteria_for(args.dtype),
                              loaded.head == "classifier")
        for runner in (baseline, candidate):
            runner.warm_up(batch)
        baseline_input, candidate_input = baseline.to_device(batch), candidate.to_device(batch)
        load_before = os.getloadavg()
        pairs = []
        for index in range(args.pairs):
            baseline_first = index % 2 == 0
            if baseline_first:
                baseline_ms = block_median_ms(baseline, baseline_input, args.block)
            candidate_ms = block_median_ms(candidate, candidate_input, args.block)
            if not baseline_first:
                baseline_ms = block_median_ms(baseline, baseline_input, args.block)
            pairs.append({"baseline_ms": baseline_ms, "target_ms": candidate_ms, "ratio": candidate_ms / baseline_ms,
                          "baseline_first": baseline_first})
            print(f"pair {index + 1}/{args.pairs}: baseline {pairs[-1]['baseline_ms']:.2f} ms, {target.label} "
                  f"{pairs[-1]['target_ms']:.2f} ms, ratio {pairs[-1]['ratio']:.3f}", file=sys.stderr)
        settings = candidate.describe()
    ratios = sorted(p["ratio"] for p in pairs)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    result = {
        "schema_version": 1,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": bench_environment(device, torch.get_num_threads()),
        "model": {"name": loaded.name, "weights_source": loaded.weights.source,
                  "pretrained_used": loaded.weights.pretrained_used},
        "baseline": baseline_label, "target": target.label, "batch_size": args.batch_size,
        "target_settings": {k: settings.get(k) for k in ("threads", "streams", "micro_batch", "num_streams",
                                                          "inference_num_threads", "performance_hint",
                                                          "effective_precision", "part_batch_sizes", "int8_remainder",
                                                          "graph_rewrites")},
        "parity": {k: parity[k] for k in ("precision", "passed", "worst_sample_cosine", "failed_checks")},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "block": args.block, "pairs": pairs,
        "median_ratio": statistics.median(ratios), "ratio_quartiles": [quartiles[0], quartiles[2]],
        "ratio_min_max": [ratios[0], ratios[-1]],
        "median_baseline_ms": statistics.median(p["baseline_ms"] for p in pairs),
        "median_target_ms": statistics.median(p["target_ms"] for p in pairs),
        "limit": args.limit,
        "share_of_pairs_within_limit": (sum(r <= args.limit for r in ratios) / len(ratios)) if args.limit else None,
        "met": (parity["passed"] and statistics.median(ratios) <= args.limit) if args.limit else None,
    }
    write_json_atomic(Path(args.out), result)
    verdict = "" if args.limit is None else (f"; limit {args.limit}: {'met' if result['met'] else 'NOT met'} "
                                             f"({result['share_of_pairs_within_limit']:.0%} of pairs within)")
    print(f"{target.label} vs {baseline_label}, batch {args.batch_size}, {len(pairs)} pairs: median ratio "
          f"{result['median_ratio']:.3f} (quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}, range {ratios[0]:.3f}-"
          f"{ratios[-1]:.3f}); baseline {result['median_baseline_ms']:.2f} ms, target {result['median_target_ms']:.2f} "
          f"ms; parity {'pass' if parity['passed'] else 'FAIL'}{verdict}. Written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
