"""Reading recipe files: safe YAML with duplicate keys refused, and clear errors for bad files."""

import pytest

from edgecompress.errors import RecipeError
from edgecompress.recipe import load_recipe, parse_recipe_yaml


def error_of(source) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        parse_recipe_yaml(source, source="r.yaml") if isinstance(source, str) else load_recipe(source)
    return info.value


def test_duplicate_key_is_refused_with_its_line():
    text = "pruning:\n  enabled: true\n  sparsity: 0.5\n  iterations: 3\n  sparsity: 0.7\n"
    message = str(error_of(text))
    assert "duplicate key 'sparsity'" in message
    assert "line 5" in message and "first given on line 3" in message and "r.yaml" in message


def test_duplicate_section_is_refused():
    assert "duplicate key 'pruning'" in str(error_of("pruning: {}\noutput: {}\npruning: {enabled: true}\n"))


def test_merge_keys_still_work():
    recipe = parse_recipe_yaml("stages:\n  - prune: &p {sparsity: 0.3, fine_tune_epochs: 2}\n"
                               "  - prune: {<<: *p, sparsity: 0.6}\n")
    assert [s.config.sparsity for s in recipe.stages] == [0.3, 0.6]
    assert recipe.stages[1].config.fine_tune_epochs == 2


def test_syntax_error_names_file_and_line():
    message = str(error_of("pruning:\n  enabled: true\n  sparsity: [0.5, 0.6\noutput: {}\n"))
    assert message.startswith("invalid recipe r.yaml: YAML error at line")
    assert "line 4" in message


def test_python_tags_are_not_constructed():
    message = str(error_of("name: !!python/object/apply:os.system ['echo hi']\n"))
    assert "YAML error" in message and "python/object/apply" in message


def test_top_level_must_be_a_mapping():
    assert "top level must be a mapping" in str(error_of("- prune: {}\n"))
    assert "top level must be a mapping" in str(error_of("just a string\n"))


def test_empty_recipe_is_refused(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# only a comment\n", encoding="utf-8")
    assert "empty" in str(error_of(path))
    assert "empty" in str(error_of(""))


def test_missing_file_directory_and_binary_file(tmp_path):
    assert "not found" in str(error_of(tmp_path / "absent.yaml"))
    assert "is a directory" in str(error_of(tmp_path))
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x80\x00")
    assert "not UTF-8 text" in str(error_of(binary))


def test_errors_carry_their_problems():
    error = error_of("pruning: {sparsity: 2, type: smart}\n")
    assert len(error.problems) == 2 and "2 problems" in str(error)
