from __future__ import annotations

import pytest

from pipeline.config import load_recipe
from common.recipe import ConfigError, parse_value
from stages.extract import ExtractConfig


def test_default_recipe_matches_the_dataclass_defaults():
    recipe = load_recipe()
    assert recipe.section("extract") == ExtractConfig()
    assert recipe.section("ingest").content_types == ("text/html", "application/xhtml+xml")


def test_overrides_are_parsed_as_toml_values():
    recipe = load_recipe(None, ["extract.favor_recall=true", "ingest.keep_statuses=[200, 203]",
                                "ingest.source=news", "spark.conf={ \"spark.x\" = \"1\" }"])
    assert recipe.section("extract").favor_recall is True
    assert recipe.section("ingest").keep_statuses == (200, 203)
    assert recipe.section("ingest").source == "news"
    assert recipe.section("spark").conf == {"spark.x": "1"}


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"unknown key 'extract\.favour_precision'"):
        load_recipe(None, ["extract.favour_precision=true"])


def test_unknown_section_in_a_recipe_file(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[extrac]\nfast = true\n")
    with pytest.raises(ConfigError, match=r"unknown recipe section \[extrac\]"):
        load_recipe(path)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="extract.min_text_chars expects int"):
        load_recipe(None, ["extract.min_text_chars=many"])
    with pytest.raises(ConfigError, match="expects bool"):
        load_recipe(None, ["extract.fast=1"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_recipe(None, ["fast=true"])


def test_plain_strings_and_frozen_sections():
    assert parse_value("3") == 3 and parse_value("not toml") == "not toml"
    config = load_recipe().section("extract")
    with pytest.raises(AttributeError):
        config.fast = True


def test_a_recipe_overlays_its_base(tmp_path):
    (tmp_path / "base.toml").write_text("[extract]\nfast = true\nmin_text_chars = 5\n")
    (tmp_path / "child.toml").write_text('base = "base.toml"\n[extract]\nmin_text_chars = 9\n')
    config = load_recipe(tmp_path / "child.toml").section("extract")
    assert config.fast is True and config.min_text_chars == 9


def test_demo_recipe_changes_only_the_shard_size():
    demo, default = load_recipe("pipeline/recipes/demo.toml"), load_recipe()
    assert demo.section("tokenize").seq_len == 512
    assert demo.section("extract") == default.section("extract")
