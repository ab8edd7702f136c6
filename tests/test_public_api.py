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
