#!/usr/bin/env python
"""Reproduce the runtime table of docs/benchmarks.md: every runtime x dtype x batch size in ONE process, with
the eager fp32 baseline of the same run, and the issue's speed targets checked against the same-run ratios.

    python benchmarks/bench_runtimes.py                      # CPU, fp32+bf16, batch 1/8/32, fresh cache
    python benchmarks/bench_runtimes.py --device cuda --dtypes fp32,bf16,fp16 --batch-sizes 1,8,32,128

Writes, under --out-dir: bench.json / bench.md / bench.png (the `accelport bench` artifacts) and
bench_runtimes.json (hardware, load average before/after, target verdicts, second-run setup costs) and
bench_runtimes.md (the tables pasted into docs/benchmarks.md). The compile/export cache starts empty (a fresh
temporary folder, removed at the end, unless --cache-dir is given), so setup times are cold; a second process then
re-creates every configuration from that cache and reports what a second run pays.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))



def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def wait_for_quiet(max_wait_s: float, threshold: float) -> list[float] | None:
    """Other processes on a small machine skew every figure: wait (bounded) for the 1-minute load to drop."""
    deadline = time.time() + max_wait_s
    while (load := load_average()) and load[0] > threshold and time.time() < deadline:
        print(f"load average {load[0]} > {threshold}: waiting...", file=sys.stderr)
        time.sleep(15)
    return load_average()


def measure_peaks(device: str, dtypes: tuple[str, ...]) -> dict[str, dict]:
    """The device's best matmul FLOP/s per dtype, measured in this run (the roofline for the floors below)."""
    import torch

    from accelport.bench.roofline import matmul_peak

    peaks = {}
    for dtype in dict.fromkeys(("fp32", *dtypes)):
        try:
            peaks[dtype] = matmul_peak(torch.device(device), dtype)
        except Exception as exc:  # e.g. a dtype the device has no matmul for
            peaks[dtype] = {"error": f"{type(exc).__name__}: {exc}"}
    return peaks


def floor_ratio(document: dict, peaks: dict, dtype: str, batch_size: int) -> dict | None:
    """The smallest ratio to eager ANY engine could reach: the model's FLOPs at the best measured matmul peak
    of ``dtype`` over the same run's eager fp32 p50. For a half-precision dtype also the floor if the engine
    did its arithmetic in fp32 (bf16/fp16 storage only): on a CPU without bf16/fp16 instructions that is the
    only fast way, and then it can be no faster than fp32."""
    from accelport.bench.roofline import floor_ms

    flops = document["model"].get("flops_per_image")
    eager = [r for r in document["rows"] if r["label"] == "eager fp32" and r["batch_size"] == batch_size
             and r["status"] == "ok"]
    if not flops or not eager or "gflops_per_s" not in peaks.get(dtype, {}):
        return None
    gflops, eager_ms = flops * batch_size / 1e9, eager[0]["latency"]["p50_ms"]
    peak = peaks[dtype]["gflops_per_s"]
    result = {"peak_gflops_per_s": peak, "floor_ms": floor_ms(gflops, peak)}
    result["floor_ratio"] = result["floor_ms"] / eager_ms
    if dtype != "fp32" and "gflops_per_s" in peaks.get("fp32", {}):
        result["fp32_arithmetic_floor_ratio"] = floor_ms(gflops, peaks["fp32"]["gflops_per_s"]) / eager_ms
    return result


def check_targets(document: dict, peaks: dict) -> list[dict]:
    """Every target of issue 13 (accelport.bench.roofline.TARGETS) against this run: the measured ratio (to eager,
    or paired to the best peer), met or not, and whether this machine can check and reach it."""
    from accelport.bench.peers import comparison_for
    from accelport.bench.pick import fastest_passing
    from accelport.bench.roofline import TARGETS, target_reach

    isa = document.get("environment", {}).get("cpu_isa")
    verdicts = []
    for target in TARGETS:
        dtype, batch_size, limit = target["dtype"], target["batch_size"], target["max_ratio"]
        floor = floor_ratio(document, peaks, dtype, batch_size) if target["against"] == "eager" else None
        verdict = {**target, "roofline": floor, "reach": target_reach(target, isa, floor and floor["floor_ratio"])}
        if target["against"] == "peer":
            entry = comparison_for(document, dtype, batch_size) or {}
            ratio, best, p50 = entry.get("ratio_to_best_peer"), entry.get("pick"), entry.get("pick_p50_ms")
            verdict["best_peer"] = entry.get("best_peer")
        else:
            row = fastest_passing(document["rows"], batch_size, dtype)
            ratio, best, p50 = (row.get("ratio_vs_eager"), row["label"], row["latency"]["p50_ms"]) if row else (
                None, None, None)
        verdict.update(best=best, ratio=ratio, p50_ms=p50, met=ratio is not None and ratio <= limit,
                       measured=ratio is not None)
        verdicts.append(verdict)
    return verdicts


