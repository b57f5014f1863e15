"""common/fs.py: files by URI (on a real S3-compatible server, moto, started here), and finding a model
file shipped to a node (`shipped`). The `s3` fixture is shared with the trainer's and the crawler's
remote-storage tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common import fs
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


# ----------------------------------------------------------------------------- remote stores, on a real S3 server

def test_files_by_uri_on_s3(s3, tmp_path):
    local = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), local)
    fs.put_file(local, f"{s3}/data/part-0.parquet")
    fs.put_file(local, f"{s3}/data/deeper/part-1.parquet")
    (tmp_path / "note.txt").write_text("hello")
    fs.put_file(tmp_path / "note.txt", f"{s3}/data/note.txt")
    same = s3.replace("s3://", "s3a://")   # Hadoop's scheme names the same object
    assert fs.glob(f"{same}/data", "*.parquet") == [f"{same}/data/part-0.parquet"]
    assert fs.glob(f"{s3}/data", "*") == [f"{s3}/data/deeper", f"{s3}/data/note.txt", f"{s3}/data/part-0.parquet"]
    assert fs.glob(f"{s3}/missing", "*") == []
    assert fs.is_file(f"{s3}/data/note.txt") and not fs.is_file(f"{s3}/data")
    assert fs.is_dir(f"{s3}/data") and fs.exists(f"{s3}/data/deeper") and not fs.exists(f"{s3}/nothing")
    assert fs.read_bytes(f"{same}/data/note.txt") == b"hello"
    assert fs.read_table(f"{s3}/data/part-0.parquet").column("x").to_pylist() == [1, 2, 3]
    fs.remove(f"{s3}/data/deeper")
    fs.remove(f"{s3}/data/note.txt")
    fs.remove(f"{s3}/never-there")
    assert fs.glob(f"{s3}/data", "*") == [f"{s3}/data/part-0.parquet"]


def test_a_failed_upload_leaves_no_object(s3, tmp_path, monkeypatch):
    """On an object store the object appears when the stream closes, even after an error: it is deleted."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 100_000)
    real = shutil.copyfileobj

    def killed_midway(src, dst, length=0):
        dst.write(src.read(1000))
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(shutil, "copyfileobj", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        fs.put_file(big, f"{s3}/big.bin")
    monkeypatch.setattr(shutil, "copyfileobj", real)
    assert not fs.exists(f"{s3}/big.bin")


def test_staged_uploads_on_success_only_and_local_copy_fetches_what_is_named(s3, tmp_path):
    with pytest.raises(RuntimeError):
        with fs.staged(f"{s3}/run") as folder:
            (folder / "a.txt").write_text("a")
            raise RuntimeError("writer failed")
    assert fs.glob(s3, "*") == []
    with fs.staged(f"{s3}/run", last=["marker"]) as folder:
        for name in ("marker", "a.txt", "sub/b.txt"):
            (folder / name).parent.mkdir(exist_ok=True)
            (folder / name).write_text(name)
    assert fs.glob(f"{s3}/run", "*") == [f"{s3}/run/a.txt", f"{s3}/run/marker", f"{s3}/run/sub"]
    with fs.local_copy(f"{s3}/run", ["a.txt", "absent"]) as copy:
        assert sorted(p.name for p in copy.iterdir()) == ["a.txt"]
    with fs.local_copy(f"{s3}/run") as copy:
        assert (copy / "sub" / "b.txt").read_text() == "sub/b.txt"
    with fs.local_copy(tmp_path) as same:   # a local path is used where it is
        assert same == tmp_path


def test_local_paths_and_uri_joins(tmp_path):
    assert fs.as_path("file:///a/b") == Path("/a/b") and fs.as_path("s3a://b/k") == "s3a://b/k"
    assert fs.join("s3://bucket/a", "b", "c") == "s3://bucket/a/b/c"   # pathlib would fold the //
    (tmp_path / "src.txt").write_text("data")
    fs.put_file(tmp_path / "src.txt", tmp_path / "new" / "dst.txt")
    assert fs.glob(tmp_path / "new", "*") == [str(tmp_path / "new" / "dst.txt")]   # no temporary left
    assert fs.read_bytes(tmp_path / "new" / "dst.txt") == b"data"
    fs.remove(tmp_path / "new")
    assert not fs.exists(tmp_path / "new")


def test_walk_on_s3_lists_like_os_walk_and_prunes(s3, tmp_path):
    for name in ("a/_stats.json", "a/kept/p.parquet", "b/c/x.txt", "b/.tmp-1/y.txt", "top.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    fs.upload_folder(tmp_path, f"{s3}/run")

    def tree(top: str):   # (folder under top, subfolders, files), pruning dot-folders and the insides of `a`
        rows = []
        for folder, subfolders, files in fs.walk(top):
            subfolders[:] = [] if "_stats.json" in files else sorted(d for d in subfolders if not d.startswith("."))
            rows.append((folder[len(top):].lstrip("/"), list(subfolders), sorted(files)))
        return rows

    expected = [("", ["a", "b"], ["top.txt"]), ("a", [], ["_stats.json"]), ("b", ["c"], []), ("b/c", [], ["x.txt"])]
    assert tree(str(tmp_path)) == tree(f"{s3}/run") == expected
    assert next(fs.walk(f"{s3}/run"))[0] == f"{s3}/run"          # folders are URIs under the top one
    assert list(fs.walk(f"{s3}/missing")) == list(fs.walk(tmp_path / "missing")) == []


def test_write_bytes_replaces_a_file_whole(s3, tmp_path):
    for path in (tmp_path / "new" / "page.html", f"{s3}/new/page.html"):
        fs.write_bytes(path, b"first")
        fs.write_bytes(path, b"second")
        assert fs.read_bytes(path) == b"second"
    assert fs.glob(tmp_path / "new", "*") == [str(tmp_path / "new" / "page.html")]   # no temporary left
    assert fs.glob(f"{s3}/new", "*") == [f"{s3}/new/page.html"]
