"""common/fs.py: opening by URI, and finding a model file shipped to a node (`shipped`)."""

from __future__ import annotations

import shutil

from common.fs import local_path, shipped
from stages.language import LanguageConfig, LanguageId, model_path


def test_local_path_strips_the_file_scheme():
    assert local_path("file:///a/b.bin") == "/a/b.bin"
    assert local_path("/a/b.bin") == "/a/b.bin"


def test_shipped_prefers_the_path_then_the_copy_in_the_working_folder(tmp_path, monkeypatch):
    here = tmp_path / "driver" / "model.bin"
    here.parent.mkdir()
    here.write_bytes(b"driver")
    node = tmp_path / "node"
    node.mkdir()
    (node / "model.bin").write_bytes(b"node")
    monkeypatch.chdir(node)
    assert shipped(str(here)) == str(here)
    assert shipped("/only/on/the/driver/model.bin") == str(node / "model.bin")
    assert shipped("/only/on/the/driver/other.bin") == "/only/on/the/driver/other.bin"


def test_a_stage_loads_a_model_shipped_under_a_path_this_node_lacks(tmp_path, monkeypatch):
    shutil.copyfile(model_path(), tmp_path / "user-lid.ftz")
    monkeypatch.chdir(tmp_path)  # as on an executor: the copy sits in the working folder
    stage = LanguageId(LanguageConfig(model="/models/on/the/driver/user-lid.ftz"))
    assert stage.model_files() == ("/models/on/the/driver/user-lid.ftz",)
    lang, score = stage.predict("The quick brown fox jumps over the lazy dog near the river bank.")
    assert lang == "en" and score > 0.5
