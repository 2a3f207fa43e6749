"""Module outputs inside an engine's graph: which tensor of an OpenVINO or ONNX model is the output of which module.

OpenVINO and ONNX keep the names the converters give: OpenVINO's direct PyTorch conversion names each operation
``__module.<module path>/aten::<op>/...`` and the TorchScript ONNX exporter ``/<scope>/<scope>/.../<Op>``, with an
indexed child's scope written ``<container>.<index>`` (``/stages/stages.0/blocks/blocks.0/mlp/fc2/Conv``). NNCF's
quantisation keeps them too, its FakeQuantize nodes named after the operation they follow (``.../fq_output_0``), and
so does ONNX Runtime's QDQ quantisation (``/stages/.../Conv_output_0_QuantizeLinear``, ``..._DequantizeLinear``).
torch's dynamo ONNX exporter names nodes ``node_<op>`` but records each one's module path in its metadata, which
``runners.graph_ops`` writes as the direct conversion's ``__module.<path>/...`` scope.
An operation belongs to the innermost module its name spells, and a module's output is its last operation, in the
graph's order, that an operation of another module (or the model's result) reads: for an int8 model that is the
FakeQuantize the next module reads, the activation as the engine hands it on. Operations the converter left
unnamed (a LayerNorm's decomposition) belong to no module and never count as readers, so a module whose last
operation is unnamed has no output here rather than a wrong one (an operation the model's own forward names,
``/Flatten``, is a reader outside every module); so has a module called more than once (its calls
share names), and one whose engine tensor has another number of elements than its torch output.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..runners.graph_ops import RESULT, GraphOp

_DIRECT_PREFIX = "__module."


ROOT = ""  # the model's own forward: named, but in no module (``/Flatten``, ``aten::flatten/Reshape``)


def module_of(name: str, modules: set[str]) -> str | None:
    """The innermost module of ``modules`` that an OpenVINO operation's friendly ``name`` spells, ``ROOT`` for one
    the model's own forward names, or None for an operation the converter left unnamed."""
    if name.startswith(_DIRECT_PREFIX):
        path = name[len(_DIRECT_PREFIX):].split("/", 1)[0]
        while path and path not in modules:
            path = path.rpartition(".")[0]
        return path
    if name.startswith("aten::"):
        return ROOT
    if not name.startswith("/"):
        return None
    current = ROOT
    for segment in name.split("/")[1:-1]:  # the last segment is the operation itself
        candidates = [segment, segment.rpartition(".")[2]] if "." in segment else [segment]
        for candidate in candidates:
            path = f"{current}.{candidate}" if current else candidate
            if path in modules:
                current = path
                break
        else:
            break
    return current


def _owned_by(owner: str, module: str) -> bool:
    return owner == module or owner.startswith(module + ".")


Place = tuple[str, int]  # where a tensor is in the engine's graph: an operation's name and its output port


def find_module_outputs(ops: list[GraphOp], modules: Iterable[str]) -> dict[str, Place]:
    """For each of ``modules`` (torch module paths) that the graph names, the output that leaves the module last."""
    wanted = set(modules)
    owner = {op.name: module_of(op.scope or op.name, wanted) for op in ops}
    taps: dict[str, Place] = {}
    for op in ops:  # graph order: a later boundary output of the same module replaces an earlier one
        own = owner[op.name]
        if not own:  # unnamed, or the model's own forward: no module to give it to
            continue
        for port, readers in enumerate(op.readers):
            for module in _enclosing(own):
                if any(_read_outside(reader, module, owner) for reader in readers):
                    taps[module] = (op.name, port)
    return taps


def _enclosing(module: str) -> list[str]:
    """``stages.0.blocks.1`` and every module around it: ``stages.0.blocks``, ``stages.0``, ``stages``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _read_outside(reader: str | None, module: str, owner: dict[str, str | None]) -> bool:
    if reader is RESULT:
        return True
    reader_owner = owner.get(reader)
    return reader_owner is not None and not _owned_by(reader_owner, module)
