"""Serving, run in each server process.

The cluster, its registry of models, dispatch, health and hot reload.
"""
