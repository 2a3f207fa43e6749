"""int8 criteria, measured: a correct int8 port's error against the fp32 reference, per architecture and engine.

Runs ``accelport.run --dtype int8`` for each architecture x int8 runtime with correct weights (random init; the
seeded checkpoint of tests/checkpoints.py for convnextv2_atto, as ``seeded``), calibrated on three bundled samples
and judged on the other three (the two sets kept apart), and writes one row per configuration: worst-image rel L2
and cosine, the share of elements within the criteria's ``elem_rtol``, real top-1 flips and near-ties, the
structural proof. Random-init errors are not real-weight errors (docs/int8.md says how to check on ImageNet val).

    python benchmarks/int8_errors.py --out docs/int8_errors.json [--archs resnet18,...] [--runtimes openvino,...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import accelport  # noqa: E402
from accelport.arguments import set_allocator_or_exit  # noqa: E402
from accelport.errors import RuntimeUnavailableError  # noqa: E402
from accelport.preprocess import DEFAULT_SAMPLES_DIR  # noqa: E402

ARCHS = ("convnextv2_atto:seeded", "convnextv2_atto", "resnet18", "mobilenetv3_small_050", "deit_tiny_patch16_224")
CALIBRATION = tuple(str(DEFAULT_SAMPLES_DIR / n) for n in ("astronaut.jpg", "coffee.jpg", "rocket.jpg"))
JUDGED = tuple(str(DEFAULT_SAMPLES_DIR / n) for n in ("chelsea.jpg", "camera.png", "horse.png"))


def _row(arch: str, runtime: str, weights: str | None) -> dict:
    row = {"arch": arch + (" (seeded checkpoint)" if weights else " (random init)"), "runtime": runtime}
    try:
        with tempfile.TemporaryDirectory() as out:
            result = accelport.run(model=arch, weights=weights, device="cpu", runtime=runtime, dtype="int8",
                                   images=JUDGED, calibration=CALIBRATION, iters=1, warmup=0, out_dir=out)
    except RuntimeUnavailableError as exc:
        return row | {"status": "refused", "reason": str(exc)[:300]}
    summary = result.summary
    parity = summary["parity"]
    checks = {c["name"]: c for c in parity["checks"]}
    within = next(c for name, c in checks.items() if name.startswith("share_within_rtol"))
    return row | {"status": summary["status"], "failed_checks": [n for n, c in checks.items() if not c["passed"]],
                  "worst_rel_l2": parity["worst_sample_rel_l2"],
                  "worst_cosine": checks["min_sample_cosine"]["value"],
                  within["name"]: within["value"], "top1_real_mismatches": checks["real_top1_mismatches"]["value"],
                  "top1_near_ties": parity["top1_near_ties"],
                  "structural_proof": summary["structural_proof"]["status"],
                  "calibration_images": summary["target"].get("calibration_images"),
                  "int8_layers": summary["target"].get("compute_layers"),
                  "quantizer": summary["target"].get("quantizer")}


def _rows(archs: list[str], runtimes: list[str], seeded: str) -> list[dict]:
    rows = []
    for arch, _, variant in (item.partition(":") for item in archs):
        for runtime in runtimes:
            rows.append(_row(arch, runtime, seeded if variant == "seeded" else None))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--archs", default=",".join(ARCHS), help="NAME or NAME:seeded (the seeded atto checkpoint)")
    parser.add_argument("--runtimes", default="onnxruntime,openvino,compile")
    args = parser.parse_args()
    set_allocator_or_exit(parser)  # as the CLI does: a bad ACCELPORT_ALLOCATOR is exit 2, not open_job's traceback
    from safetensors.torch import save_file

    from checkpoints import seeded_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ACCELPORT_CACHE_DIR", str(Path(tmp) / "cache"))
        save_file(seeded_state_dict(), str(Path(tmp) / "atto.safetensors"))
        rows = _rows(args.archs.split(","), args.runtimes.split(","), str(Path(tmp) / "atto.safetensors"))
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
