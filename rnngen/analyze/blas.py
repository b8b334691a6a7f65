"""One BLAS thread for the analysis: its matrices are small (batch × units), and on a busy
machine OpenBLAS's worker threads spin-wait for one another, which measured 20-35 times
slower than a single thread on this project's 2-core machine. Uses threadpoolctl (installed
with the ``analyze`` extra) and does nothing without it."""

from __future__ import annotations

import contextlib


def single_threaded():
    """A context manager limiting BLAS to one thread (a no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with the analyze extra
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
