"""ONNX export and the ONNX Runtime backend: faithful embeddings, own fingerprints, stale exports refused.

One export of the bundled all-MiniLM-L6-v2 (fp32 + int8, about 15 s on two cores) is shared by the module.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from heal_rag import HEALEmbedding, export_onnx, load_onnx_sentence_transformer
from heal_rag._models import default_model_path
from heal_rag.backends import EXPORT_INFO_FILE, ONNX_FOLDER, ONNX_INT8_FILE, ONNX_MODEL_FILE
from heal_rag.cli import main
from heal_rag.errors import InputNotFoundError, InvalidValueError
from heal_rag.evaluation.retrieval import evaluate_models, model_fingerprint

TEXTS = [
    "Statins lower LDL cholesterol and the risk of heart attack.",
    "The telescope observed a distant supernova in another galaxy.",
    "Knead the dough and let the bread rise before baking.",
]


def _cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a), np.asarray(b)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, str]:
    """A copy of the bundled model, exported with int8; and its torch fingerprint before the export."""
    folder = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(default_model_path(), folder)
    before = model_fingerprint(folder)
    export_onnx(folder, quantize="int8")
    return folder, before


def test_export_writes_sentence_transformers_layout_and_is_faithful(exported):
    folder, _ = exported
    assert (folder / ONNX_FOLDER / ONNX_MODEL_FILE).is_file()
    assert (folder / ONNX_FOLDER / ONNX_INT8_FILE).is_file()
    info = json.loads((folder / ONNX_FOLDER / EXPORT_INFO_FILE).read_text())
    assert info["cosine_to_torch"]["fp32"] > 0.9999
    assert info["cosine_to_torch"]["int8"] > 0.98
    assert not list(folder.glob(".onnx.export-*")), "the temporary export folder was left behind"


def test_onnx_embedding_prefers_int8_and_keeps_its_own_fingerprint(exported):
    folder, _ = exported
    torch_embed = HEALEmbedding.from_pretrained(folder, device="cpu")
    int8 = HEALEmbedding.from_pretrained(folder, backend="onnx")
    fp32 = HEALEmbedding.from_pretrained(folder, backend="onnx", onnx_file=ONNX_MODEL_FILE)
    assert int8.model.heal_onnx_path.name == ONNX_INT8_FILE
    fingerprints = {torch_embed.weights_fingerprint, int8.weights_fingerprint, fp32.weights_fingerprint}
    assert len(fingerprints) == 3, "LlamaIndex caches would mix torch, fp32 ONNX and int8 embeddings"
    reference = torch_embed.get_text_embedding_batch(TEXTS)
    assert _cosines(fp32.get_text_embedding_batch(TEXTS), reference).min() > 0.9999
    assert _cosines(int8.get_text_embedding_batch(TEXTS), reference).min() > 0.98
    # queries use the same path (prompts, normalisation) as documents
    assert np.isclose(np.linalg.norm(int8.get_query_embedding("a question")), 1.0, atol=1e-5)


def test_export_keeps_the_torch_fingerprint_and_caches_onnx_apart(exported):
    folder, before = exported
    assert model_fingerprint(folder) == before  # exporting does not invalidate cached torch embeddings
    assert model_fingerprint(folder, backend="onnx") not in (None, before)


def test_retrieval_with_the_onnx_backend_matches_torch(exported, small_dataset, tmp_path):
    folder, _ = exported
    model = str(folder)
    torch_run = evaluate_models(small_dataset, [model], cache_dir=tmp_path)
    onnx_run = evaluate_models(small_dataset, [model], cache_dir=tmp_path, backend="onnx")
    assert onnx_run.runs[model].cache["corpus"] == "miss", "ONNX embeddings were served from the torch cache"
    assert onnx_run.runs[model].config["backend"] == "onnx"
    assert abs(onnx_run[model]["ndcg@10"] - torch_run[model]["ndcg@10"]) < 0.05


def test_stale_or_missing_exports_are_refused_with_advice(exported, tmp_path):
    folder, _ = exported
    stale = tmp_path / "stale"
    shutil.copytree(folder, stale)
    info_path = stale / ONNX_FOLDER / EXPORT_INFO_FILE
    info = json.loads(info_path.read_text())
    info["torch_weights"] = "0" * 64  # as if the torch weights were saved again after the export
    info_path.write_text(json.dumps(info))
    with pytest.raises(InvalidValueError, match="Export again"):
        load_onnx_sentence_transformer(stale)
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns(ONNX_FOLDER))
    with pytest.raises(InputNotFoundError, match="heal-rag export"):
        HEALEmbedding.from_pretrained(bare, backend="onnx")
    with pytest.raises(InvalidValueError, match="runs on the CPU"):
        HEALEmbedding.from_pretrained(folder, backend="onnx", device="cuda")
    with pytest.raises(InvalidValueError, match="backend must be one of"):
        HEALEmbedding.from_pretrained(folder, backend="tensorrt")
    with pytest.raises(InputNotFoundError, match="not a folder"):
        export_onnx(tmp_path / "missing")


def test_cli_export_and_evaluate_with_onnx(exported, small_beir_dir, tmp_path, capsys):
    folder, _ = exported
    copy = tmp_path / "cli-model"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(ONNX_FOLDER))
    assert main(["-q", "export", str(copy)]) == 0  # fp32 only, the quick export
    printed = capsys.readouterr().out
    assert f"{ONNX_FOLDER}/{ONNX_MODEL_FILE}" in printed and ONNX_INT8_FILE not in printed
    out = tmp_path / "metrics.json"
    argv = ["-q", "evaluate", "retrieval", str(small_beir_dir), "--model", str(copy), "--backend", "onnx"]
    assert main([*argv, "--json", str(out)]) == 0
    assert json.loads(out.read_text())[str(copy)]["ndcg@10"] > 0.5
    assert main(["export", str(copy), "--backend", "openvino"]) == 2
    assert "optimum-intel" in capsys.readouterr().err
