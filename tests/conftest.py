"""Shared pytest fixtures: data locations, the bundled demo dataset and tiny corpora.

Keep these generic: every test module of the project may use them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

# Tests never reach a model hub and never phone home, wherever they run.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# What `heal-rag ...` (cli.main) sets for the rest of the process: restored after every test, so that a CLI
# test run with -q cannot silence the logs or progress bars another test checks.
_CLI_LOGGERS = ("heal_rag", "heal_rag.training.engine.losses")
_CLI_ENV = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")


@pytest.fixture(autouse=True)
def _restore_cli_side_effects():
    levels = {name: logging.getLogger(name).level for name in _CLI_LOGGERS}
    env = {name: os.environ.get(name) for name in _CLI_ENV}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data next to the repository (absent on a fresh clone: tests that need it skip cleanly)
SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"

# Three clearly separated themes (cardiology, astronomy, cooking), four documents each, so clustering tests
# have a known answer. Ids and titles are deterministic.
_SMALL_TEXTS = [
    "The heart pumps blood through arteries and veins; cardiac muscle contracts rhythmically.",
    "Hypertension raises blood pressure in the arteries and strains the heart over time.",
    "A cardiologist measured the heart rate and blood pressure of every patient in the cardiac ward.",
    "Statins lower cholesterol in the blood and reduce the risk of heart attack and cardiac arrest.",
    "The telescope observed distant galaxies and the light of stars billions of years old.",
    "Astronomers measured the orbit of the planet around its star with a space telescope.",
    "A supernova is the explosion of a massive star; its light can outshine a whole galaxy.",
    "The planet's orbit, the star's light and the galaxy's rotation were mapped by the telescope.",
    "Knead the dough, let the bread rise, then bake it in a hot oven until the crust is golden.",
    "Simmer the tomato sauce with garlic and olive oil, then season the pasta with salt and basil.",
    "The recipe says to bake the cake in the oven and to whisk the eggs with sugar and butter.",
    "Fry the garlic in olive oil, add the tomato, salt and basil, and serve it with fresh bread.",
]
SMALL_TOPICS = [0] * 4 + [1] * 4 + [2] * 4


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` (the project's benchmark data); skips the test when it is absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"shared data not available at {SHARED_DATA_DIR}")
    return SHARED_DATA_DIR


@pytest.fixture(scope="session")
def scifact_dir(shared_data_dir: Path) -> Path:
    """The full SciFact BEIR folder in ``../shared/data``; skips when absent."""
    path = shared_data_dir / "scifact"
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not available at {path}")
    return path


@pytest.fixture(scope="session")
def demo_dataset():
    """The bundled demo corpus (test split): ~800 SciFact abstracts, 300 claims. Do not mutate it."""
    from heal_rag.datasets import load_demo_dataset

    return load_demo_dataset(split="test")


@pytest.fixture(scope="session")
def demo_dataset_dir() -> Path:
    """Folder of the bundled demo corpus (BEIR layout)."""
    from heal_rag.datasets import demo_corpus_path

    return demo_corpus_path()


@pytest.fixture
def small_texts() -> list[str]:
    """Twelve short texts on three clearly separated topics (see ``small_topics``)."""
    return list(_SMALL_TEXTS)


@pytest.fixture
def small_topics() -> list[int]:
    """The topic (0 = cardiology, 1 = astronomy, 2 = cooking) of each text of ``small_texts``."""
    return list(SMALL_TOPICS)


@pytest.fixture
def small_dataset():
    """A tiny :class:`~heal_rag.datasets.RetrievalDataset` over ``small_texts``: 12 documents, 6 queries."""
    from heal_rag.datasets import CorpusDocument, RetrievalDataset

    corpus = {
        f"d{i}": CorpusDocument(id=f"d{i}", text=text, title=f"Doc {i}")
        for i, text in enumerate(_SMALL_TEXTS)
    }
    queries = {
        "q0": "What raises blood pressure?",
        "q1": "How do statins protect the heart?",
        "q2": "What does a telescope observe?",
        "q3": "What is a supernova?",
        "q4": "How do you bake bread?",
        "q5": "How is tomato sauce made?",
    }
    qrels = {
        "q0": {"d1": 1},
        "q1": {"d3": 1},
        "q2": {"d4": 1, "d7": 1},
        "q3": {"d6": 1},
        "q4": {"d8": 1},
        "q5": {"d9": 1},
    }
    return RetrievalDataset(corpus=corpus, queries=queries, qrels=qrels, name="small")


@pytest.fixture
def small_beir_dir(tmp_path: Path, small_dataset) -> Path:
    """``small_dataset`` written as a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)."""
    import json

    folder = tmp_path / "small_beir"
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for doc in small_dataset.documents:
            handle.write(json.dumps({"_id": doc.id, "title": doc.title, "text": doc.text}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as handle:
        for qid, text in small_dataset.queries.items():
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in small_dataset.qrels.items():
            for did, grade in judged.items():
                handle.write(f"{qid}\t{did}\t{grade}\n")
    return folder
