"""An engine's graph as plain data: each operation's name and who reads each of its outputs, in graph order.

``layers`` finds module outputs in an engine's graph by the names converters give its operations
(``layers/engine_taps.py``); this is the little it needs of an ``ov.Model`` or an ONNX ``ModelProto``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

_SKIPPED_OPENVINO_TYPES = {"Constant", "Parameter", "Result"}
RESULT = None  # a reader that is the graph's result (an output of the whole model)


@dataclass(frozen=True)
class GraphOp:
    """One operation of an engine's graph, in graph order: its name, and per output port who reads it (the
    readers' names, ``RESULT`` for the model's output). ``scope``: the name that spells its module where the
    operation's own name does not (torch's dynamo ONNX exporter keeps the module path in metadata)."""

    name: str
    readers: tuple[tuple[str | None, ...], ...]
    scope: str | None = None


def openvino_ops(ov_model: Any) -> list[GraphOp]:
    """An ``ov.Model``'s operations in order (constants, parameters and results left out)."""
    ops = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() in _SKIPPED_OPENVINO_TYPES:
            continue
        readers = tuple(tuple(RESULT if target.get_node().get_type_name() == "Result"
                              else target.get_node().get_friendly_name() for target in output.get_target_inputs())
                        for output in op.outputs())
        ops.append(GraphOp(op.get_friendly_name(), readers))
    return ops


def onnx_ops(onnx_model: Any) -> list[GraphOp]:
    """An ONNX ``ModelProto``'s nodes in order (ONNX requires them sorted), each output's readers by name."""
    graph = onnx_model.graph
    read_by: dict[str, list[str | None]] = {output.name: [RESULT] for output in graph.output}
    for node in graph.node:
        for tensor in node.input:
            read_by.setdefault(tensor, []).append(node.name)
    return [GraphOp(node.name, tuple(tuple(read_by.get(tensor, ())) for tensor in node.output), _dynamo_scope(node))
            for node in graph.node if node.op_type != "Constant"]


def _dynamo_scope(node: Any) -> str | None:
    """A dynamo-exported node's module, written as OpenVINO's direct conversion writes it (``__module.<path>/op``):
    its ``pkg.torch.onnx.name_scopes`` metadata lists the enclosing module paths, innermost last, then the op.
    None for a node without it (the TorchScript exporter's names spell the scope themselves)."""
    scopes = next((prop.value for prop in node.metadata_props if prop.key == "pkg.torch.onnx.name_scopes"), None)
    if scopes is None:
        return None
    try:
        paths = ast.literal_eval(scopes)
    except (ValueError, SyntaxError):
        return None
    module = paths[-2] if isinstance(paths, list) and len(paths) >= 2 else ""
    return f"__module.{module}/{node.name}"
