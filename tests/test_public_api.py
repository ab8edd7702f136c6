import subprocess
import sys

import pytest

import heal_rag


@pytest.mark.parametrize("name", [n for n in heal_rag.__all__ if n != "__version__"])
def test_every_public_name_resolves(name):
    assert getattr(heal_rag, name) is not None


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        heal_rag.NotAThing  # noqa: B018


def test_hierarchy_imports_without_torch_or_llamaindex():
    code = (
        "import sys; from heal_rag import HNMFk, Hierarchy; "
        "heavy = [m for m in ('torch', 'llama_index', 'sentence_transformers') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("old_module", "name", "new_module"),
    [
        ("heal_rag.integrations.retriever", "route_topics", "heal_rag.hierarchy.routing"),
        ("heal_rag.integrations.retriever", "membership_lookup", "heal_rag.hierarchy.routing"),
        ("heal_rag.training.model_dir", "load_model_dir", "heal_rag.model_dir"),
        ("heal_rag.training.model_dir", "HIERARCHY_DIR", "heal_rag.model_dir"),
    ],
)
def test_moved_names_still_import_from_the_old_path_with_a_deprecation_warning(old_module, name, new_module):
    import importlib

    old = importlib.import_module(old_module)
    with pytest.warns(DeprecationWarning, match=f"{name}.*{new_module}|{new_module}.*{name}"):
        value = getattr(old, name)
    assert value is getattr(importlib.import_module(new_module), name)


def test_saved_folder_names_are_defined_once():
    from heal_rag import _artifacts, model_dir
    from heal_rag.integrations import embedding, persistence

    assert model_dir.HIERARCHY_DIR is _artifacts.HIERARCHY_DIR
    assert persistence.HIERARCHY_DIR is _artifacts.HIERARCHY_DIR
    assert embedding.HIERARCHY_SUBDIR is _artifacts.HIERARCHY_DIR
    assert model_dir.CONFIG_FILE is _artifacts.MODEL_CONFIG_FILE
