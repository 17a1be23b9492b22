"""Small shared helpers: seeding, device choice, atomic file writes, timing."""

from __future__ import annotations

import contextlib
import json
import os
import random
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from .errors import ConfigError

__all__ = [
    "seed_everything",
    "resolve_device",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npz",
    "atomic_save_figure",
    "save_figure",
    "principal_components",
    "read_json",
    "Stopwatch",
    "torch_threads",
    "eval_mode",
]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) from one integer.

    This is the one place seeds are set. Returns a fresh CPU ``torch.Generator`` seeded
    with ``seed`` for callers that want an explicit stream (data shuffling).
    """
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a usable ``torch.device``.

    Raises:
        ConfigError: the device string is malformed or CUDA is asked for but absent.
    """
    if isinstance(spec, torch.device):
        return spec
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto"
            )
        try:
            device = torch.device(spec)
        except RuntimeError as exc:
            raise ConfigError(f"--device {spec}: not a valid device; expected cuda or cuda:N (N >= 0)") from exc
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
        return device
    raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Whatever was at ``path`` before stays intact if the body raises (disk full, Ctrl-C).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp creates mode 0600: keep the mode of the file we replace, else 0666 minus the umask.
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp_path, mode)
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (read by setting it and putting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: str | os.PathLike[str], mode: str, write: Callable[[IO[Any]], None]) -> Path:
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file and a rename."""
    return _atomic_write(path, "wb", lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` through a temp file and a rename."""
    return _atomic_write(path, "w", lambda fh: fh.write(text))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.device):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NumPy/torch scalars and arrays allowed)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by :func:`atomic_write_json`."""
    with open(path) as fh:
        return json.load(fh)


def atomic_save_npz(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """``np.savez_compressed`` through a temp file and a rename."""
    return _atomic_write(path, "wb", lambda fh: np.savez_compressed(fh, **arrays))


def atomic_save_figure(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """``fig.savefig`` through a temp file; the format comes from ``path``'s suffix."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    kwargs.setdefault("bbox_inches", "tight")
    return _atomic_write(path, "wb", lambda fh: fig.savefig(fh, format=fmt, **kwargs))


def save_figure(fig: Any, stem: str | os.PathLike[str], *, dpi: int = 150, **kwargs: Any) -> list[Path]:
    """Save ``fig`` as ``stem.png`` (at ``dpi``) and ``stem.pdf``, atomically, then close it.

    The figure is closed even if a write fails, so a failing stage leaks no pyplot figures.
    """
    import matplotlib.pyplot as plt  # only callers that draw pay for pyplot

    stem = Path(stem)
    try:
        return [atomic_save_figure(fig, stem.with_suffix(suffix), dpi=dpi, **kwargs)
                for suffix in (".png", ".pdf")]
    finally:
        plt.close(fig)


def principal_components(rows: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-``k`` principal directions of ``rows`` (N, D), by the SVD of the centred rows.

    Each direction's sign makes its largest-magnitude entry positive (deterministic; callers may
    flip them to their own convention).

    Returns:
        ``(directions (k, D), explained_variance (k,), explained_variance_ratio (k,))`` in float64;
        the variance divides by N - 1, and the ratio is 0 where the rows do not vary at all.
    """
    centred = np.asarray(rows, dtype=np.float64)
    centred = centred - centred.mean(axis=0)
    _, singular, vh = np.linalg.svd(centred, full_matrices=False)
    directions = vh[:k].copy()
    largest = np.abs(directions).argmax(axis=1)
    directions *= np.sign(directions[np.arange(len(directions)), largest])[:, None]
    variance = singular**2 / max(1, len(centred) - 1)
    total = variance.sum()
    ratio = variance[:k] / total if total > 0 else np.zeros(len(directions))
    return directions, variance[:k], ratio


class Stopwatch:
    """Wall-clock timer: ``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body (or, as a decorator, a function) on ``threads`` intra-op CPU threads.

    The previous setting is restored afterwards; ``None`` leaves torch's setting alone. Small
    tensors gain nothing from extra threads, which only add synchronisation on a busy machine.
    """
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode (no dropout, BatchNorm running statistics) for the body.

    The model's previous training flags are restored afterwards, module by module.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training
