"""The graph rewrite OpenVINO's export gets (runners/graph_rewrites.py): same math, same module names, no
transposes around timm's LayerNorm2d; the model itself and the "openvino default" peer left as they are."""

from __future__ import annotations

import copy

import onnx
import pytest
import timm
import torch
from timm.layers import LayerNorm2d

from accelport.runners import create_runner
from accelport.runners.cache import model_identity
from accelport.runners.graph_rewrites import CHANNEL_FIRST_NORMS, apply_rewrites, rewrites_for

pytest.importorskip("openvino")


class ScaledNorm2d(LayerNorm2d):
    """A subclass with its own forward: not the class the rewrite knows, so it must be left alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def channel_first_norms(model: torch.nn.Module) -> torch.nn.Module:
    """A rewritten copy of ``model``, as the exporters make theirs (``model`` itself when nothing is rewritten)."""
    rewrites = rewrites_for(model)
    if not rewrites:
        return model
    rewritten = copy.deepcopy(model)
    apply_rewrites(rewritten, rewrites)
    return rewritten


def _seeded(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    with torch.no_grad():  # affine parameters away from 1/0, so a dropped weight or bias shows
        for module in model.modules():
            if isinstance(module, LayerNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


def test_each_layernorm2d_is_computed_over_channels_with_the_same_outputs_and_names():
    model = _seeded("test_convnext2")
    plain = torch.nn.Sequential(LayerNorm2d(8, affine=False), ScaledNorm2d(8))
    rewritten, rewritten_plain = channel_first_norms(model), channel_first_norms(plain)
    x = torch.randn(2, 3, 64, 64) * 3 + 1  # a mean and a spread, so centring and scaling both matter
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), model(x), rtol=1e-5, atol=1e-5)
        y = torch.randn(2, 8, 5, 7) * 2 - 1
        torch.testing.assert_close(rewritten_plain(y), plain(y), rtol=1e-5, atol=1e-5)
    norms = [name for name, m in model.named_modules() if type(m) is LayerNorm2d]
    assert norms and [name for name, m in rewritten.named_modules() if type(m) is not LayerNorm2d and
                      isinstance(m, LayerNorm2d)] == norms  # every one rewritten, under its own name
    assert [n for n, _ in rewritten.named_modules()] == [n for n, _ in model.named_modules()]
    assert all(type(m) is LayerNorm2d for n, m in model.named_modules() if n in norms)  # the model is untouched
    assert type(rewritten_plain[0]) is not LayerNorm2d and type(rewritten_plain[1]) is ScaledNorm2d
    assert rewrites_for(model) == (CHANNEL_FIRST_NORMS,) and rewrites_for(rewritten) == ()  # nothing left to do


def test_a_model_without_layernorm2d_is_exported_as_it_is_under_its_usual_cache_key():
    model = timm.create_model("resnet10t", pretrained=False).eval()
    assert channel_first_norms(model) is model and rewrites_for(model) == ()
    assert "graph_rewrites" not in model_identity(model, rewrites_for(model))
    convnext = _seeded("test_convnext2")
    assert model_identity(convnext, rewrites_for(convnext))["graph_rewrites"] == [CHANNEL_FIRST_NORMS]
    assert "graph_rewrites" not in model_identity(convnext)


def _transposes(onnx_path: str) -> int:
    return sum(node.op_type == "Transpose" for node in onnx.load(onnx_path).graph.node)


def test_openvino_exports_the_norms_without_transposes_and_its_default_peer_exports_timms_graph(tmp_path):
    from accelport.bench.peers import create_peer_runner

    model = _seeded("test_convnext2")
    batch = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(batch)
    norms = sum(type(m) is LayerNorm2d for m in model.modules())
    described = {}
    for label, runner in (
            ("accelport", create_runner("openvino", model, torch.device("cpu"), "fp32", cache_dir=str(tmp_path))),
            ("peer", create_peer_runner("openvino default", model, torch.device("cpu"), "fp32", threads=None,
                                        cache_dir=str(tmp_path)))):
        with runner:
            torch.testing.assert_close(runner.infer(batch), expected, rtol=1e-4, atol=1e-4)
            described[label] = runner.describe()
    accelport, peer = described["accelport"], described["peer"]
    assert accelport["graph_rewrites"] == [CHANNEL_FIRST_NORMS] and peer["graph_rewrites"] == []
    assert accelport["onnx_cache_key"] != peer["onnx_cache_key"]
    # timm's export: a Transpose before and after each LayerNorm2d (the blocks' own permutes add more)
    assert _transposes(peer["onnx_path"]) >= 2 * norms
    assert _transposes(accelport["onnx_path"]) == _transposes(peer["onnx_path"]) - 2 * norms


def test_a_cached_openvino_setup_copies_no_model_and_a_runner_that_exported_nothing_records_no_rewrite(
        tmp_path, monkeypatch):
    """Every setup deep-copied the whole model to learn its cache key (340 MB more for convnext_base, cached)."""
    model = _seeded("test_convnext2")
    batch = torch.randn(1, 3, 64, 64)
    first = create_runner("openvino", model, torch.device("cpu"), "fp32", cache_dir=str(tmp_path))
    assert "graph_rewrites" not in first.describe()  # nothing exported yet: not "exported unrewritten"
    with first:
        first.infer(batch)
    copies = []
    real_deepcopy = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda obj, *a: copies.append(type(obj)) or real_deepcopy(obj, *a))
    with create_runner("openvino", model, torch.device("cpu"), "fp32", cache_dir=str(tmp_path)) as again:
        again.infer(batch)
        assert again.describe()["onnx_cache_hit"] and again.describe()["graph_rewrites"] == [CHANNEL_FIRST_NORMS]
    assert not [kind for kind in copies if issubclass(kind, torch.nn.Module)]
