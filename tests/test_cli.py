from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from heal_rag.cli import build_parser, main
from heal_rag.hierarchy import Hierarchy

# small settings so that a 12-document corpus can split; the plumbing, not the clustering, is tested here
SMALL = ["--depth", "2", "--k-min", "2", "--k-max", "4", "--min-topic-size", "2", "--seed", "0"]


@pytest.fixture
def txt_corpus(tmp_path, small_texts) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(small_texts) + "\n", encoding="utf-8")
    return path


def _subcommand_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths.extend(_subcommand_paths(sub, (*prefix, name)))
    return paths


def test_console_script_help_in_a_subprocess():
    script = shutil.which("heal-rag")
    # the installed console script when present (CI installs the package), else the same entry point
    command = (
        [script]
        if script
        else [sys.executable, "-c", "import sys; from heal_rag.cli import main; sys.exit(main())"]
    )
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in ("demo", "hierarchy", "finetune", "evaluate"):
        assert name in result.stdout


def test_every_command_has_help(capsys):
    paths = _subcommand_paths(build_parser())
    assert ("hierarchy", "build") in paths and ("hierarchy", "show") in paths and ("demo",) in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: heal-rag " + " ".join(path)), path


def test_hierarchy_build_and_show_txt(tmp_path, txt_corpus, capsys):
    out = tmp_path / "tree"
    assert main(["hierarchy", "build", str(txt_corpus), "--out", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    hierarchy = Hierarchy.load(out)
    assert hierarchy.n_documents == 12
    assert hierarchy.doc_ids == [str(i) for i in range(12)]
    assert hierarchy.format_tree(n_terms=6) in printed
    assert f"Saved the hierarchy of 12 documents to {out}" in printed

    assert main(["hierarchy", "show", str(out), "--terms", "2"]) == 0
    shown = capsys.readouterr().out
    assert shown.strip() == hierarchy.format_tree(n_terms=2).strip()
    assert all(line.count(",") <= 1 for line in shown.splitlines()[1:])  # at most 2 terms per topic


def test_hierarchy_build_fit_sample(tmp_path, txt_corpus, capsys):
    out = tmp_path / "sampled"
    build = ["hierarchy", "build", str(txt_corpus), "--out", str(out)]
    assert main(["-q", *build, "--fit-sample", "8", *SMALL]) == 0
    hierarchy = Hierarchy.load(out)
    assert hierarchy.n_documents == 12 and hierarchy.params["n_fit_documents"] == 8
    assert main([*build, "--fit-sample", "13", *SMALL]) == 2
    assert "asks for 13 documents, but the corpus has only 12" in capsys.readouterr().err


def test_hierarchy_build_is_deterministic_and_rebuilds_in_place(tmp_path, txt_corpus):
    out = tmp_path / "tree"
    assert main(["-q", "hierarchy", "build", str(txt_corpus), "--out", str(out), *SMALL]) == 0
    first = Hierarchy.load(out).fingerprint
    # the folder holds a hierarchy, so building again into it is allowed and gives the same tree
    assert main(["-q", "hierarchy", "build", str(txt_corpus), "--out", str(out), *SMALL]) == 0
    assert Hierarchy.load(out).fingerprint == first


def test_hierarchy_build_beir_folder_and_jsonl_use_document_ids(tmp_path, small_beir_dir, small_dataset):
    out = tmp_path / "beir_tree"
    assert main(["-q", "hierarchy", "build", str(small_beir_dir), "--out", str(out), *SMALL]) == 0
    assert Hierarchy.load(out).doc_ids == small_dataset.doc_ids
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"id": f"x{i}", "text": t}) + "\n" for i, t in enumerate(small_dataset.texts)),
        encoding="utf-8",
    )
    out2 = tmp_path / "jsonl_tree"
    assert main(["-q", "hierarchy", "build", str(jsonl), "--out", str(out2), *SMALL]) == 0
    assert Hierarchy.load(out2).doc_ids == [f"x{i}" for i in range(12)]


