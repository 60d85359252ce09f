"""The search engine behind the server: encoder + FAISS + corpus (+ optional cross-encoder).

Everything here works on *batches of jobs*: the server's micro-batcher hands over the queries
of many concurrent requests at once, and one encoder call + one FAISS call serve them all.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibadv.retrieval.corpus import Corpus, Document


@dataclass(frozen=True)
class Job:
    """One request: ``k_final`` hits per query out of ``k_candidates`` retrieved ones."""

    queries: list[str]
    k_final: int
    k_candidates: int
    rerank: bool = False


@dataclass
class Hit:
    row: int
    score: float
    document: Document = field(repr=False)


class Reranker:
    """A sentence-transformers ``CrossEncoder``; pairs are (query, ``(Title: T) text``)."""

    def __init__(
        self, name: str, device: str | None = None, batch_size: int = 64
    ) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        from calibadv.retrieval.encoder import resolve_model_path

        self.name = name
        self.path = resolve_model_path(name)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = CrossEncoder(self.path, device=self.device, max_length=512)
        if self.device.startswith("cuda"):
            self.model.model.half()
        self.batch_size = batch_size

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        out = self.model.predict(
            pairs, batch_size=self.batch_size, show_progress_bar=False
        )
        return np.asarray(out, dtype=np.float32).reshape(len(pairs), -1)[:, 0]


def passage_for_rerank(doc: Document) -> str:
    return f"(Title: {doc.title}) {doc.text}"


class SearchEngine:
    def __init__(
        self, corpus: Corpus, index: Any, encoder: Any, reranker: Reranker | None = None,
        threads: int | None = None,
    ):
        if index.ntotal != len(corpus):
            from calibadv.errors import CalibAdvError

            raise CalibAdvError(
                f"index has {index.ntotal} vectors but corpus {corpus.path} has {len(corpus)} rows: "
                "they must come from the same corpus file"
            )
        self.corpus = corpus
        self.index = index
        self.encoder = encoder
        self.reranker = reranker
        self.threads = threads
        self._pinned = threading.local()

    def _pin_threads(self) -> None:
        """Apply ``threads`` to FAISS in the calling thread, once per thread.

        FAISS's OpenMP thread count is per thread: ``faiss.omp_set_num_threads`` in the thread
        that loaded the engine leaves the server's engine thread at every core (torch's count,
        by contrast, is process-wide). On 2 cores under load, a 2,560-query POST to a
        ``--threads 1`` server cost 12-15 CPU ms per query instead of 4.4 (the OpenMP team
        spinning for a core someone else holds; benchmarks/bench_retrieval.py --part targets).
        """
        if self.threads and not getattr(self._pinned, "done", False):
            import faiss

            faiss.omp_set_num_threads(self.threads)
            self._pinned.done = True

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def run(self, jobs: list[Job]) -> list[list[list[Hit]]]:
        """Answer many jobs with one encoder call, one FAISS call and one cross-encoder call.

        Identical query strings are encoded, searched and reranked once: the rollouts of one
        GRPO group often send the same query in the same turn, and a turn in which many
        rollouts search with an empty ``<search></search>`` sends many ``""``.
        """
        self._pin_threads()
        unique: dict[str, int] = {}
        for job in jobs:
            for q in job.queries:
                unique.setdefault(q, len(unique))
        k_max = min(max(job.k_candidates for job in jobs), self.size)
        emb = self.encoder.encode_queries(list(unique))
        scores, rows = self.index.search(emb, k_max)
        # candidates of each job's queries: that job's k_candidates of its query's row
        per_query: list[list[tuple[int, float]]] = []
        for job in jobs:
            for q in job.queries:
                u = unique[q]
                k = job.k_candidates
                per_query.append(
                    [(int(r), float(s)) for r, s in zip(rows[u, :k], scores[u, :k]) if r >= 0]
                )
        docs = {r: self.corpus[r] for cands in per_query for r, _ in cands}
        # rerank: every query against its own candidates only, each distinct (query, passage)
        # pair once, all pairs in one predict call
        ce_score: dict[tuple[str, int], float] = {}
        if self.reranker is not None:
            wanted: dict[tuple[str, int], None] = {}
            qi = 0
            for job in jobs:
                for q in job.queries:
                    if job.rerank:
                        wanted.update(((q, r), None) for r, _ in per_query[qi])
                    qi += 1
            if wanted:
                keys = list(wanted)
                ce = self.reranker.score([(q, passage_for_rerank(docs[r])) for q, r in keys])
                ce_score = {key: float(s) for key, s in zip(keys, ce, strict=True)}
        out: list[list[list[Hit]]] = []
        qi = 0
        for job in jobs:
            answers = []
            for q in job.queries:
                if job.rerank and self.reranker is not None:
                    hits = [Hit(r, ce_score[(q, r)], docs[r]) for r, _ in per_query[qi]]
                    hits.sort(key=lambda h: -h.score)  # stable: FAISS order breaks ties
                else:
                    hits = [Hit(r, s, docs[r]) for r, s in per_query[qi]]
                answers.append(hits[: job.k_final])
                qi += 1
            out.append(answers)
        return out


#: Flat searches of at least this many queries use BLAS (one matrix product). faiss-cpu 1.15
#: switches to BLAS only when queries x dimension >= ``distance_compute_blas_threshold``
#: (128,000: about 333 queries of 384-d), so the server's batches of up to a few hundred
#: queries took the per-query loop. Measured here (1 thread, 100k x 384 IndexFlatIP, CPU ms
#: per query, loop / BLAS): 1 query 7.8 / 17.3, 2: 7.4 / 9.5, 4: 7.4 / 4.2, 8: 7.2 / 2.5,
#: 64: 7.4 / 0.98, 256: 7.2 / 0.85. Same results either way (exact inner products).
BLAS_MIN_QUERIES = 4


def use_blas_from(queries: int, dim: int) -> None:
    """Make FAISS flat searches of ``queries`` or more ``dim``-d queries use BLAS (process-wide;
    the server is the one FAISS user of its process)."""
    import faiss

    faiss.cvar.distance_compute_blas_threshold = queries * dim


def load_engine(
    corpus: str,
    index: str,
    encoder: str,
    reranker: str | None = None,
    device: str | None = None,
    faiss_gpu: bool = False,
    mmap_index: bool = False,
    threads: int | None = None,
    query_prefix: str | None = None,
    precision: str = "auto",
) -> SearchEngine:
    """Load everything the server needs from paths/model names (slow: seconds to minutes).

    ``threads`` caps torch and FAISS CPU threads for the whole process (``None``: leave them):
    a server sharing a node with a trainer (or with other jobs) is faster with fewer threads
    than cores than with spinning OpenMP teams (``serve`` defaults to
    :func:`encoder.server_threads`).
    """
    if threads:
        import faiss
        import torch

        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
    from calibadv.retrieval.encoder import Encoder
    from calibadv.retrieval.index import load_index

    c = Corpus(corpus)
    idx = load_index(index, gpu=faiss_gpu, mmap=mmap_index)
    overrides = {} if query_prefix is None else {"query_prefix": query_prefix}
    enc = Encoder(encoder, device=device, precision=precision, **overrides)
    if enc.dim != idx.d:
        raise_dim = (
            f"encoder {encoder!r} makes {enc.dim}-d vectors but index {index} holds {idx.d}-d ones: "
            "serve with the encoder that built the index"
        )
        from calibadv.errors import CalibAdvError

        raise CalibAdvError(raise_dim)
    rr = Reranker(reranker, device=device) if reranker else None
    if not faiss_gpu:
        use_blas_from(BLAS_MIN_QUERIES, idx.d)
    return SearchEngine(c, idx, enc, rr, threads=threads)
