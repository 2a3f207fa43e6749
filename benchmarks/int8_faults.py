"""Every weight fault that fails an fp32 run also fails an int8 run: measured on the seeded checkpoint.

For each fault (applied to a copy of the seeded convnextv2_atto checkpoint, passed as ``--target-weights``), runs
ONNX Runtime fp32, ONNX Runtime int8, OpenVINO int8 and compile (PT2E) int8 on two samples and prints one JSON row
per run: the verdict, whether the int8 parity alone passed (the fault hidden by int8's own error) and the structural
proof's status.

    python benchmarks/int8_faults.py > int8_faults.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import accelport  # noqa: E402
from accelport.arguments import set_allocator_or_exit  # noqa: E402
from accelport.preprocess import DEFAULT_SAMPLES_DIR  # noqa: E402

FC2 = "stages.2.blocks.1.mlp.fc2.weight"
STEM = "stem.0.weight"
TARGETS = (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "int8"), ("compile", "int8"))


def _noisy(tensor: torch.Tensor, size: float) -> torch.Tensor:
    return tensor + size * tensor.abs().mean() * torch.randn(tensor.shape, generator=torch.Generator().manual_seed(0))


def faults(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    fc2 = state[FC2]
    return {f"noise 1e-2 in {FC2}": {**state, FC2: _noisy(fc2, 1e-2)},
            f"noise 1e-3 in {STEM}": {**state, STEM: _noisy(state[STEM], 1e-3)},
            f"channel swap in {FC2}": {**state, FC2: fc2[[1, 0, *range(2, fc2.shape[0])]]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    set_allocator_or_exit(parser)  # as the CLI does: a bad ACCELPORT_ALLOCATOR is exit 2, not open_job's traceback
    from safetensors.torch import save_file

    from checkpoints import seeded_state_dict

    state = seeded_state_dict()
    images = (str(DEFAULT_SAMPLES_DIR / "chelsea.jpg"), str(DEFAULT_SAMPLES_DIR / "camera.png"))
    with tempfile.TemporaryDirectory() as tmp:
        clean = str(Path(tmp) / "clean.safetensors")
        save_file(state, clean)
        for index, (fault, faulty) in enumerate(faults(state).items()):
            path = str(Path(tmp) / f"fault{index}.safetensors")
            save_file({k: v.contiguous() for k, v in faulty.items()}, path)
            for runtime, dtype in TARGETS:
                summary = accelport.run(weights=clean, target_weights=path, device="cpu", runtime=runtime,
                                        dtype=dtype, images=images, iters=1, warmup=0, out_dir=str(Path(tmp) / "out"),
                                        ).summary
                print(json.dumps({"fault": fault, "runtime": runtime, "dtype": dtype, "status": summary["status"],
                                  "parity_alone_passed": summary["parity"]["passed"],
                                  "worst_rel_l2": summary["parity"]["worst_sample_rel_l2"],
                                  "structural_proof": summary["structural_proof"]["status"]}), flush=True)


if __name__ == "__main__":
    main()
