"""Backends as printers: each writes the IR of :mod:`rnngen.symbolic` as source code.

``expressions``: SymPy expressions as NumPy / TensorFlow / LaTeX. ``base``: statement dispatch
and what a function reads. ``numpy``, ``tf``: one printer per backend.
"""
