"""The processes themselves.

Granian serving, signals, the event loop, logging, metrics and the heap.
"""
