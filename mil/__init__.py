"""MIL stage: heads, experiments and attention over tile features.

Stands on :mod:`slideflow_core`; built in the MIL issue.
"""