def second_run_setup(args: argparse.Namespace, cache_dir: str, document: dict) -> dict:
    """In a fresh process: re-create each measured configuration from the now-filled cache; its setup seconds."""
    configs = [c for c in document["configurations"] if c["status"] == "ok" and c.get("kind") != "peer"]
    command = [sys.executable, __file__, "--setup-only", "--cache-dir", cache_dir, "--model", args.model,
               "--device", document["device"], "--batch-sizes", args.batch_sizes,
               "--configs", json.dumps([[c["runtime"], c["dtype"], c["channels_last"], c.get("streams", 1),
                                         c.get("micro_batch", 0)] for c in configs])]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def setup_only(args: argparse.Namespace) -> None:
    """--setup-only: the child process of second_run_setup."""
    import torch

    from accelport.bench.sweep import Configuration
    from accelport.latency import make_batch
    from accelport.models import load_model
    from accelport.runners import create_runner

    loaded = load_model(args.model)
    size = loaded.model.pretrained_cfg["input_size"]
    images = torch.zeros((1, *size))
    result = {}
    for runtime, dtype, channels_last, streams, micro_batch in json.loads(args.configs):
        started = time.perf_counter()
        with create_runner(runtime, loaded.model, torch.device(args.device), dtype, channels_last,
                           cache_dir=args.cache_dir, streams=streams, micro_batch=micro_batch or None) as runner:
            for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
                runner.warm_up(make_batch(images, batch_size))
            label = Configuration(runtime, dtype, channels_last, streams, micro_batch).label
            result[label] = {"setup_s": round(runner.setup_time_s, 3),
                             "wall_s": round(time.perf_counter() - started, 3), "events": runner.setup_events}
    print(json.dumps(result))


def render(report: dict) -> str:
    """bench_runtimes.md from a report (a fresh one or a saved bench_runtimes.json); the sweep read as typed rows."""
    from accelport.bench.document import BenchDocument
    from accelport.bench.report import peer_lines, reliability_lines
    from accelport.environment import allocator_text

    document, hw = BenchDocument.from_json(report["bench"]), report["hardware"]
    isa = hw.get("isa", hw["cpu_capability"])
    lines = [f"Hardware: {hw['cpu']}, {hw['cpu_count']} logical cores, ISA {isa}; device "
             f"`{hw['device']}` ({hw['device_name']}), {hw['threads']} threads; torch {hw['torch']}, onnxruntime "
             f"{hw['onnxruntime']}, openvino {hw['openvino']}; allocator: {allocator_text(hw)}. Load average "
             "before/after: "
             f"{report['load_average_before']} / {report['load_average_after']}.", "",
             *reliability_lines(document.timing_reliability, document.rows), "",
             "| target (issue 13) | pick passing parity | p50 ms | ratio | limit | met | this machine |",
             "|---|---|---|---|---|---|---|"]
    for v in report["targets"]:
        ratio = f"{v['ratio']:.3f}" if v["ratio"] is not None else "–"
        p50 = f"{v['p50_ms']:.2f}" if v["p50_ms"] is not None else "–"
        against = f"÷ best peer ({v.get('best_peer') or 'none'})" if v["against"] == "peer" else "÷ eager fp32"
        met = "yes" if v["met"] else "**no**" if v["measured"] else "not measured"
        lines.append(f"| {v['dtype']} batch {v['batch_size']}, {against}, {v['isa']} CPUs | {v['best'] or '–'} | "
                     f"{p50} | {ratio} | ≤ {v['max_ratio']:.2f} | {met} | {v['reach']} |")
    lines += ["", "accelport vs what you would write by hand:", "",
              *peer_lines(document.peer_comparison, document.rounds)]
    flops = document.model.get("flops_per_image")
    peaks = ", ".join(f"{d} {p['gflops_per_s']:.1f} GFLOP/s ({p['size']}²"
                      + (f", {p['kernel']})" if p.get("kernel") else ")") if "gflops_per_s" in p
                      else f"{d}: {p['error']}" for d, p in report["matmul_peaks"].items())
    lines += ["", f"Model FLOPs per image: {flops / 1e9:.3f} G (torch FlopCounterMode). Best square matmul "
                  f"({report['hardware']['threads']} threads) measured in this run: {peaks}."
              if flops else "Model FLOPs could not be counted."]
    lines += ["",
              "| configuration | batch | p50 ms | × eager | images/s | per-round p50 ms | setup s (cold) | parity |",
              "|---|---|---|---|---|---|---|---|"]
    for row in sorted(document.rows, key=lambda r: (r.batch_size, r.label)):
        if not row.measured:
            lines.append(f"| {row.label} | {row.batch_size} | {row.status} | | | | | {(row.reason or '')[:90]} |")
            continue
        rounds = ", ".join(f"{x:.1f}" for x in row.round_p50_ms)
        parity = "pass" if row.passed else "FAIL"
        lines.append(f"| {row.label} | {row.batch_size} | {row.p50_ms:.2f} | {row.ratio_vs_eager:.3f} | "
                     f"{row.images_per_s:.1f} | {rounds} | {row.setup_s:.2f} | "
                     f"{parity} ({row.parity['precision']}, cos {row.parity['worst_sample_cosine']:.6f}) |")
    setup = report["second_run_setup"]
    if "error" not in setup:
        lines += ["", "| configuration | setup s, first run (empty cache) | setup s, second run (fresh process) |",
                  "|---|---|---|"]
        cold = {c["label"]: c.get("setup_s") for c in document.configurations}
        for label, entry in setup.items():
            lines.append(f"| {label} | {cold.get(label, 0):.2f} | {entry['setup_s']:.2f} |")
    return "\n".join(lines) + "\n"


