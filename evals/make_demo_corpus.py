"""Build the bundled demo corpus heal_rag/data/scifact_demo/ from the full SciFact BEIR folder.

Selection (deterministic for a fixed --seed):
  1. every abstract cited by a test claim (qrels/test.tsv),
  2. every abstract cited by a train claim (qrels/train.tsv), as long as the total stays within --n-docs,
  3. random distractor abstracts (not cited by any claim) up to --n-docs;
  then the claims whose cited abstracts are all included, with their qrels. Documents keep SciFact's corpus
  order. corpus.jsonl is gzipped when it is larger than 1 MB.

Usage:
    python evals/make_demo_corpus.py [--source ../shared/data/scifact] [--n-docs 800] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "scifact"
DEFAULT_OUT = REPO / "heal_rag" / "data" / "scifact_demo"
GZIP_ABOVE_BYTES = 1 << 20


README = """# scifact_demo: the bundled demo corpus of heal-rag

A subset of SciFact (Wadden et al., 2020) in the BEIR layout (Thakur et al., 2021): biomedical abstracts
as documents, expert-written scientific claims as queries, and the abstracts each claim cites as relevant
documents.
Licences and attribution: see LICENSE.md.

## Files
- `{corpus_name}`: {documents} abstracts, one JSON object per line: `_id` (S2ORC id), `title`, `text`.
- `queries.jsonl`: {train_queries} train + {test_queries} test claims (`_id`, `text`).
- `qrels/train.tsv`: {train_judgments} judgments; `qrels/test.tsv`: {test_judgments} judgments
  (header `query-id corpus-id score`, all scores 1). The test split is BEIR's SciFact test split.

## How it was built
`python evals/make_demo_corpus.py --n-docs 800 --seed {seed}` from the full BEIR SciFact folder
(5,183 abstracts):
1. all {cited_by_test} abstracts cited by the 300 test claims;
2. {train_cited_extra} of the {train_cited_extra_total} further abstracts cited by the train claims;
3. {distractors} abstracts cited by no claim, drawn at random with seed {seed}, as distractors;
4. every claim whose cited abstracts are all included, with its judgments (here: all {train_queries} train
   and all {test_queries} test claims).
Documents keep SciFact's corpus order; texts are unchanged.

Load it with `heal_rag.datasets.load_demo_dataset(split="test")` (or `"train"`, or `None` for all claims).
"""

LICENSE = """# Licence and attribution of the bundled SciFact subset

This folder redistributes part of the SciFact dataset, converted to the BEIR layout. heal-rag's own code is
under the Apache-2.0 licence; this data keeps its original licences:

- **Claims and evidence annotations** (`queries.jsonl`, `qrels/`): Creative Commons Attribution 4.0
  International (CC BY 4.0), https://creativecommons.org/licenses/by/4.0/
- **Abstracts** (`corpus.jsonl*`, from the S2ORC corpus): Open Data Commons Attribution License v1.0
  (ODC-By 1.0), https://opendatacommons.org/licenses/by/1-0/

