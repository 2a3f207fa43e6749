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
