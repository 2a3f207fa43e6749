"""layers.json as a typed document (``LayersDocument``): the files written are the document's JSON, CSV and
Markdown, and the first divergent module is read from the typed comparison."""

from __future__ import annotations

import json
import re

from accelport.atomic import json_safe
from accelport.layers import run_layers

NOISY_MODULE = "stages.2.blocks.1.mlp.fc2"  # where conftest's noisy_fc2_weights put the noise


def test_layers_files_are_the_typed_documents_renderings(tmp_path, seeded_weights, noisy_fc2_weights, two_images):
    result = run_layers(weights=str(seeded_weights), target_weights=str(noisy_fc2_weights), device="cpu",
                        images=tuple(two_images[:1]), out_dir=str(tmp_path), modes=("chained",))
    document = result.document
    text = (tmp_path / "layers.json").read_text()
    assert text == json.dumps(json_safe(document.to_json()), indent=2) + "\n"  # the typed document's JSON
    written = json.loads(text)
    assert list(written)[:9] == ["status", "schema_version", "created_utc", "wall_time_s", "model", "target",
                                 "reference", "environment", "inputs"]
    assert (tmp_path / "layers.md").read_text() == document.to_markdown()
    assert f"allocator: {document.header.environment['allocator']['settings']}" in document.to_markdown()
    assert (tmp_path / "layers.csv").read_text() == document.to_csv()

    assert document.status == written["status"] == "diverged" and result.diverged
    first = document.first_divergent("chained")
    assert first is not None and first.row.key == NOISY_MODULE == result.first_divergent("chained")
    assert written["first_divergent"]["chained"]["module"] == NOISY_MODULE
    assert written["first_divergent"]["chained"]["reason"] == first.reason
    assert f"| chained | `{NOISY_MODULE}` |" in document.to_markdown()
    module_row = next(line for line in document.to_markdown().splitlines()
                      if re.match(rf"\| \d+ \| `{re.escape(NOISY_MODULE)}` \|", line))
    assert module_row.endswith("| **first divergent (chained)** |")
    assert document.inputs.images == (two_images[0],) and written["inputs"]["images"] == [two_images[0]]


def test_the_first_divergent_module_is_strict_fp32s_where_it_diverges_else_the_precisions(monkeypatch):
    """bf16's own error can carry a weight fault past its limit only modules after the fault (regnety_002: the SE
    block's fc1 after a scaled conv), or cross a limit on its own before it (int8 on ViT: the first block, where a
    correct port diverges too); strict fp32 names the faulty module in both."""
    from types import SimpleNamespace

    from accelport.layers import document as layers_document
    from accelport.layers.document import LayersDocument
    from accelport.layers.render import Divergence

    rows = [SimpleNamespace(key=name) for name in ("stem", "s3.b2.conv2.conv", "s3.b2.se", "s3.b2.se.fc1", "head")]
    own, strict = SimpleNamespace(rows=rows), SimpleNamespace(rows=rows)
    named = {}

    def first_divergence(comparison, mode):
        index = named.get(id(comparison))
        return None if index is None else Divergence(index, rows[index], "why")

    monkeypatch.setattr(layers_document, "first_divergence", first_divergence)
    document = SimpleNamespace(comparison=own, structural=strict)
    for own_index, strict_index, expected in ((3, 1, "s3.b2.conv2.conv"), (0, 1, "s3.b2.conv2.conv"),
                                              (3, None, "s3.b2.se.fc1"), (None, 1, "s3.b2.conv2.conv"),
                                              (None, None, None)):
        named = {id(own): own_index, id(strict): strict_index}
        found = LayersDocument.first_divergent(document, "chained")
        assert (found.row.key if found else None) == expected, (own_index, strict_index)
    document = SimpleNamespace(comparison=own, structural=None)  # fp32 target: no strict pass
    named = {id(own): 2}
    assert LayersDocument.first_divergent(document, "chained").row.key == "s3.b2.se"
