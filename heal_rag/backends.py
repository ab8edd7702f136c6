"""ONNX Runtime inference for sentence-transformers models: export, int8 quantization and loading.

Encoding a corpus is where CPU users wait. ONNX Runtime with int8 weights encodes about 2.5-3x faster than
torch fp32 on two CPU cores (``evals/bench_onnx.py``), at a cosine of about 0.994 to the fp32 embeddings.

sentence-transformers' own ONNX backend (``SentenceTransformer(..., backend="onnx")``,
``export_dynamic_quantized_onnx_model``) goes through ``optimum-onnx``, which requires ``transformers<4.58``
and cannot be installed next to the transformers 5 that heal-rag pins. So the same result is built from
the two libraries underneath it: torch's own ONNX exporter (``torch.onnx.export``) writes the transformer,
and ONNX Runtime's dynamic quantizer (``onnxruntime.quantization.quantize_dynamic``) makes the int8 copy.
The files land where sentence-transformers looks for them (``onnx/model.onnx`` beside the torch weights),
with the inputs and output optimum's ``ORTModelForFeatureExtraction`` expects, so a user who can install
optimum loads the same folder with ``SentenceTransformer(DIR, backend="onnx")``.

Loading keeps sentence-transformers in charge of everything but the transformer's forward pass
(tokenisation, prompts, truncation, pooling, normalisation): :func:`load_onnx_sentence_transformer` swaps
the torch transformer of a loaded model for an ONNX Runtime session, so ``model.encode(...)`` behaves as
before.

Example:
    >>> from heal_rag.backends import export_onnx, load_onnx_sentence_transformer
    >>> export = export_onnx("runs/heal-model")  # doctest: +SKIP
    >>> export.files  # doctest: +SKIP
    {'fp32': PosixPath('runs/heal-model/onnx/model.onnx'), 'int8': PosixPath('runs/heal-model/onnx/...')}
    >>> model = load_onnx_sentence_transformer("runs/heal-model")  # int8 when present  # doctest: +SKIP

"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heal_rag._io import atomic_write_json, fingerprint_files, make_temp_dir
from heal_rag._optional import require
from heal_rag.errors import InputNotFoundError, InvalidValueError

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "ONNX_FOLDER",
    "ONNX_INT8_FILE",
    "ONNX_MODEL_FILE",
    "QUANTIZATIONS",
    "TORCH_WEIGHT_SUFFIXES",
    "OnnxExport",
    "check_backend",
    "check_onnx_device",
    "export_onnx",
    "load_onnx_sentence_transformer",
    "onnx_file",
    "onnx_fingerprint",
]

#: Encoders a model can run on.
BACKENDS = ("torch", "onnx")
#: Quantizations ``export_onnx`` can add to the fp32 export.
QUANTIZATIONS = ("int8",)
#: sentence-transformers' folder for ONNX files, and its default file name.
ONNX_FOLDER = "onnx"
ONNX_MODEL_FILE = "model.onnx"
#: The int8 copy: dynamic (activations quantized at run time), per-channel int8 weights of every MatMul.
ONNX_INT8_FILE = "model_qint8.onnx"
#: Weight files of a torch model folder (the ONNX backend does not read them).
TORCH_WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth"})
#: Written next to the exported files: what they were made from, and how close they are to torch.
EXPORT_INFO_FILE = "heal_export.json"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Sentences the export is checked on: cosines of ONNX vs torch embeddings are recorded in EXPORT_INFO_FILE.
_PROBES = (
    "Aspirin reduces the risk of myocardial infarction in adults with diabetes.",
    "Perovskite solar cells degrade under humidity unless encapsulated.",
    "A buffer overflow in the parser allows remote code execution.",
    "Every bounded monotone sequence of real numbers converges.",
)


def check_backend(backend: Any) -> str:
    """Validate an encoder backend name (``"torch"`` or ``"onnx"``)."""
    if backend not in BACKENDS:
        raise InvalidValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}.")
    return str(backend)


def check_onnx_device(device: str | None) -> None:
    """Refuse a non-CPU device for the ONNX backend (it runs on the CPU) rather than silently ignore it."""
    if device not in (None, "cpu"):
        raise InvalidValueError(
            f"backend='onnx' runs on the CPU (ONNX Runtime's CPU provider), but device={device!r} was given. "
            "Use device='cpu' (or None) with the ONNX backend, or backend='torch' on the GPU."
        )


def _model_folder(model_dir: str | os.PathLike[str]) -> Path:
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise InputNotFoundError(
            f"{path} is not a folder. Export and ONNX loading need a local sentence-transformers model "
            "folder (one written by `heal-rag finetune --out` or SentenceTransformer.save())."
        )
    if not (path / "modules.json").is_file():
        raise InvalidValueError(
            f"{path} is not a sentence-transformers model folder (it has no modules.json). Give a folder "
            "written by `heal-rag finetune --out` or SentenceTransformer.save()."
        )
    return path


def onnx_file(model_dir: str | os.PathLike[str], file_name: str | None = None) -> Path:
    """Return the ONNX file a model folder encodes with: ``file_name`` under ``onnx/``, else int8 if present.

    Raises:
        FileNotFoundError: the folder has no ONNX export (the message says how to make one).

    """
    folder = _model_folder(model_dir) / ONNX_FOLDER
    names = [file_name] if file_name else [ONNX_INT8_FILE, ONNX_MODEL_FILE]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    wanted = " or ".join(f"{ONNX_FOLDER}/{name}" for name in names)
    raise InputNotFoundError(
        f"{Path(model_dir)} has no {wanted}. Export the model first: "
        f"heal-rag export {model_dir} --backend onnx --quantize int8"
    )


def onnx_fingerprint(path: str | os.PathLike[str]) -> str:
    """SHA-256 of an ONNX file, marked as such: never equal to the torch fingerprint of the same weights.

    LlamaIndex's ``IngestionCache`` keys embeddings on it (via ``HEALEmbedding.weights_fingerprint``), so
    int8 embeddings and fp32 torch embeddings of one model never mix in a cache.
    """
    path = Path(path)
    return hashlib.sha256(f"onnx|{path.name}|{fingerprint_files([path])}".encode()).hexdigest()


@dataclass
class OnnxExport:
    """The files :func:`export_onnx` wrote and how faithful they are.

    Attributes:
        files: ``{"fp32": path, "int8": path}`` (``int8`` only when quantized).
        cosine: mean cosine similarity of each file's embeddings to torch's on a few probe sentences.

    """

    files: dict[str, Path]
    cosine: dict[str, float] = field(default_factory=dict)


def export_onnx(
    model_dir: str | os.PathLike[str],
    *,
    quantize: str | None = "int8",
    opset: int = 18,
) -> OnnxExport:
    """Export a sentence-transformers folder's transformer to ONNX (and int8) under ``MODEL_DIR/onnx/``.

    The files are built in a temporary folder and moved in at the end, so an interrupted export never leaves
    a half-written model behind; an earlier export is replaced. The export is checked before it is moved in:
    an fp32 file whose embeddings are not (numerically) torch's is an error, not a silent file.

    Args:
        model_dir: a local sentence-transformers model folder (a HEAL model directory is one).
        quantize: ``"int8"`` to add the quantized copy (the one ``backend="onnx"`` prefers), or ``None``.
        opset: ONNX opset of the export.

    Returns:
        :class:`OnnxExport` with the written paths and their cosines to the torch embeddings.

    Raises:
        MissingDependencyError: onnx/onnxruntime are not installed (``pip install "heal-rag[onnx]"``).

    """
    folder = _model_folder(model_dir)
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise InvalidValueError(f"quantize must be None or one of {QUANTIZATIONS}; got {quantize!r}.")
    require("onnx", extra="onnx", purpose="exporting to ONNX")
    require("onnxscript", extra="onnx", purpose="exporting to ONNX (torch's exporter)")
    quantization = require("onnxruntime.quantization", extra="onnx", purpose="int8 quantization")
    from heal_rag._models import load_sentence_transformer

    model = load_sentence_transformer(str(folder), device="cpu")
    logger.info("Exporting %s to ONNX%s", folder, " and int8" if quantize else "")
    target = folder / ONNX_FOLDER
    work = make_temp_dir(target, tag="export")
    try:
        files = {"fp32": work / ONNX_MODEL_FILE}
        _export_transformer(model, files["fp32"], opset)
        if quantize == "int8":
            files["int8"] = work / ONNX_INT8_FILE
            # Per-channel weights: per-tensor int8 weights cost MiniLM a cosine of 0.94 to fp32 (0.994 here).
            with _quiet_loggers("root"):  # "consider pre-processing": for static quantization only
                quantization.quantize_dynamic(
                    str(files["fp32"]),
                    str(files["int8"]),
                    weight_type=quantization.QuantType.QInt8,
                    per_channel=True,
                    op_types_to_quantize=["MatMul"],
                )
        cosine = {kind: _probe_cosine(model, str(folder), path) for kind, path in files.items()}
        if cosine["fp32"] < 0.999:
            raise InvalidValueError(
                f"The ONNX export of {folder} does not reproduce the torch model (probe cosine "
                f"{cosine['fp32']:.4f} < 0.999); nothing was written. Please report this with the model."
            )
        info = {
            "opset": opset,
            "quantize": quantize,
            "cosine_to_torch": cosine,
            "files": {path.name: onnx_fingerprint(path) for path in files.values()},
            "torch_weights": _torch_weights_fingerprint(folder),
        }
        target.mkdir(exist_ok=True)
        for path in files.values():
            os.replace(path, target / path.name)
        atomic_write_json(target / EXPORT_INFO_FILE, info)  # last: it vouches for the files moved in
        if quantize is None and (target / ONNX_INT8_FILE).exists():
            # an int8 file of older weights would be preferred on load
            (target / ONNX_INT8_FILE).unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    written = {kind: target / path.name for kind, path in files.items()}
    logger.info("Exported %s to %s (cosine to torch: %s)", folder, target, cosine)
    return OnnxExport(files=written, cosine=cosine)


def _torch_weights_fingerprint(folder: Path) -> str:
    """Fingerprint of the torch weight files an export was made from (to tell a stale export)."""
    return fingerprint_files(
        [p for p in folder.iterdir() if p.is_file() and p.suffix in TORCH_WEIGHT_SUFFIXES]
    )


def _check_export_is_current(folder: Path, chosen: Path, fingerprint: str) -> None:
    """Refuse an ONNX file that is not the one exported from the folder's current torch weights."""
    info_path = chosen.parent / EXPORT_INFO_FILE
    if chosen.parent != folder / ONNX_FOLDER or not info_path.is_file():
        return  # a file exported elsewhere (not by heal-rag): nothing to check it against
    from heal_rag._io import loads_json

    info = loads_json(info_path.read_text(encoding="utf-8"))
    recorded = (info.get("files") or {}).get(chosen.name)
    if recorded != fingerprint or info.get("torch_weights") != _torch_weights_fingerprint(folder):
        raise InvalidValueError(
            f"{chosen} is not the export of the weights now in {folder} (the model was trained or saved "
            f"again after `heal-rag export`, or the export was interrupted). Export again: "
            f"heal-rag export {folder} --backend onnx --quantize int8"
        )