def rerender(path: Path) -> int:
    """--from-json: the saved measurements, analysed and rendered again, written back in place."""
    from accelport.atomic import write_json_atomic, write_text_atomic

    report = json.loads(path.read_text())
    report["targets"] = check_targets(report["bench"], report["matmul_peaks"])
    write_json_atomic(path, report)
    text = render(report)
    write_text_atomic(path.with_suffix(".md"), text)
    print(text)
    return 0


def measure(args: argparse.Namespace, cache_dir: str) -> dict:
    """The sweep, the matmul peaks, the target verdicts and the second run's setup, with ``cache_dir`` as cache."""
    from accelport.bench.api import run_bench
    from accelport.bench.config import BenchConfig, parse_list
    from accelport.bench.report import isa_text
    from accelport.environment import cpu_kind_text

    before = wait_for_quiet(args.wait_quiet, args.quiet_load) if args.wait_quiet else load_average()
    config = BenchConfig.of(model=args.model, device=args.device, runtimes=parse_list(args.runtimes, "--runtimes"),
                            dtypes=parse_list(args.dtypes, "--dtypes"),
                            batch_sizes=parse_list(args.batch_sizes, "--batch-sizes", int),
                            streams=parse_list(args.streams, "--streams", int),
                            micro_batches=parse_list(args.micro_batches, "--micro-batches", int), rounds=args.rounds,
                            iters=args.iters, max_time_s=args.max_time, threads=args.threads or (), cache_dir=cache_dir,
                            out_dir=args.out_dir)
    result = run_bench(config)
    peaks = measure_peaks(args.device, config.dtypes)
    after = load_average()
    document = result.document.to_json()  # the report keeps the sweep as saved JSON; render() reads it back typed
    env = document["environment"]
    return {
        "schema_version": 1,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "hardware": {"cpu": cpu_kind_text(env), "cpu_id": env.get("cpu_id"), "cpu_count": env["cpu_count"],
                     "cpu_capability": env["cpu_capability"], "allocator": env.get("allocator"),
                     "isa": isa_text(env),
                     "device": document["device"], "device_name": env["device_name"], "threads": env["threads"],
                     "torch": env["torch"], "onnxruntime": env.get("onnxruntime"), "openvino": env.get("openvino"),
                     "platform": env["platform"]},
        "load_average_before": before,
        "load_average_after": after,
        "matmul_peaks": peaks,
        "targets": check_targets(document, peaks),
        "second_run_setup": second_run_setup(args, cache_dir, document),
        "bench": document,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="timm/convnextv2_atto.fcmae_ft_in1k")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runtimes", default="eager,compile,onnxruntime,openvino")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--streams", default="1,2", help="OpenVINO stream counts")
    parser.add_argument("--micro-batches", default="0,4", help="OpenVINO request sizes (0: one per stream)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--max-time", type=float, default=12.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder (cold setup)")
    parser.add_argument("--out-dir", default="logs/bench_runtimes")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds for the 1-minute load average to fall below --quiet-load")
    parser.add_argument("--quiet-load", type=float, default=0.5)
    parser.add_argument("--from-json", metavar="PATH",
                        help="measure nothing: re-derive the target verdicts and the tables from a saved "
                             "bench_runtimes.json (e.g. after a change to this script's analysis)")
    parser.add_argument("--setup-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--configs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from accelport.arguments import set_allocator_or_exit

    set_allocator_or_exit(parser)  # as the CLI does: ACCELPORT_ALLOCATOR=default measures with glibc's defaults
    if args.setup_only:
        setup_only(args)
        return 0
    if args.from_json:
        return rerender(Path(args.from_json))

    from accelport.arguments import configure_logging
    from accelport.atomic import write_json_atomic, write_text_atomic

    configure_logging(verbose=False, quiet=False)
    with tempfile.TemporaryDirectory(prefix="accelport-bench-cache-") as scratch:  # exports: ~60 MB, not left behind
        report = measure(args, args.cache_dir or scratch)
    out_dir = Path(args.out_dir)
    write_json_atomic(out_dir / "bench_runtimes.json", report)
    text = render(report)
    write_text_atomic(out_dir / "bench_runtimes.md", text)
    print(text)
    print(f"written: {out_dir / 'bench_runtimes.json'}, {out_dir / 'bench_runtimes.md'}, bench.json/md/png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
