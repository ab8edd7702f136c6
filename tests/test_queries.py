"""Training queries: given pairs, LLM questions (deterministic LlamaIndex LLM stand-in), pseudo-queries."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import PrivateAttr

from heal_rag.datasets import CorpusDocument, save_qa_finetune_json
from heal_rag.training.queries import (
    TrainingPair,
    exclude_eval_queries,
    generate_llm_queries,
    make_pseudo_queries,
    normalize_query,
    pairs_from_qa_json,
    pairs_from_qrels,
    parse_questions,
    split_sentences,
)


class ScriptedLLM(CustomLLM):
    """A deterministic LlamaIndex LLM: answers with fixed replies in turn (an Exception reply is raised)."""

    replies: list[Any] = []
    delay: float = 0.0
    _calls: int = PrivateAttr(default=0)
    _prompts: list[str] = PrivateAttr(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted")

    @property
    def calls(self) -> int:
        return self._calls

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        reply = self.replies[self._calls % len(self.replies)]
        self._calls += 1
        self._prompts.append(prompt)
        if self.delay:
            time.sleep(self.delay)
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return CompletionResponse(text=reply(prompt))
        return CompletionResponse(text=reply)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        raise NotImplementedError


DOCS = [
    CorpusDocument(
        "d1", "Vitamin C deficiency causes scurvy. Sailors on long voyages ate citrus fruit to prevent it."
    ),
    CorpusDocument(
        "d2", "Statins lower LDL cholesterol. They reduce the risk of heart attacks in older patients."
    ),
    CorpusDocument(
        "d3", "The telescope mapped distant galaxies. Their light left them billions of years ago."
    ),
]


# ---------------------------------------------------------------------------------------------- given pairs
def test_pairs_from_qrels_mappings_and_dataset(small_dataset):
    pairs = pairs_from_qrels(small_dataset)
    assert len(pairs) == small_dataset.n_judgments == 7
    assert TrainingPair("What is a supernova?", "d6", "given") in pairs
    # q2 has two relevant documents: one pair each, in document-id order
    assert [p.doc_id for p in pairs if p.query == "What does a telescope observe?"] == ["d4", "d7"]
    again = pairs_from_qrels(small_dataset.queries, small_dataset.qrels)
    assert again == pairs


def test_pairs_from_qrels_skips_non_relevant_and_rejects_unknown_queries():
    pairs = pairs_from_qrels({"q": "a query text"}, {"q": {"d1": 0, "d2": 2}})
    assert [p.doc_id for p in pairs] == ["d2"]
    with pytest.raises(ValueError, match="no text"):
        pairs_from_qrels({"q": "x"}, {"other": {"d1": 1}})
    with pytest.raises(ValueError, match="no judgment"):
        pairs_from_qrels({"q": "x"}, {"q": {"d1": 0}})


def test_pairs_from_qa_json_round_trip(tmp_path, small_dataset):
    path = tmp_path / "qa.json"
    save_qa_finetune_json(small_dataset, path)
    pairs = pairs_from_qa_json(path)
    assert sorted((p.query, p.doc_id) for p in pairs) == sorted(
        (p.query, p.doc_id) for p in pairs_from_qrels(small_dataset)
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"queries": {}}))
    with pytest.raises(ValueError, match="not an EmbeddingQAFinetuneDataset"):
        pairs_from_qa_json(bad)
    with pytest.raises(FileNotFoundError):
        pairs_from_qa_json(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------ pseudo-queries
def test_pseudo_queries_title_for_body():
    docs = [
        CorpusDocument("a", "Body text about aspirin and fever in children.", title="Aspirin lowers fever")
    ]
    (pair,) = make_pseudo_queries(docs)
    assert pair == TrainingPair(
        "Aspirin lowers fever", "a", "pseudo-title", "Body text about aspirin and fever in children."
    )


def test_pseudo_queries_inverse_cloze_is_seeded_and_removes_the_sentence():
    text = (
        "Vitamin C deficiency causes scurvy in humans. Sailors on long voyages ate citrus fruit. "
        "Lemons were carried by the Royal Navy. Symptoms include bleeding gums and fatigue."
    )
    docs = [CorpusDocument(f"d{i}", text) for i in range(20)]
    first = make_pseudo_queries(docs, seed=0)
    assert first == make_pseudo_queries(docs, seed=0)  # deterministic
    assert first != make_pseudo_queries(docs, seed=1)  # the seed reaches the draw
    sentences = split_sentences(text)
    for pair in first:
        assert pair.source == "pseudo-ict"
        assert pair.query in sentences
        assert pair.query not in pair.positive  # the sentence is removed from its document
        assert len(pair.positive.split()) == len(text.split()) - len(pair.query.split())
    # a document's pair does not depend on the other documents
    assert make_pseudo_queries(docs[5:6], seed=0) == first[5:6]


def test_pseudo_queries_modes_and_skips(caplog):
    docs = [
        CorpusDocument(
            "t", "First sentence of the body is here. Second sentence of the body too.", title="A long title"
        ),
        CorpusDocument("short", "Too short."),
    ]
    both = make_pseudo_queries(docs, mode="both")
    assert [p.source for p in both] == ["pseudo-title", "pseudo-ict"]
    assert both[1].positive.startswith("A long title ")  # the rest of the document keeps its title
    with caplog.at_level("INFO"):
        assert [p.doc_id for p in make_pseudo_queries(docs, mode="sentence")] == ["t"]
    assert "No pseudo-query for 1 document" in caplog.text
    with pytest.raises(ValueError, match="mode must be"):
        make_pseudo_queries(docs, mode="titles")


def test_pseudo_queries_accept_llamaindex_nodes():
    from heal_rag.datasets import documents_to_nodes

    nodes = documents_to_nodes(
        [CorpusDocument("n1", "Body of the node goes here.", title="Node title words")]
    )
    (pair,) = make_pseudo_queries(nodes)
    assert (pair.query, pair.doc_id, pair.positive) == (
        "Node title words",
        "n1",
        "Body of the node goes here.",
    )


# ---------------------------------------------------------------------------------------------- LLM questions
def test_parse_questions_filters_degenerate_lines():
    passage = "Vitamin C deficiency causes scurvy in sailors on long voyages at sea."
    output = """Here are 3 questions:
