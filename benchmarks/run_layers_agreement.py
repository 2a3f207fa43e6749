"""`run` fails iff `layers` exits 1: every standard fault (accelport/power/faults.py) of the given sizes, written as a
faulty copy of the weights and loaded with --target-weights, judged by `accelport.run` and by `run_layers`.

One row per fault x dtype: run's verdict and failed checks, layers' status (diverged / output-failed /
no-divergence), the first divergent module per mode (and in the strict fp32 pass), and whether it is the faulted
module or its parent block.

    python benchmarks/run_layers_agreement.py --out docs/run_layers_agreement.json [--model resnet18] \
        [--dtypes fp32,bf16] [--sizes 1e-3,1e-1] [--images a.jpg b.png]
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random-init models: never wait for the Hub
import accelport  # noqa: E402
from accelport.arguments import set_allocator_or_exit  # noqa: E402
from accelport.layers import LayersConfig, run_layers  # noqa: E402
from accelport.models import load_model  # noqa: E402
from accelport.power.faults import standard_faults  # noqa: E402


def _named(first: str | None, module: str) -> bool:
    return first is not None and (first == module or module.startswith(first + "."))


def _pair(common: dict, target: str, dtype: str, module: str, out: Path) -> dict:
    run = accelport.run(**common, target_weights=target, dtype=dtype, iters=1, warmup=0, out_dir=str(out / "run"))
    layers = run_layers(LayersConfig(**common, target_weights=target, dtype=dtype, out_dir=str(out / "layers")))
    structural = (layers.data.get("structural") or {}).get("first_divergent", {})
    first = {mode: (layers.data["first_divergent"][mode] or structural.get(mode) or {}).get("module")
             for mode in layers.data["modes"]}
    parity = run.summary["parity"]
    return {"run_failed": not run.passed,
            "run_failed_checks": [c["name"] for c in parity["checks"] if not c["passed"]]
            + (["structural_proof"] if run.summary["structural_proof"]["status"] == "failed" else []),
            "worst_rel_l2": parity["worst_sample_rel_l2"],
            "layers_status": layers.data["status"], "layers_exit_1": layers.diverged,
            "layers_output_failed_checks": layers.data["output_verdict"]["failed_checks"],
            "first_divergent": first, "names_module": {mode: _named(name, module) for mode, name in first.items()},
            "agree": (not run.passed) == layers.diverged}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="convnextv2_atto")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--sizes", default="1e-3,1e-1")
    parser.add_argument("--images", nargs="+", default=[])
    args = parser.parse_args()
    set_allocator_or_exit(parser)  # as the CLI does: a bad ACCELPORT_ALLOCATOR is exit 2, not open_job's traceback
    from safetensors.torch import save_file

    from checkpoints import seeded_state_dict

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clean = None
        if args.model == "convnextv2_atto":
            clean = str(Path(tmp) / "clean.safetensors")
            save_file(seeded_state_dict(), clean)
        model = load_model(args.model, "classifier", clean, False, 1.0, 0).model
        common = {"model": args.model, "weights": clean, "device": "cpu", "images": tuple(args.images)}
        faults = standard_faults(model, tuple(float(s) for s in args.sizes.split(",")))
        for i, fault in enumerate(faults):
            path = Path(tmp) / f"fault{i}.safetensors"
            save_file({k: v.contiguous() for k, v in fault.model(model).state_dict().items()}, str(path))
            for dtype in args.dtypes.split(","):
                row = {"model": args.model, "kind": fault.kind, "size": fault.size, "module": fault.module,
                       "dtype": dtype, **_pair(common, str(path), dtype, fault.module, Path(tmp) / f"{i}-{dtype}")}
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{len(rows)} fault runs, {sum(r['agree'] for r in rows)} agree (run fails iff layers exits 1)")


if __name__ == "__main__":
    main()
