"""Benchmarks (``poet.benchmarks``): latency beside OKS AP for every backend and precision."""