1. What causes scurvy?
2) what causes scurvy
- **Why did sailors get sick on long voyages?**
Q4: "Ok?"
5. Vitamin C deficiency causes scurvy in sailors on long voyages at sea.
6. I'm sorry, but I cannot generate questions for this.

"""
    rejected: dict[str, int] = {}
    questions = parse_questions(output, passage, rejected=rejected)
    assert questions == ["What causes scurvy?", "Why did sailors get sick on long voyages?"]
    assert rejected == {"preamble": 1, "duplicate": 1, "too_short": 1, "copy_of_passage": 1, "refusal": 1}


def test_generate_llm_queries_with_a_scripted_llm(tmp_path):
    llm = ScriptedLLM(replies=["1. What prevents scurvy at sea?\n2. Which fruit did sailors eat?"])
    pairs = generate_llm_queries(DOCS[:1], llm, num_questions_per_doc=2, show_progress=False)
    assert pairs == [
        TrainingPair("What prevents scurvy at sea?", "d1", "llm"),
        TrainingPair("Which fruit did sailors eat?", "d1", "llm"),
    ]
    assert "Vitamin C deficiency causes scurvy" in llm._prompts[0]
    assert "2 question" in llm._prompts[0]


def test_generate_llm_queries_cache_resumes(tmp_path):
    cache = tmp_path / "cache" / "questions.jsonl"
    replies = [lambda p: f"What does passage number {len(p)} say about it?"]
    llm = ScriptedLLM(replies=replies)
    first = generate_llm_queries(DOCS, llm, cache_path=cache, show_progress=False)
    assert llm.calls == 3 and len(first) == 3
    assert len(cache.read_text().splitlines()) == 3
    fresh = ScriptedLLM(replies=[RuntimeError("must not be called")])
    assert generate_llm_queries(DOCS, fresh, cache_path=cache, show_progress=False) == first
    assert fresh.calls == 0
    # an edited document and a changed prompt are asked again; a torn last line is skipped
    with open(cache, "a") as handle:
        handle.write('{"key": "torn')
    edited = [DOCS[0], CorpusDocument("d2", DOCS[1].text + " Edited."), DOCS[2]]
    again = ScriptedLLM(replies=replies)
    generate_llm_queries(edited, again, cache_path=cache, show_progress=False)
    assert again.calls == 1
    other_prompt = ScriptedLLM(replies=replies)
    generate_llm_queries(
        DOCS, other_prompt, cache_path=cache, prompt_template="Ask about: {context_str}", show_progress=False
    )
    assert other_prompt.calls == 3


def test_generate_llm_queries_retries_and_reports_failures(caplog):
    # document 1: an error, then a good answer; document 2: garbage three times; document 3: good
    llm = ScriptedLLM(
        replies=[
            RuntimeError("rate limited"),
            "What prevents scurvy at sea?",
            "",
            "I'm sorry, I cannot help with that.",
            "ok",
            "Which telescope mapped distant galaxies?",
        ]
    )
    with caplog.at_level("WARNING"):
        pairs = generate_llm_queries(DOCS, llm, max_retries=2, show_progress=False)
    assert [p.doc_id for p in pairs] == ["d1", "d3"]
    assert llm.calls == 6
    assert "no usable question for 1 of 3 documents" in caplog.text
    assert "rate limited" in caplog.text


def test_generate_llm_queries_all_failing_is_an_error():
    with pytest.raises(RuntimeError, match="no usable question for any of the 3 documents.*3 errors.*boom"):
        generate_llm_queries(
            DOCS, ScriptedLLM(replies=[ValueError("boom")]), max_retries=0, show_progress=False
        )
    # MockLLM echoes the prompt back: every line is a preamble, a copy or too long -> garbage
    with pytest.raises(RuntimeError, match="unusable answers"):
        generate_llm_queries(DOCS[:1], MockLLM(), max_retries=0, show_progress=False)


def test_generate_llm_queries_timeout():
    slow = ScriptedLLM(replies=["What prevents scurvy at sea?"], delay=0.5)
    with pytest.raises(RuntimeError, match="1 time-outs"):
        generate_llm_queries(DOCS[:1], slow, timeout=0.05, max_retries=0, show_progress=False)


def test_generate_llm_queries_drops_questions_shared_by_two_documents():
    llm = ScriptedLLM(replies=["What does this study report?"])
    pairs = generate_llm_queries(DOCS, llm, show_progress=False)
    assert [p.doc_id for p in pairs] == ["d1"]


def test_generate_llm_queries_bad_arguments():
    with pytest.raises(TypeError, match="LlamaIndex LLM"):
        generate_llm_queries(DOCS, object())
    with pytest.raises(ValueError, match="context_str"):
        generate_llm_queries(DOCS, MockLLM(), prompt_template="no placeholder")
    with pytest.raises(ValueError, match="placeholder other than"):
        generate_llm_queries(DOCS, MockLLM(), prompt_template="{context_str} {oops}")
    with pytest.raises(ValueError, match="num_questions_per_doc"):
        generate_llm_queries(DOCS, MockLLM(), num_questions_per_doc=0)


# ---------------------------------------------------------------------------------------------- overlap
def test_exclude_eval_queries_normalizes_text():
    pairs = [TrainingPair("What causes Scurvy?", "d1"), TrainingPair("Which fruit?", "d1")]
    assert normalize_query("  What  causes scurvy ") == normalize_query("what causes SCURVY?")
    kept, dropped = exclude_eval_queries(pairs, {"q1": "what causes scurvy"})
    assert (kept, dropped) == ([pairs[1]], 1)
    with pytest.raises(ValueError, match="1 training queries are also evaluation queries"):
        exclude_eval_queries(pairs, ["WHAT CAUSES SCURVY"], on_overlap="raise")
    assert exclude_eval_queries(pairs, [], on_overlap="raise") == (pairs, 0)
