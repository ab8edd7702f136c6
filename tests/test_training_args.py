"""HEALTrainingArguments: one validated object for every training setting (engine, CLI, pipeline)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from heal_rag import HEALTrainingArguments
from heal_rag.cli import build_parser


def test_defaults_are_the_dev_chosen_configuration():
    args = HEALTrainingArguments()
    assert (args.epochs, args.learning_rate, args.hard_negatives, args.contrast) == (
        4,
        5e-5,
        "mined",
        "graded",
    )
    assert args.level_weights == "document-heavy" and args.use_hierarchy and args.use_document_level


def test_cli_flags_take_their_defaults_from_the_arguments(tmp_path):
    parsed = build_parser().parse_args(["finetune", str(tmp_path), "--out", str(tmp_path / "m")])
    defaults = HEALTrainingArguments()
    for name in (
        "epochs",
        "max_steps",
        "batch_size",
        "learning_rate",
        "temperature",
        "contrast",
        "hard_negatives",
        "level_weights",
        "max_seq_length",
        "seed",
    ):
        assert getattr(parsed, name) == getattr(defaults, name), name


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"epochs": 0}, "'epochs'"),
        ({"epochs": True}, "'epochs'"),
        ({"max_steps": 0}, "'max_steps'"),
        ({"batch_size": 1}, "in-batch negatives"),
        ({"learning_rate": 0}, "'learning_rate'"),
        ({"learning_rate": float("nan")}, "'learning_rate'"),
        ({"warmup_ratio": 1.0}, "'warmup_ratio'"),
        ({"temperature": -1.0}, "'temperature'"),
        ({"max_seq_length": 4}, "'max_seq_length'"),
        ({"seed": -1}, "'seed'"),
        ({"seed": 2**32}, "'seed'"),
        ({"contrast": "cosine"}, "'contrast'"),
        ({"hard_negatives": "bm25"}, "'hard_negatives'"),
        ({"mixed_precision": "int8"}, "'mixed_precision'"),
        ({"pseudo_query_mode": "llm"}, "'pseudo_query_mode'"),
        ({"on_eval_overlap": "keep"}, "'on_eval_overlap'"),
        ({"level_weights": "heavy"}, "'level_weights'"),
        ({"level_weights": [0.0, 0.0]}, "not all zero"),
        ({"level_weights": [1.0, -1.0]}, "non-negative"),
        ({"level_weights": ["a"]}, "sequence of numbers"),
        ({"hard_negatives": "tree", "use_hierarchy": False}, "needs use_hierarchy=True"),
        ({"use_hierarchy": False, "use_document_level": False}, "no level to train on"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(changes, match):
    with pytest.raises(ValueError, match=match):
        HEALTrainingArguments(**changes)
    with pytest.raises(ValueError, match=match):  # replace() validates too
        HEALTrainingArguments().replace(**changes)


def test_unknown_setting_and_wrong_mapping_are_type_errors():
    with pytest.raises(TypeError, match="Unknown training setting.*'epoch'.*epochs"):
        HEALTrainingArguments().replace(epoch=3)
    with pytest.raises(TypeError, match="'sampler_kwargs' parameter must be a mapping"):
        HEALTrainingArguments(sampler_kwargs=[1])


def test_to_dict_is_json_and_reads_back_identically():
    args = HEALTrainingArguments(level_weights=[0.1, 0.2, 1], seed=7, hard_negative_kwargs={"range_max": 20})
    data = json.loads(json.dumps(args.to_dict()))
    assert data["level_weights"] == [0.1, 0.2, 1.0]
    assert HEALTrainingArguments.from_dict(data) == args
    # a heal_config.json training block carries more than the settings: the rest is ignored
    assert HEALTrainingArguments.from_dict({**data, "device": "cpu", "world_size": 1}) == args
    assert {f.name for f in dataclasses.fields(args)} == set(data)


def test_importing_the_arguments_imports_neither_torch_nor_llama_index():
    code = (
        "import sys; from heal_rag import HEALTrainingArguments; HEALTrainingArguments(); "
        "print(any(m == 'torch' or m.startswith('llama_index') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
