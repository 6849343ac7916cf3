"""Cluster layer: composes the stages into a pipeline submitted to Ray.

Stands on every stage; built in the cluster issue.
"""
