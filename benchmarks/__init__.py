"""Ratio and accuracy benchmarks, by topic; ``manifest.yaml`` lists each result set, ``run.py`` runs them.

Run from the repository root as modules: ``python -m benchmarks.p4.p4inv_step --help``.
"""
