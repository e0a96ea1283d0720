"""Benchmarks of minicaffe beside PyTorch, run through ``tools/*.py``: tools, not tests.

torch is optional and imported only where a PyTorch side runs; it is never a minicaffe
dependency.
"""
