"""Compile and run one OpenVINO model in this (child) process: ``python openvino_trial.py MODEL SHAPE CONFIG``.

``runners/openvino.py`` runs it before compiling an NNCF int8 model in its own process. OpenVINO 2026.4's CPU
plugin corrupted the heap running the int8 EdgeNeXt at a static shape (SIGSEGV, SIGABRT "corrupted size vs.
prev_size" or SIGBUS within five inferences, every time; fine with SNIPPETS_MODE=DISABLE or a dynamic batch), which
killed accelport with no message and no artifacts. A child that dies by a signal costs nothing but its exit code.
Standalone on purpose: it imports only OpenVINO and numpy, whatever the parent's sys.path.
"""

from __future__ import annotations

import json
import sys

TRIAL_INFERENCES = 5  # the corruption showed within 5 inferences in every crash seen


def main(model_path: str, shape: str, config: str) -> int:
    import numpy as np
    import openvino as ov

    core = ov.Core()
    model = core.read_model(model_path)
    dims = json.loads(shape)
    model.reshape(dims)
    request = core.compile_model(model, "CPU", json.loads(config)).create_infer_request()
    batch = np.random.default_rng(0).standard_normal(dims, dtype=np.float32)
    for _ in range(TRIAL_INFERENCES):
        request.infer({0: batch})
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
