"""Tiling stage: tissue detection and physical-resolution tiles into per-slide Zarr stores.

Stands on :mod:`slideflow_core`; built in the tiling issue.
"""
