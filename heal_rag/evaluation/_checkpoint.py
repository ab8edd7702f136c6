"""The RAG harness' checkpoint: one append-only JSONL of per-(configuration, question) records per run.

A run is identified by the hash of its configuration (:func:`config_hash`); re-running the same configuration
resumes from the records already written, and a line torn by a killed run is dropped and its question run
again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from heal_rag._io import loads_json
from heal_rag.errors import InvalidTypeError

logger = logging.getLogger("heal_rag.evaluation.rag")

#: Version of the record layout; part of every configuration hash.
CHECKPOINT_FORMAT = 1


def config_hash(config: Mapping[str, Any]) -> str:
    """Return the first 16 hex digits of the SHA-256 of a run's configuration (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


# what every checkpoint record holds (RAGRunner.run writes them all), with its type
_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "configuration": str,
    "question_id": str,
    "retrieved_ids": list,
    "generation_ids": list,
    "scores": dict,
    "errors": dict,
}


def _is_record(record: Any) -> bool:
    """Whether a parsed checkpoint line is a complete record (a line lacking keys is treated as torn)."""
    return (
        isinstance(record, dict)
        and all(isinstance(record.get(key), kind) for key, kind in _RECORD_FIELDS.items())
        and all(isinstance(d, str) for d in record["retrieved_ids"])
        and all(v is None or isinstance(v, (int, float)) for v in record["scores"].values())
    )


class Checkpoint:
    """Append-only JSONL of per-(question, configuration) records, one file per configuration hash."""

    def __init__(self, out_dir: Path | None, config_hash: str, resume: bool) -> None:
        self.path = None if out_dir is None else out_dir / "checkpoints" / f"rag-{config_hash}.jsonl"
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        others = [p.name for p in self.path.parent.glob("rag-*.jsonl") if p != self.path]
        if others:
            logger.info(
                "ignoring %d checkpoint(s) of other configurations in %s", len(others), self.path.parent
            )
        if not resume and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            # the run was killed mid-line: drop the torn record so the next append starts on a fresh line
            raw = raw[: raw.rfind(b"\n") + 1]
            with open(self.path, "r+b") as handle:
                handle.truncate(len(raw))
        skipped = 0
        for line in raw.decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = loads_json(line)
            except json.JSONDecodeError:
                record = None
            if not _is_record(record):
                skipped += 1  # torn, edited or foreign: that question is simply run again
                continue
            self.records[(record["configuration"], record["question_id"])] = record
        if skipped:
            logger.warning(
                "skipped %d unreadable or incomplete line(s) in %s; those questions are run again",
                skipped,
                self.path,
            )
        if self.records:
            logger.info("resuming: %d record(s) found in %s", len(self.records), self.path)

    def get(self, configuration: str, question_id: str) -> dict[str, Any] | None:
        return self.records.get((configuration, question_id))

    def append(self, record: dict[str, Any]) -> None:
        self.records[(record["configuration"], record["question_id"])] = record
        if self.path is None:
            return
        line = json.dumps(record, ensure_ascii=False, default=_json_default) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise InvalidTypeError(f"not JSON serialisable: {type(value).__name__}")
