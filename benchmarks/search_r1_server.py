"""Run Search-R1's own retrieval server (``search_r1/search/retrieval_server.py`` of a Search-R1
checkout, unmodified) on CPU, for ``bench_retrieval.py --part targets --search-r1 FILE``.

Its ``__main__`` block hard-codes CUDA and fp16; this runner imports the file as a module,
turns ``.cuda()`` into a no-op (the only change: CPU instead of GPU), and builds its ``Config``
with the values its ``__main__`` uses (mean pooling, 256 query tokens, retrieval batch 512)
except fp16 (CPU) and the model (ours, so that both servers encode with the same weights).

    python benchmarks/search_r1_server.py FILE --index I --corpus C --model DIR --port P --threads 1
"""

from __future__ import annotations

import argparse
import importlib.util
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("server_file")
    ap.add_argument("--index", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import faiss
    import torch
    import uvicorn

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    spec = importlib.util.spec_from_file_location("search_r1_retrieval_server", args.server_file)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    module.config = module.Config(
        retrieval_method="minilm", index_path=args.index, corpus_path=args.corpus,
        retrieval_topk=3, faiss_gpu=False, retrieval_model_path=args.model,
        retrieval_pooling_method="mean", retrieval_query_max_length=256,
        retrieval_use_fp16=False, retrieval_batch_size=512,
    )  # fmt: skip
    module.retriever = module.get_retriever(module.config)
    uvicorn.run(module.app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
