#!/usr/bin/env python
"""compile int8 against compile fp32, per model: does the PT2E int8 package run faster than the fp32 one?

    python benchmarks/compile_int8_vs_fp32.py --models mobilevit_xxs,resnet18,deit_tiny_patch16_224

For each timm model (random init, seeded), accelport's compile runner builds its fp32 package and its int8 package
(PT2E, calibrated on the bundled samples), both channels-last; they are then called alternately at batch 1 (a
seeded random image), ``--calls`` times each, in one process, so a burst of load hits both. Writes the medians, the
int8/fp32 ratio and the int8 output's cosine to fp32 eager (random input and weights: a sanity figure, not a
criterion), with the CPU named. Found the MobileViT slowdown (docs/int8.md "Why compile int8 of MobileViT was 20x
slower"): a model whose ratio is far above 1 has an int8 lowering worth profiling.
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


def measure_model(name: str, calls: int, cache_dir: str) -> dict:
    import timm
    import torch

    from accelport.preprocess import data_config_for
    from accelport.runners import create_runner

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    image = torch.randn(1, *data_config_for(model, False).values["input_size"],
                        generator=torch.Generator().manual_seed(1))
    try:
        runners = {dtype: create_runner("compile", model, torch.device("cpu"), dtype, True, cache_dir=cache_dir)
                   for dtype in ("fp32", "int8")}
        with runners["fp32"], runners["int8"]:
            for runner in runners.values():
                runner.warm_up(image)
            times: dict[str, list[float]] = {dtype: [] for dtype in runners}
            for _ in range(calls):
                for dtype, runner in runners.items():
                    started = time.perf_counter()
                    runner.infer(image)
                    times[dtype].append(time.perf_counter() - started)
            with torch.no_grad():
                expected = model(image).flatten()
            got = runners["int8"].infer(image).flatten().float()
    except Exception as exc:  # one model's failure is a row, not the end of the sweep
        return {"error": f"{type(exc).__name__}: {exc}"}
    fp32_ms, int8_ms = (statistics.median(times[d]) * 1e3 for d in ("fp32", "int8"))
    return {"fp32_ms": round(fp32_ms, 3), "int8_ms": round(int8_ms, 3), "int8_over_fp32": round(int8_ms / fp32_ms, 3),
            "cosine_to_fp32_eager": round(float(torch.nn.functional.cosine_similarity(expected, got, dim=0)), 5)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilevit_xxs,deit_tiny_patch16_224,resnet18,convnext_atto")
    parser.add_argument("--calls", type=int, default=15, help="timed calls per model and dtype (alternating)")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/compile_int8_vs_fp32_"
                                                    "b1_<cpu>.json)")
    args = parser.parse_args(argv)
    from accelport.arguments import set_allocator_or_exit

    set_allocator_or_exit(parser)  # as the CLI does (accelport/allocator.py): eager without page faults
    import torch

    from accelport.environment import cpu_isa, describe_environment

    environment = describe_environment(torch.device("cpu")) | {"isa": cpu_isa()}
    rows = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        for name in args.models.split(","):
            rows[name] = measure_model(name, args.calls, cache_dir)
            print(name, rows[name], flush=True)
    out = Path(args.out or ROOT / "benchmarks" / "results" / "compile_int8_vs_fp32_b1.json")
    out.write_text(json.dumps({"environment": environment, "batch_size": 1, "calls": args.calls, "rows": rows},
                              indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