Source: SciFact by the Allen Institute for AI (https://github.com/allenai/scifact), as distributed in the
BEIR benchmark. Changes: a subset of the abstracts and claims (see README.md for the selection); no text was
edited.

Please cite:

- David Wadden, Shanchuan Lin, Kyle Lo, Lucy Lu Wang, Madeleine van Zuylen, Arman Cohan and Hannaneh
  Hajishirzi. 2020. *Fact or Fiction: Verifying Scientific Claims.* In Proceedings of EMNLP 2020, pages
  7534-7550. https://aclanthology.org/2020.emnlp-main.609/
- Nandan Thakur, Nils Reimers, Andreas Rücklé, Abhishek Srivastava and Iryna Gurevych. 2021. *BEIR: A
  Heterogeneous Benchmark for Zero-shot Evaluation of Information Retrieval Models.* In NeurIPS 2021 Datasets
  and Benchmarks Track. https://arxiv.org/abs/2104.08663
- Kyle Lo, Lucy Lu Wang, Mark Neumann, Rodney Kinney and Daniel Weld. 2020. *S2ORC: The Semantic Scholar Open
  Research Corpus.* In Proceedings of ACL 2020. https://aclanthology.org/2020.acl-main.447/
"""


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_qrels(path: Path) -> list[tuple[str, str, int]]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    return [(q, d, int(s)) for q, d, s in rows[1:]]


def write_qrels(path: Path, rows: list[tuple[str, str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for q, d, s in rows:
            handle.write(f"{q}\t{d}\t{s}\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="full SciFact BEIR folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (replaced)")
    parser.add_argument("--n-docs", type=int, default=800, help="number of abstracts to keep")
    parser.add_argument("--seed", type=int, default=0, help="seed of the distractor draw")
    args = parser.parse_args()

    corpus = read_jsonl(args.source / "corpus.jsonl")
    queries = read_jsonl(args.source / "queries.jsonl")
    qrels = {split: read_qrels(args.source / "qrels" / f"{split}.tsv") for split in ("train", "test")}

    rng = random.Random(args.seed)
    chosen: set[str] = {d for _, d, _ in qrels["test"]}
    train_cited = sorted({d for _, d, _ in qrels["train"]} - chosen)
    n_train_cited = len(train_cited)
    room = args.n_docs - len(chosen)
    if room < len(train_cited):
        train_cited = sorted(rng.sample(train_cited, max(room, 0)))
    chosen |= set(train_cited)
    cited = {d for rows in qrels.values() for _, d, _ in rows}
    distractors = sorted(doc["_id"] for doc in corpus if doc["_id"] not in cited)
    n_distractors = max(args.n_docs - len(chosen), 0)
    chosen |= set(rng.sample(distractors, n_distractors))

    kept_qrels: dict[str, list[tuple[str, str, int]]] = {}
    for split, rows in qrels.items():
        by_query: dict[str, list[tuple[str, str, int]]] = {}
        for row in rows:
            by_query.setdefault(row[0], []).append(row)
        kept_qrels[split] = [
            row for group in by_query.values() if all(d in chosen for _, d, _ in group) for row in group
        ]
    kept_queries = {q for rows in kept_qrels.values() for q, _, _ in rows}

    if args.out.exists():
        shutil.rmtree(args.out)
    (args.out / "qrels").mkdir(parents=True)
    corpus_lines = [
        json.dumps({"_id": doc["_id"], "title": doc["title"], "text": doc["text"]}, ensure_ascii=False) + "\n"
        for doc in corpus
        if doc["_id"] in chosen
    ]
    data = "".join(corpus_lines).encode("utf-8")
    if len(data) > GZIP_ABOVE_BYTES:
        # mtime=0 keeps the archive byte-identical between runs
        with (
            open(args.out / "corpus.jsonl.gz", "wb") as raw,
            gzip.GzipFile(
                filename="corpus.jsonl", mode="wb", fileobj=raw, mtime=0, compresslevel=9
            ) as handle,
        ):
            handle.write(data)
    else:
        (args.out / "corpus.jsonl").write_bytes(data)
    with open(args.out / "queries.jsonl", "w", encoding="utf-8") as handle:
        for query in queries:
            if query["_id"] in kept_queries:
                handle.write(
                    json.dumps({"_id": query["_id"], "text": query["text"]}, ensure_ascii=False) + "\n"
                )
    for split, rows in kept_qrels.items():
        write_qrels(args.out / "qrels" / f"{split}.tsv", rows)

    stats = {
        "seed": args.seed,
        "documents": len(corpus_lines),
        "cited_by_test": len({d for _, d, _ in qrels["test"]}),
        "train_cited_extra": len(train_cited),
        "train_cited_extra_total": n_train_cited,
        "distractors": n_distractors,
        "corpus_bytes": len(data),
        **{f"{s}_queries": len({q for q, _, _ in rows}) for s, rows in kept_qrels.items()},
        **{f"{s}_judgments": len(rows) for s, rows in kept_qrels.items()},
        **{f"{s}_queries_in_source": len({q for q, _, _ in rows}) for s, rows in qrels.items()},
    }
    corpus_name = "corpus.jsonl.gz" if len(data) > GZIP_ABOVE_BYTES else "corpus.jsonl"
    (args.out / "README.md").write_text(README.format(corpus_name=corpus_name, **stats), encoding="utf-8")
    (args.out / "LICENSE.md").write_text(LICENSE, encoding="utf-8")
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
