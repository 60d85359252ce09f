"""Training backends: ``local`` (single process, CPU/GPU) and ``verl`` (GPU clusters)."""
