"""The saved HEAL model directory: layout, atomic save, load back, refusal to overwrite another model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import StaticEmbedding
from tokenizers import Tokenizer

from heal_rag._models import default_model_path
from heal_rag.hierarchy import HNMFk
from heal_rag.model_dir import (
    CONFIG_FILE,
    HIERARCHY_DIR,
    check_output_dir,
    holds_model,
    is_heal_model_dir,
    load_model_dir,
    save_model_dir,
)


@pytest.fixture(scope="module")
def tiny_model() -> SentenceTransformer:
    """A real (untrained) sentence-transformers model that saves in milliseconds: static 8-dim embeddings."""
    tokenizer = Tokenizer.from_file(f"{default_model_path()}/tokenizer.json")
    return SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=8)], device="cpu")


@pytest.fixture(scope="module")
def hierarchy():
    from conftest import _SMALL_TEXTS

    ids = [f"d{i}" for i in range(len(_SMALL_TEXTS))]
    params = dict(
        depth=2, k_range=(2, 3), min_topic_size=2, min_df=1, stability_threshold=-1.0, show_progress=False
    )
    return HNMFk(**params).fit(_SMALL_TEXTS, doc_ids=ids).hierarchy_


def test_save_and_load_round_trip(tmp_path, tiny_model, hierarchy):
    out = tmp_path / "model"
    save_model_dir(
        tiny_model, out, hierarchy=hierarchy, config={"base_model": "static", "metrics": {"steps": 3}}
    )
    assert (
        (out / "modules.json").is_file() and (out / HIERARCHY_DIR).is_dir() and (out / CONFIG_FILE).is_file()
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    assert is_heal_model_dir(out) and holds_model(out)

    loaded = load_model_dir(out)
    assert loaded.model_path == out
    assert loaded.config["metrics"] == {"steps": 3} and loaded.base_model == "static"
    assert loaded.config["hierarchy"]["fingerprint"] == hierarchy.fingerprint
    assert loaded.hierarchy.fingerprint == hierarchy.fingerprint
    np.testing.assert_array_equal(loaded.hierarchy.paths, hierarchy.paths)
    assert loaded.use_hierarchy
    texts = ["blood pressure", "a distant galaxy"]
    np.testing.assert_allclose(
        loaded.load_model(device="cpu").encode(texts), tiny_model.encode(texts), rtol=1e-6
    )


def test_flat_model_has_no_hierarchy(tmp_path, tiny_model):
    out = tmp_path / "flat"
    save_model_dir(tiny_model, out, hierarchy=None, config={"use_hierarchy": False})
    loaded = load_model_dir(out)
    assert loaded.hierarchy is None and not loaded.use_hierarchy
    assert not (out / HIERARCHY_DIR).exists()


def test_refuses_to_overwrite_another_model(tmp_path, tiny_model, hierarchy):
    out = tmp_path / "model"
    save_model_dir(tiny_model, out, hierarchy=hierarchy, config={"run": 1})
    with pytest.raises(FileExistsError, match="already holds a HEAL model.*overwrite=True"):
        save_model_dir(tiny_model, out, hierarchy=None, config={"run": 2})
    assert load_model_dir(out).config["run"] == 1  # untouched

    # a plain sentence-transformers folder is "another model" too
    plain = tmp_path / "plain"
    tiny_model.save(str(plain))
    with pytest.raises(FileExistsError, match="already holds another model"):
        check_output_dir(plain)

    # overwrite=True replaces the whole directory: no stale hierarchy from the previous run
    save_model_dir(tiny_model, out, hierarchy=None, config={"run": 2}, overwrite=True)
    loaded = load_model_dir(out)
    assert loaded.config["run"] == 2 and loaded.hierarchy is None
    assert not (out / HIERARCHY_DIR).exists()


def test_never_writes_into_a_folder_of_other_files(tmp_path, tiny_model):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="holds no model"):
            save_model_dir(tiny_model, folder, hierarchy=None, config={}, overwrite=overwrite)
    assert (folder / "thesis.tex").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        check_output_dir(tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output_dir(empty) == empty


def test_failed_save_keeps_the_old_model(tmp_path, tiny_model):
    out = tmp_path / "model"
    save_model_dir(tiny_model, out, hierarchy=None, config={"run": 1})
    with pytest.raises(TypeError):
        save_model_dir(tiny_model, out, hierarchy=None, config={"bad": object()}, overwrite=True)
    assert load_model_dir(out).config["run"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_load_errors(tmp_path, tiny_model, hierarchy):
    with pytest.raises(FileNotFoundError, match="No model directory"):
        load_model_dir(tmp_path / "missing")
    plain = tmp_path / "plain"
    tiny_model.save(str(plain))
    with pytest.raises(ValueError, match="not a HEAL model directory.*SentenceTransformer"):
        load_model_dir(plain)
    assert not is_heal_model_dir(plain)

    out = tmp_path / "model"
    save_model_dir(tiny_model, out, hierarchy=hierarchy, config={})
    config = json.loads((out / CONFIG_FILE).read_text())

    config["format_version"] = 99
    (out / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format version 99.*Upgrade heal-rag"):
        load_model_dir(out)

    config["format_version"] = 1
    config["hierarchy"]["fingerprint"] = "0" * 64
    (out / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not the one the model was trained with"):
        load_model_dir(out)

    (out / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model_dir(out)
    assert not is_heal_model_dir(out)

    config["hierarchy"]["fingerprint"] = hierarchy.fingerprint
    (out / CONFIG_FILE).write_text(json.dumps(config))
    import shutil

    shutil.rmtree(out / HIERARCHY_DIR)
    with pytest.raises(FileNotFoundError, match="heal_hierarchy.*missing"):
        load_model_dir(out)


# -- issue 13: one strict loader, stale temporaries, modes, unwritable outputs -----------------------------
def _second_hierarchy():
    from conftest import _SMALL_TEXTS

    ids = [f"d{i}" for i in range(len(_SMALL_TEXTS))]
    return (
        HNMFk(
            depth=1,
            k_range=(2, 2),
            min_topic_size=2,
            min_df=1,
            stability_threshold=-1.0,
            show_progress=False,
            random_state=3,
        )
        .fit(_SMALL_TEXTS[::-1], doc_ids=ids)
        .hierarchy_
    )


def test_embedding_is_as_strict_as_load_model_dir(tmp_path, tiny_model, hierarchy):
    import shutil

    from heal_rag import HEALEmbedding

    out = tmp_path / "model"
    save_model_dir(tiny_model, out, hierarchy=hierarchy, config={})
    assert HEALEmbedding.from_pretrained(out, device="cpu").hierarchy.fingerprint == hierarchy.fingerprint

    # a foreign hierarchy beside a truncated heal_config.json: refused at load, never served
    text = (out / CONFIG_FILE).read_text()
    shutil.rmtree(out / HIERARCHY_DIR)
    _second_hierarchy().save(out / HIERARCHY_DIR)
    (out / CONFIG_FILE).write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="heal_config.json is not valid JSON"):
        HEALEmbedding.from_pretrained(out, device="cpu")
    # the config intact, the hierarchy foreign: the recorded fingerprint refuses it
    (out / CONFIG_FILE).write_text(text)
    with pytest.raises(ValueError, match="not the one the model was trained with"):
        HEALEmbedding.from_pretrained(out, device="cpu")
    # the hierarchy deleted: an error, not a silent None
    shutil.rmtree(out / HIERARCHY_DIR)
    with pytest.raises(FileNotFoundError, match="heal_hierarchy.*missing"):
        HEALEmbedding.from_pretrained(out, device="cpu")
    # heal_config.json deleted: nothing vouches for a heal_hierarchy/, so it is refused too
    hierarchy.save(out / HIERARCHY_DIR)
    (out / CONFIG_FILE).unlink()
    with pytest.raises(ValueError, match="no heal_config.json"):
        HEALEmbedding.from_pretrained(out, device="cpu")


def test_stale_temporaries_of_a_killed_save_are_removed_on_the_next_save(tmp_path, tiny_model, caplog):
    import os
    import time

    out = tmp_path / "model"
    stale = tmp_path / f".{out.name}.tmp-deadbeef"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "model.safetensors").write_bytes(b"x" * 1000)
    fresh = tmp_path / f".{out.name}.tmp-running1"  # a save in progress right now: left alone
    fresh.mkdir()
    other = tmp_path / ".another.tmp-deadbeef"  # another target's temporary: left alone
    other.mkdir()
    old = time.time() - 3600
    for path in (stale, stale / "sub", other):
        os.utime(path, (old, old))
    with caplog.at_level("WARNING", logger="heal_rag"):
        save_model_dir(tiny_model, out, hierarchy=None, config={})
    assert not stale.exists() and fresh.is_dir() and other.is_dir()
    assert "interrupted save" in caplog.text and stale.name in caplog.text


def test_saved_files_respect_the_umask(tmp_path, tiny_model, hierarchy):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        out = save_model_dir(tiny_model, tmp_path / "model", hierarchy=hierarchy, config={})
    finally:
        os.umask(previous)
    for path in (out, out / CONFIG_FILE, out / HIERARCHY_DIR / "hierarchy.json"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, f"{path} has mode {oct(mode)}: others cannot read it"
    assert stat.S_IMODE((out / CONFIG_FILE).stat().st_mode) == 0o644
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_unwritable_output_is_found_before_any_work(tmp_path):
    from heal_rag._io import OutputLocationError

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputLocationError, match=f"{blocker} is a file"):
        check_output_dir(blocker / "model")
    assert isinstance(OutputLocationError("x"), OSError)
