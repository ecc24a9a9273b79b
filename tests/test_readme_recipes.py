"""The README's recipe examples load: the sectioned recipe, the ordered form, and each one-line example of the
pruning and quantization sections."""

import re
from pathlib import Path

import pytest
import yaml

from edgecompress.recipe import load_recipe

README = (Path(__file__).parents[1] / "README.md").read_text()


def _section_examples(heading: str) -> list[dict]:
    part = README.split(heading, 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", part, re.S)[1]
    examples, pending = [], ""
    for line in block.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        pending += " " + line.strip()
        if pending.count("{") == pending.count("}"):
            examples.append(yaml.safe_load(pending))
            pending = ""
    return examples


@pytest.mark.parametrize(("heading", "section"), [("### Pruning, one example per scheme", "pruning"),
                                                  ("### Quantization, one example per scheme", "quantization")])
def test_every_one_line_example_loads(heading, section):
    examples = _section_examples(heading)
    assert len(examples) >= 5
    for example in examples:
        recipe = load_recipe({section: {"enabled": True, **example}})
        assert len(recipe.stages) == 1


def test_the_full_recipes_load():
    blocks = re.findall(r"```yaml\n(.*?)```", README.split("## Recipes", 1)[1], re.S)
    full = [b for b in blocks if "output:" in b or b.split(":")[0] in ("distillation", "lowrank")]
    assert len(full) >= 4
    for block in full:
        load_recipe(yaml.safe_load(block))
