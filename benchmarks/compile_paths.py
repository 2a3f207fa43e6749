#!/usr/bin/env python
"""Which TorchInductor CPU path is fastest here, measured in one process with interleaved rounds.

Paths (each on a private copy of the model, batch by batch, static shapes):
  aoti-cast        torch.export + AOTInductor, freezing, channels-last, model cast to the dtype (accelport <= d643e93)
  aoti-autocast    the same, exported under torch.autocast (weights fp32, convolutions/matmuls in the dtype)
  aoti-autotune    aoti-cast with max-autotune (Inductor's C++ GEMM templates against ATen/oneDNN, per shape)
  tc-freeze        torch.compile, freezing, channels-last, model cast to the dtype
  tc-freeze-auto   torch.compile, freezing, channels-last, autocast (the issue's "by hand" recipe); bf16/fp16 only
  tc-freeze-cpp    tc-freeze[-auto] with Inductor's C++ wrapper (cpp_wrapper=True)
  tc-freeze-nchw   tc-freeze[-auto] without channels-last
  tc-default       torch.compile defaults (no freezing, contiguous)
  tc-options       tc-freeze with freezing passed only as torch.compile(options={"freezing": True}), which Dynamo never
                   sees: parameters stay graph inputs and nothing is folded or packed (accelport before this fix)
  eager-fp32       timm eager fp32, contiguous: the baseline of issue 13's targets (ratio_to_eager_fp32)

A path named again with a suffix (``aoti-cast,aoti-autotune,aoti-cast#2``) is built a second time: a null pair,
whose ratio to the first build shows how much build-to-build noise there is (up to 10 % was seen on the AMX Xeon).

Freezing is real only when Inductor's ``freezing`` is set while Dynamo traces (the first call) and gradients are off
while AOTInductor compiles; accelport's ``frozen_inductor`` does both.

For each (dtype, batch), every path is timed once per round, rounds interleaved; the result per path is the
median over rounds of (path's round median / aoti-cast's round median), with parity (cosine, max abs error)
against eager fp32. Writes --out (JSON) as it goes.

    python benchmarks/compile_paths.py --dtypes fp32,bf16 --batch-sizes 1,32 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PATHS = ("aoti-cast", "aoti-autocast", "aoti-autotune", "tc-freeze", "tc-freeze-auto", "tc-freeze-cpp",
         "tc-freeze-nchw", "tc-default", "tc-options", "eager-fp32")



def build(path: str, model, dtype: str, example):
    """A callable taking the fp32 host batch (prepared once by ``prepare``) for one path; and that preparer."""
    import torch

    from accelport.runners.base import DTYPES
    from accelport.runners.compile import frozen_inductor
    from accelport.runners.quantize import UnderAutocast

    low = DTYPES[dtype]
    path = path.split("#")[0]  # "aoti-cast#2": the same path, built again
    if path == "eager-fp32":
        return (lambda x: model(x)), (lambda batch: batch)
    autocast = dtype != "fp32" and ("auto" in path or path in ("tc-freeze-cpp", "tc-freeze-nchw"))
    channels_last = path not in ("tc-default", "tc-freeze-nchw")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    module = copy.deepcopy(model).eval().to(memory_format=fmt)
    if not autocast:
        module = module.to(low)
    in_dtype = torch.float32 if autocast else low

    def prepare(batch):
        return batch.to(in_dtype).contiguous(memory_format=fmt)

    ctx = (lambda: torch.autocast("cpu", dtype=low)) if autocast else contextlib.nullcontext
    if path.startswith("aoti"):
        program = UnderAutocast(module, "cpu", low) if autocast else module
        with torch.no_grad():
            exported = torch.export.export(program.eval(), (prepare(example),))
        autotune = {"max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"} if path == "aoti-autotune" else {}
        with frozen_inductor():
            package = torch._inductor.aoti_compile_and_package(exported, inductor_configs=autotune)
        compiled = torch._inductor.aoti_load_package(package)
        return (lambda x: compiled(x)), prepare
    options = {"freezing": True} if path == "tc-options" else {}
    if path == "tc-freeze-cpp":
        options["cpp_wrapper"] = True
    compiled = torch.compile(module, dynamic=False, options=options)
    traced = []

    def call(x):
        first_frozen_call = path not in ("tc-default", "tc-options") and not traced
        with ctx(), (frozen_inductor() if first_frozen_call else torch.no_grad()):
            traced.append(True)
            return compiled(x)
    return call, prepare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="timm/convnextv2_atto.fcmae_ft_in1k")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-time", type=float, default=2.0, help="seconds per path per round (>= 1 call)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's count)")
    parser.add_argument("--out", default="logs/compile_paths.json")
    args = parser.parse_args()
    from accelport.arguments import set_allocator_or_exit

    set_allocator_or_exit(parser)  # as the CLI does (accelport/allocator.py): eager without page faults

    import numpy as np
    import torch

    from accelport.atomic import write_json_atomic
    from accelport.bench.api import bench_environment
    from accelport.latency import make_batch
    from accelport.models import load_model
    from accelport.preprocess import data_config_for, discover_images, load_images, make_transform

    torch._dynamo.config.recompile_limit = 64
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    images = load_images(discover_images([]), make_transform(data_config_for(loaded.model))).tensor
    report = {"environment": bench_environment(torch.device("cpu"), torch.get_num_threads()), "results": []}
    for dtype in args.dtypes.split(","):
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            batch = make_batch(images, batch_size)
            with torch.inference_mode():
                reference = loaded.model(batch).float()
            entries = {}
            for path in args.paths.split(","):
                if dtype == "fp32" and path.split("#")[0] in ("aoti-autocast", "tc-freeze-auto"):
                    continue
                started = time.perf_counter()
                try:
                    call, prepare = build(path, loaded.model, dtype, batch)
                    x = prepare(batch)
                    with torch.inference_mode():
                        out = call(x)
                        out = (out[0] if isinstance(out, (list, tuple)) else out).float()
                except Exception as exc:  # a path this torch cannot take: recorded, the others go on
                    entries[path] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                    print(dtype, batch_size, path, "ERROR", exc, file=sys.stderr, flush=True)
                    continue
                cosine = torch.nn.functional.cosine_similarity(out, reference).min().item()
                entries[path] = {"call": call, "x": x, "setup_s": round(time.perf_counter() - started, 2),
                                 "worst_cosine": cosine, "max_abs": (out - reference).abs().max().item(),
                                 "round_ms": []}
                print(dtype, batch_size, path, "setup", entries[path]["setup_s"], "cos", cosine, file=sys.stderr,
                      flush=True)
            live = {k: v for k, v in entries.items() if "call" in v}
            for _ in range(args.rounds):
                for entry in live.values():
                    samples = []
                    with torch.inference_mode():
                        entry["call"](entry["x"])  # untimed: the switch from the previous path
                        deadline = time.perf_counter() + args.max_time
                        while not samples or time.perf_counter() < deadline:
                            t = time.perf_counter()
                            entry["call"](entry["x"])
                            samples.append((time.perf_counter() - t) * 1000)
                    entry["round_ms"].append(statistics.median(samples))
            for entry in entries.values():
                entry.pop("call", None), entry.pop("x", None)
                for base_name in ("aoti-cast", "eager-fp32"):
                    base = live.get(base_name)
                    if base and entry.get("round_ms"):
                        pairs = zip(entry["round_ms"], base["round_ms"], strict=True)
                        entry[f"ratio_to_{base_name.replace('-', '_')}"] = float(np.median([a / b for a, b in pairs]))
            report["results"].append({"dtype": dtype, "batch_size": batch_size, "paths": entries})
            write_json_atomic(Path(args.out), report)
            print(json.dumps({"dtype": dtype, "batch": batch_size,
                              **{p: (round(e.get("ratio_to_aoti_cast", float("nan")), 3),
                                     round(e.get("ratio_to_eager_fp32", float("nan")), 3),
                                     [round(x, 1) for x in e.get("round_ms", [])]) for p, e in entries.items()}}),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
