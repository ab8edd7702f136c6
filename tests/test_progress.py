"""One rule for progress bars: explicit choice, else the heal_rag logger level; TQDM_DISABLE always wins."""

from __future__ import annotations

import logging

import pytest

from heal_rag._progress import show_progress


@pytest.fixture
def package_logger():
    logger = logging.getLogger("heal_rag")
    level = logger.level
    yield logger
    logger.setLevel(level)


def test_none_follows_the_package_logger(package_logger, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    package_logger.setLevel(logging.INFO)
    assert show_progress(None) is True
    package_logger.setLevel(logging.DEBUG)
    assert show_progress() is True
    package_logger.setLevel(logging.WARNING)
    assert show_progress(None) is False


def test_an_explicit_choice_wins_over_the_logger(package_logger, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    package_logger.setLevel(logging.WARNING)
    assert show_progress(True) is True
    package_logger.setLevel(logging.INFO)
    assert show_progress(False) is False


@pytest.mark.parametrize("value", ["1", "true", "True", "yes"])
def test_tqdm_disable_always_hides(package_logger, monkeypatch, value):
    monkeypatch.setenv("TQDM_DISABLE", value)
    package_logger.setLevel(logging.INFO)
    assert show_progress(True) is False and show_progress(None) is False


def test_cli_quiet_no_longer_writes_the_environment(monkeypatch, tmp_path):
    from heal_rag.cli import main

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    (tmp_path / "c.txt").write_text("alpha beta\ngamma delta\n", encoding="utf-8")
    main(["-q", "hierarchy", "show", str(tmp_path / "missing")])  # fails fast; only the switches matter
    import os

    assert "TQDM_DISABLE" not in os.environ
    assert show_progress() is False  # -q raised the heal_rag logger to WARNING


def test_hnmfk_progress_is_a_deprecated_alias():
    from heal_rag.hierarchy import HNMFk

    assert HNMFk(show_progress=False)._resolve_progress() is False
    with pytest.warns(DeprecationWarning, match="show_progress"):
        assert HNMFk(progress=False)._resolve_progress() is False
