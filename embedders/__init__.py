"""Embedding stage: foundation-model registry and embedder actors writing features.

Stands on :mod:`slideflow_core`; built in the embedders issue.
"""
