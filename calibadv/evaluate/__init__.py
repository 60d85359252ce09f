"""Benchmark evaluation, rollout metrics (High-PPL) and the collapse point."""