def test_hierarchy_build_refuses_a_foreign_non_empty_folder(tmp_path, txt_corpus, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(["hierarchy", "build", str(txt_corpus), "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "is not empty (notes.txt)" in err and "--overwrite" in err
    assert not (out / "hierarchy.json").exists()
    assert main(["-q", "hierarchy", "build", str(txt_corpus), "--out", str(out), "--overwrite", *SMALL]) == 0
    assert Hierarchy.load(out).n_documents == 12
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"  # --overwrite never deletes other files


@pytest.mark.parametrize(
    ("setup", "extra", "match"),
    [
        (lambda tmp: tmp / "missing.jsonl", [], "does not exist"),
        (
            lambda tmp: _write(tmp / "bad.jsonl", '{"_id": "a", "text": "x"}\n{oops\n'),
            [],
            r"bad.jsonl:2: malformed JSON",
        ),
        (lambda tmp: _write(tmp / "empty.txt", "\n\n"), [], "contains no documents"),
        (lambda tmp: _write(tmp / "c.csv", "a,b\n"), [], "Unsupported corpus format"),
        (
            lambda tmp: _write(tmp / "ok.txt", "a b\nc d\n"),
            ["--k-min", "5", "--k-max", "3"],
            r"--k-min \(5\) must not be larger",
        ),
    ],
)
def test_hierarchy_build_bad_input_exits_2_with_one_line(tmp_path, capsys, setup, extra, match):
    corpus = setup(tmp_path)
    code = main(["hierarchy", "build", str(corpus), "--out", str(tmp_path / "out"), *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("heal-rag hierarchy: error: ")
    assert "Traceback" not in err
    import re

    assert re.search(match, err), err


def test_hierarchy_option_validation_by_argparse(tmp_path, txt_corpus, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["hierarchy", "build", str(txt_corpus), "--out", str(tmp_path / "o"), "--depth", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["hierarchy", "build", str(txt_corpus)])  # --out is required


def test_hierarchy_show_missing_or_corrupt(tmp_path, txt_corpus, capsys):
    assert main(["hierarchy", "show", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    out = tmp_path / "tree"
    assert main(["-q", "hierarchy", "build", str(txt_corpus), "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    (out / "hierarchy.json").write_text("{not json", encoding="utf-8")
    assert main(["hierarchy", "show", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("heal-rag hierarchy: error: ") and "Traceback" not in err


def test_demo_runs_the_pipeline_and_prints_tree_summary_and_report_path(tmp_path, small_beir_dir, capsys):
    out = tmp_path / "demo"
    fast = ["--max-steps", "1", "--batch-size", "4", "--max-seq-length", "32", "--resamples", "100"]
    assert main(["-q", "demo", "--corpus", str(small_beir_dir), "--out", str(out), *fast, *SMALL]) == 0
    printed = capsys.readouterr().out
    hierarchy = Hierarchy.load(out / "hierarchy")
    assert hierarchy.n_documents == 12
    assert hierarchy.format_tree(n_terms=6) in printed
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    names = ["bm25", "base", "flat", "heal", "base+bm25", "flat+bm25", "heal+bm25"]
    assert list(report["configurations"]) == names
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert f"report: {out / 'report.html'}" in printed
    # the summary table: a header with every configuration, a numeric nDCG row, the one-line verdict
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["metric", *names])
    ndcg = next(line for line in lines[header:] if line.startswith("ndcg@10"))
    assert all(0.0 <= float(v.rstrip("*")) <= 1.0 for v in ndcg.split()[2:])
    assert any(line.startswith(("Best ndcg@10: ", "No winner on ndcg@10")) for line in lines[header:])
    assert any(line.strip().startswith("heal vs flat: ndcg@10 ") for line in lines[header:])
    assert "{'loss'" not in printed
    # no train split in this corpus: flat and HEAL trained on pseudo-queries, said in the report
    assert "pseudo-queries" in report["config"]["pipeline"]["training_queries"]
    assert any("pseudo-queries" in note for note in report["notes"])


def test_demo_refuses_a_foreign_output_folder_and_a_bad_llm(tmp_path, capsys):
    (tmp_path / "demo" / "hierarchy").mkdir(parents=True)
    (tmp_path / "demo" / "hierarchy" / "x.bin").write_bytes(b"1")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert "holds no earlier heal-rag pipeline run" in err and "Traceback" not in err
    assert (tmp_path / "demo" / "hierarchy" / "x.bin").read_bytes() == b"1"  # left alone
    assert main(["demo", "--out", str(tmp_path / "other"), "--llm", "gpt-4"]) == 2
    assert "must be none, local" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()  # failed before writing anything
    for command in (["demo", "--out", str(tmp_path / "third")], ["evaluate", "rag", str(tmp_path)]):
        with pytest.raises(SystemExit) as usage:
            main([*command, "--passage-tokens", "8"])
        assert usage.value.code == 2
        assert "expected an integer >= 16 or 'all', got 8" in capsys.readouterr().err


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
