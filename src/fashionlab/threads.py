"""The thread policy: the one home of how many CPU threads torch and the BLAS pools use.

Small tensors (the MLPs here, minibatches of 16 to 256) gain little from a second intra-op
thread and lose a lot when the cores are shared: the extra OpenMP threads spin and wait. So a
stage runs on :data:`DEFAULT_THREADS` threads unless its config's ``threads`` says otherwise.

- :func:`pin_threads`: an entry point sets its process's count once, for good: a benchmark's
  ``main``, a tuning worker process, the test session, ``fashionlab heinit``.
- :func:`torch_threads`: a function given a ``threads`` setting applies it to its body and gives
  the caller's setting back afterwards: a stage under ``fashionlab run`` (in this process or a
  stage process), and the stage functions whose config has ``threads``.
- :func:`blas_threads`: the same for the BLAS/OpenMP pools of NumPy and scikit-learn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["DEFAULT_THREADS", "pin_threads", "torch_threads", "blas_threads"]

# The threads fashionlab computes on where no setting says otherwise: every stage under
# ``fashionlab run`` (in this process or a stage process, so that the results do not depend on
# ``--jobs``) and the ``threads`` default of the configs that have one.
DEFAULT_THREADS = 1


def pin_threads(threads: int | None) -> None:
    """Set this process's torch intra-op CPU threads to ``threads`` for good (None: leave torch's
    setting). For entry points only: a library function uses :func:`torch_threads`."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body (or, as a decorator, a function) on ``threads`` intra-op CPU threads.

    The previous setting is restored afterwards; ``None`` leaves torch's setting alone. Small
    tensors gain nothing from extra threads, which only add synchronisation on a busy machine.
    """
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def blas_threads(threads: int) -> Iterator[None]:
    """Run the body with the BLAS/OpenMP pools (NumPy, scikit-learn) limited to ``threads``.

    The previous limits are restored afterwards.
    """
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    with threadpool_limits(limits=threads):
        yield
