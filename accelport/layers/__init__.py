"""``accelport layers``: which module of a PyTorch target diverges from the CPU fp32 reference, and how.

Two modes per module: chained (each side runs its own forward: how error accumulates) and isolated (each
target module is fed the reference's input: the error of that operation alone). See docs/layers.md.
"""

from .api import LayersResult, describe_first_divergent, run_layers
from .compare import LayerComparison, compare_layers
from .config import MODES, LayersConfig

__all__ = ["MODES", "LayerComparison", "LayersConfig", "LayersResult", "compare_layers", "describe_first_divergent",
           "run_layers"]
