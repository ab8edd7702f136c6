"""One error convention: scikit-learn's classes, heal-rag's user errors marked, real bugs keep tracebacks."""

from __future__ import annotations

import pytest

import heal_rag
from heal_rag.errors import (
    HealRagUserError,
    InputNotFoundError,
    InvalidTypeError,
    InvalidValueError,
    MissingDependencyError,
    NotFittedError,
    OutputExistsError,
)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (InvalidValueError, ValueError),
        (InvalidTypeError, TypeError),
        (InputNotFoundError, FileNotFoundError),
        (OutputExistsError, FileExistsError),
        (MissingDependencyError, ImportError),
    ],
)
def test_user_errors_are_the_builtin_errors_too(cls, builtin):
    assert issubclass(cls, builtin) and issubclass(cls, HealRagUserError)


def test_not_fitted_is_sklearn_shaped_and_not_a_user_error():
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    assert not issubclass(NotFittedError, HealRagUserError)
    with pytest.raises(NotFittedError, match="not fitted"):
        heal_rag.HNMFk().predict(["x"])
    assert heal_rag.NotFittedError is NotFittedError and heal_rag.HealRagUserError is HealRagUserError


def test_input_checks_raise_marked_errors():
    with pytest.raises(InvalidValueError, match="must be an int >= 1"):
        heal_rag.HNMFk(depth=0).fit(["a b", "c d"])
    from heal_rag._optional import require

    with pytest.raises(MissingDependencyError, match=r"heal-rag\[nothing\]"):
        require("not_a_module_heal_rag_knows", extra="nothing")


def test_cli_prints_user_errors_in_one_line(tmp_path, capsys):
    from heal_rag.cli import main

    assert main(["hierarchy", "show", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("heal-rag hierarchy: error:") and "Traceback" not in err


def test_cli_lets_an_internal_value_error_show_its_traceback(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise ValueError("operands could not be broadcast together")  # what a bug looks like

    monkeypatch.setattr("heal_rag.hierarchy.Hierarchy.load", broken)
    saved = tmp_path / "h"
    saved.mkdir()
    (saved / "hierarchy.json").write_text("{}", encoding="utf-8")
    from heal_rag.cli import main

    with pytest.raises(ValueError, match="broadcast"):
        main(["hierarchy", "show", str(saved)])