def _export_transformer(model: SentenceTransformer, path: Path, opset: int) -> None:
    """Write the model's transformer (token ids -> ``last_hidden_state``) to one ONNX file."""
    import torch

    transformer = model[0]
    network = transformer.model.eval()
    sample = transformer.tokenizer(
        ["an example sentence to trace the graph with", "a second one"],
        padding=True,
        return_tensors="pt",
    )
    names = [name for name in _INPUTS if name in sample]

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:  # models without segment ids (RoBERTa, ...) export without it
                features["token_type_ids"] = token_type_ids
            return self.network(**features).last_hidden_state

    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with warnings.catch_warnings(), torch.no_grad(), _quiet_loggers("torch.onnx", "onnxscript", "root"):
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(
            LastHiddenState(),
            (),
            kwargs={name: sample[name] for name in names},
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_shapes={name: {0: batch, 1: length} for name in names},
            opset_version=opset,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    program.save(str(path), external_data=False)


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Silence the exporter's and quantizer's notes on their own internals (kept at -vv: DEBUG)."""
    loggers = [logging.getLogger(None if name == "root" else name) for name in names]
    levels = [item.level for item in loggers]
    if not logging.getLogger("heal_rag").isEnabledFor(logging.DEBUG):
        for item in loggers:
            item.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for item, level in zip(loggers, levels, strict=True):
            item.setLevel(level)


def _probe_cosine(model: SentenceTransformer, folder: str, path: Path) -> float:
    import numpy as np

    reference = model.encode(list(_PROBES), normalize_embeddings=True)
    exported = load_onnx_sentence_transformer(folder, path=path).encode(
        list(_PROBES), normalize_embeddings=True
    )
    return float(np.mean(np.sum(reference * exported, axis=1)))


@cache
def _onnx_transformer_class() -> type:
    """Build the torch module that stands in for the transformer (on first use: torch loads lazily)."""
    import numpy as np
    import torch

    class OnnxTransformer(torch.nn.Module):
        """Stands in for a Hugging Face model inside sentence-transformers' ``Transformer`` module.

        ``Transformer.forward`` calls ``model.forward(**features)`` and reads ``last_hidden_state``; this
        module runs the same computation in an ONNX Runtime session.
        """

        def __init__(self, session: Any, config: Any) -> None:
            super().__init__()
            self.session = session
            self.config = config
            self.inputs = [i.name for i in session.get_inputs()]

        def forward(self, **features: Any) -> dict[str, Any]:
            ids = features["input_ids"]
            feeds = {}
            for name in self.inputs:
                value = features.get(name)
                feeds[name] = np.zeros(tuple(ids.shape), np.int64) if value is None else value.cpu().numpy()
            (hidden,) = self.session.run(["last_hidden_state"], feeds)
            return {"last_hidden_state": torch.from_numpy(hidden)}

    return OnnxTransformer


def load_onnx_sentence_transformer(
    model_dir: str | os.PathLike[str],
    *,
    file_name: str | None = None,
    path: str | os.PathLike[str] | None = None,
    threads: int | None = None,
) -> SentenceTransformer:
    """Load a ``SentenceTransformer`` whose transformer runs in ONNX Runtime (CPU).

    Args:
        model_dir: the model folder (tokenizer, pooling and normalisation come from it as usual).
        file_name: the file under ``onnx/``; default the int8 file when present, else ``model.onnx``.
        path: an ONNX file elsewhere (overrides ``file_name``).
        threads: ONNX Runtime intra-op threads (default: torch's thread count, i.e. the usable cores).

    Attributes of the result: ``heal_onnx_path`` (the file) and ``heal_onnx_fingerprint``.

    """
    import torch

    from heal_rag._models import load_sentence_transformer

    ort = require("onnxruntime", extra="onnx", purpose="the ONNX backend")
    folder = _model_folder(model_dir)
    chosen = Path(path) if path is not None else onnx_file(folder, file_name)
    if not chosen.is_file():
        raise InputNotFoundError(f"ONNX file {chosen} does not exist.")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(chosen), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
        raise InvalidValueError(
            f"{chosen} cannot be loaded by ONNX Runtime ({str(error).splitlines()[0]}). Export it again: "
            f"heal-rag export {folder} --backend onnx"
        ) from None
    fingerprint = onnx_fingerprint(chosen)
    _check_export_is_current(folder, chosen, fingerprint)
    model = load_sentence_transformer(str(folder), device="cpu")
    transformer = model[0]
    config = transformer.model.config
    transformer.model = _onnx_transformer_class()(session, config)  # the torch weights are freed here
    model.heal_onnx_path = chosen
    model.heal_onnx_fingerprint = fingerprint
    return model
