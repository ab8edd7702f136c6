"""Issue 13 on the command line: outputs probed before work, one-line errors, arguments checked first."""

from __future__ import annotations

import errno

import pytest

from heal_rag.cli import main

SMALL = ["--depth", "1", "--k-min", "2", "--k-max", "3", "--min-topic-size", "2"]


@pytest.fixture
def blocked(tmp_path):
    """A path whose parent is a file: it can never be created (works as root too, unlike chmod)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    return blocker / "out"


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any command gets as far as loading a corpus or a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the output location was checked")

    import heal_rag.datasets
    import heal_rag.evaluation.retrieval
    import heal_rag.pipeline

    monkeypatch.setattr(heal_rag.datasets, "load_beir", refuse)
    monkeypatch.setattr(heal_rag.datasets, "load_corpus", refuse)
    monkeypatch.setattr(heal_rag.evaluation.retrieval, "evaluate_models", refuse)
    monkeypatch.setattr(heal_rag.pipeline, "load_corpus", refuse, raising=False)


def _one_line_error(capsys, command: str, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"heal-rag {command}: error: "), err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(
    "argv, command, option",
    [
        (["hierarchy", "build", "{corpus}", "--out", "{bad}", *SMALL], "hierarchy", "--out"),
        (["finetune", "{beir}", "--out", "{bad}"], "finetune", "output directory"),
        (["finetune", "{beir}", "--out", "{good}", "--llm-cache", "{bad}"], "finetune", "--llm-cache"),
        (["evaluate", "retrieval", "{beir}", "--bm25", "--json", "{bad}"], "evaluate", "--json"),
        (["evaluate", "retrieval", "{beir}", "--model", "default", "--cache-dir", "{bad}"], "evaluate", ""),
        (["evaluate", "rag", "{beir}", "--model", "default", "--out", "{bad}"], "evaluate", "--out"),
        (["demo", "--corpus", "{beir}", "--out", "{bad}"], "demo", "output folder"),
    ],
)
def test_an_unwritable_output_is_refused_before_any_work(
    tmp_path, blocked, small_beir_dir, txt_path, no_work, capsys, argv, command, option
):
    values = {"bad": str(blocked), "beir": str(small_beir_dir), "corpus": str(txt_path)}
    values["good"] = str(tmp_path / "model")
    argv = [a.format(**values) for a in argv]
    assert main(argv) == 2
    _one_line_error(capsys, command, option, str(tmp_path / "a_file"))


@pytest.fixture
def txt_path(tmp_path, small_texts):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(small_texts) + "\n", encoding="utf-8")
    return path


def test_an_oserror_at_save_time_is_one_line_naming_the_path(tmp_path, small_beir_dir, monkeypatch, capsys):
    import heal_rag._io

    target = tmp_path / "metrics.json"

    def read_only(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(heal_rag._io, "atomic_write_bytes", read_only)
    assert main(["-q", "evaluate", "retrieval", str(small_beir_dir), "--bm25", "--json", str(target)]) == 2
    _one_line_error(capsys, "evaluate", str(target), "Read-only file system")


def test_an_oserror_naming_no_path_keeps_its_traceback(monkeypatch, tmp_path, txt_path):
    import heal_rag.cli._hierarchy as hierarchy_cli

    def internal_bug(*args, **kwargs):
        raise OSError("a bug, not the user's file system")

    monkeypatch.setattr(hierarchy_cli, "build_hierarchy", internal_bug)
    with pytest.raises(OSError, match="a bug"):
        main(["-q", "hierarchy", "build", str(txt_path), "--out", str(tmp_path / "h"), *SMALL])


def test_evaluate_rag_refuses_a_non_empty_folder_that_holds_no_run(tmp_path, small_beir_dir, no_work, capsys):
    out = tmp_path / "reports"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert main(["evaluate", "rag", str(small_beir_dir), "--model", "default", "--out", str(out)]) == 2
    _one_line_error(capsys, "evaluate", "holds no earlier 'evaluate rag' run", "thesis.tex")
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


@pytest.mark.parametrize(
    "argv",
    [
        ["hierarchy", "build", "{corpus}", "--out", "{out}", "--seed", "-1"],
        ["finetune", "{beir}", "--out", "{out}", "--seed", "-1"],
        ["demo", "--corpus", "{beir}", "--out", "{out}", "--seed", "-1"],
        ["evaluate", "rag", "{beir}", "--model", "default", "--out", "{out}", "--seed", "-1"],
        ["hierarchy", "build", "{corpus}", "--out", "{out}", "--seed", str(2**32)],
    ],
)
def test_a_bad_seed_is_refused_by_the_parser_before_any_work(
    tmp_path, small_beir_dir, txt_path, no_work, capsys, argv
):
    values = {"out": str(tmp_path / "out"), "beir": str(small_beir_dir), "corpus": str(txt_path)}
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(**values) for a in argv])
    assert exit_info.value.code == 2
    assert "expected a seed between 0 and 4294967295" in capsys.readouterr().err


def test_finetune_help_says_heal_needs_a_batch_of_at_least_8(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    assert "HEAL's topic-balanced batches need at least 8" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    "argv, command",
    [
        (["finetune", "{beir}", "--out", "{out}", "--base-model", "{file}"], "finetune"),
        (["evaluate", "rag", "{beir}", "--model", "{file}", "--out", "{out}"], "evaluate"),
        (["evaluate", "retrieval", "{beir}", "--model", "{file}"], "evaluate"),
    ],
)
def test_a_file_given_as_a_model_is_one_line(tmp_path, small_beir_dir, no_work, capsys, argv, command):
    model_file = tmp_path / "model.safetensors"
    model_file.write_bytes(b"\x00" * 16)
    values = {"out": str(tmp_path / "out"), "beir": str(small_beir_dir), "file": str(model_file)}
    assert main([a.format(**values) for a in argv]) == 2
    _one_line_error(capsys, command, str(model_file), "is a file")


@pytest.mark.parametrize("option", ["--base-model", "--model"])
def test_a_hub_name_while_offline_is_one_line(tmp_path, small_beir_dir, no_work, capsys, option, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if option == "--base-model":
        argv = ["finetune", str(small_beir_dir), "--out", str(tmp_path / "o"), option, "someone/not-cached"]
    else:
        argv = [
            "evaluate",
            "rag",
            str(small_beir_dir),
            option,
            "someone/not-cached",
            "--out",
            str(tmp_path / "o"),
        ]
    assert main(argv) == 2
    _one_line_error(capsys, argv[0], "someone/not-cached", "offline")


def test_hierarchy_show_of_a_deeply_nested_json_is_one_line(tmp_path, capsys):
    folder = tmp_path / "h"
    folder.mkdir()
    (folder / "hierarchy.json").write_text('{"a": ' + "[" * 200_000 + "]" * 200_000 + "}")
    assert main(["hierarchy", "show", str(folder)]) == 2
    _one_line_error(capsys, "hierarchy", "hierarchy.json", "nested too deeply")
