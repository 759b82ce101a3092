"""Benchmark of symnet's compiled training step against reference implementations.

``symnet.bench.refs`` holds the workloads, the data, and one training step written
with plain numpy back-propagation (and PyTorch, JAX, PyTensor when installed);
``python -m symnet.bench`` runs the comparison.
"""
