"""``heal-rag export``: write a model folder's ONNX (and int8) files for fast CPU encoding.

The command mirrors :func:`heal_rag.backends.export_onnx`.
"""

from __future__ import annotations

import argparse

#: ``--backend`` values; OpenVINO is named so that asking for it gets the reason it is missing.
EXPORT_BACKENDS = ("onnx", "openvino")
#: ``finetune --export`` values: a backend, optionally with its quantization.
FINETUNE_EXPORTS = ("onnx", "onnx-int8")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` to the top-level parser."""
    parser = subparsers.add_parser(
        "export",
        help="export a model folder to ONNX (optionally int8) for 2.5-3x faster CPU encoding",
        description=(
            "Export the transformer of MODEL_DIR (a heal-rag finetune --out folder or any "
            "sentence-transformers folder) to ONNX under MODEL_DIR/onnx/, sentence-transformers' layout, and "
            "with --quantize int8 also an int8 copy. Encode with it: HEALEmbedding.from_pretrained(DIR, "
            "backend='onnx') or heal-rag evaluate retrieval ... --backend onnx (the int8 file when present)."
        ),
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a local sentence-transformers model folder")
    parser.add_argument("--backend", choices=EXPORT_BACKENDS, default="onnx", help="export format (onnx)")
    parser.add_argument(
        "--quantize", choices=("int8",), default=None, help="also write an int8 copy (dynamic quantization)"
    )
    parser.set_defaults(handler=run_export)


def export_model(model_dir: str, backend: str, quantize: str | None) -> int:
    """Export ``model_dir`` and print what was written (shared with ``finetune --export``)."""
    from heal_rag.backends import export_onnx
    from heal_rag.cli import CLIError

    if backend == "openvino":
        raise CLIError(
            "--backend openvino needs optimum-intel, which requires transformers<4.58 and cannot be "
            "installed next to the transformers 5 heal-rag uses. Use --backend onnx (ONNX Runtime int8 is "
            "the fast CPU path measured in evals/bench_onnx.py)."
        )
    export = export_onnx(model_dir, quantize=quantize)
    for kind, path in export.files.items():
        print(f"wrote {path} ({kind}; cosine to the torch embeddings {export.cosine[kind]:.4f})")
    print(f"Encode with it: HEALEmbedding.from_pretrained({model_dir!r}, backend='onnx')")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Run ``heal-rag export``."""
    return export_model(args.model_dir, args.backend, args.quantize)
