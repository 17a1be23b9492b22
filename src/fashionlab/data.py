"""Fashion-MNIST: find, verify, download and serve the four IDX files.

Sources, in order (DESIGN.md): an explicit ``data_dir`` or ``$FASHIONLAB_DATA``; the user
cache (``$XDG_CACHE_HOME/fashionlab`` or ``~/.cache/fashionlab``); the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``); a verified download into
the user cache. A folder may hold each file gzipped (``NAME.gz``) or plain (``NAME``), or as
the course's NumPy array (``fashion_mnist_train_images.npy`` ...; see ``_course_files``), which
``fashionlab.data_check.import_files`` converts into the cache as IDX.

Every load verifies the *decompressed* bytes (magic, dimensions, label range, sha256):
Debian recompressed the archives, so their .gz checksums differ from upstream while the
content is identical. A course .npy file is verified as the IDX bytes it converts to.

Two ways to serve the data: :class:`FastLoader` keeps the uint8 images in memory (on the
device) and makes float batches ``x / 255`` by shuffled index — the same numbers as
``torchvision.transforms.ToTensor()`` — and :func:`torchvision_dataset` returns the real
``torchvision.datasets.FashionMNIST`` for textbook DataLoader code.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import logging
import os
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ._course_files import COURSE_NAMES, npy_idx_bytes
from ._folders import user_cache, writable_folder
from .atomic import atomic_path, atomic_write_bytes
from .batches import FastLoader, Split, stratified_split  # re-exported: the data layer's face
from .errors import DataError

__all__ = [
    "CLASSES",
    "FILES",
    "MIRRORS",
    "DEBIAN_DIR",
    "FileSpec",
    "DataSource",
    "Split",
    "FastLoader",
    "cache_dir",
    "check_torchvision_root",
    "find_source",
    "file_in",
    "file_content",
    "parse_idx",
    "missing_name",
    "source_files",
    "download",
    "load_train",
    "load_test",
    "load_train_val",
    "stratified_split",
    "torchvision_root",
    "torchvision_dataset",
]

logger = logging.getLogger(__name__)

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class FileSpec:
    """What one decompressed IDX file must be."""

    name: str
    magic: int  # 2051 = images (idx3, uint8), 2049 = labels (idx1, uint8)
    shape: tuple[int, ...]
    sha256: str


FILES: dict[str, FileSpec] = {
    "train-images": FileSpec(
        "train-images-idx3-ubyte",
        2051,
        (60000, 28, 28),
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    "train-labels": FileSpec(
        "train-labels-idx1-ubyte",
        2049,
        (60000,),
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    "test-images": FileSpec(
        "t10k-images-idx3-ubyte",
        2051,
        (10000, 28, 28),
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    "test-labels": FileSpec(
        "t10k-labels-idx1-ubyte",
        2049,
        (10000,),
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
}
_SPLIT_FILES = {"train": ("train-images", "train-labels"), "test": ("test-images", "test-labels")}

MIRRORS: tuple[str, ...] = (
    "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

_FIXES = (
    "`apt-get install dataset-fashion-mnist`, or `fashionlab data download`, "
    "or point --data-dir / FASHIONLAB_DATA at a folder with the four files "
    "(IDX, or the course's .npy files)"
)

Which = Literal["train", "test", "all"]


def cache_dir() -> Path:
    """The user cache: ``$XDG_CACHE_HOME/fashionlab`` or ``~/.cache/fashionlab``."""
    return user_cache()


def check_torchvision_root(which: Which = "all") -> None:
    """Refuse, before any work, a user cache where :func:`torchvision_root` cannot write the
    decompressed files it needs (a read-only HOME); nothing to write is fine.

    Raises:
        DataError: naming the folder and the fix (``XDG_CACHE_HOME``, the fast loader).
    """
    raw_dir = cache_dir() / "torchvision" / "FashionMNIST" / "raw"
    if all(_raw_complete(raw_dir / FILES[key].name, FILES[key]) for key in _keys(which)):
        return
    why = writable_folder(raw_dir)
    if why is not None:
        raise DataError(
            f"the user cache {cache_dir()} cannot be written ({why}); torchvision's "
            f"FashionMNIST (the autoencoder's loader) reads decompressed files from there",
            fix="set XDG_CACHE_HOME to a writable folder (e.g. XDG_CACHE_HOME=/tmp/cache), or "
            'use the in-memory loader ([autoencoder] loader = "fast", --loader fast)',
        )


def _raw_complete(target: Path, spec: FileSpec) -> bool:
    size = 4 + 4 * len(spec.shape) + int(np.prod(spec.shape))
    return target.is_file() and target.stat().st_size == size


@dataclass(frozen=True)
class DataSource:
    """Where the files were found: ``kind`` is data-dir, env, cache, debian or download."""

    kind: str
    path: Path


def file_in(folder: Path, spec: FileSpec) -> Path | None:
    candidates = [folder / spec.name, folder / f"{spec.name}.gz"]
    if spec.name in COURSE_NAMES:  # the IDX files first: they are the canonical form
        candidates.append(folder / COURSE_NAMES[spec.name])
    for candidate in candidates:
        try:
            if candidate.is_file():
                return candidate
        except PermissionError as exc:  # a folder without search (x) permission
            raise DataError(
                f"{candidate} cannot be checked: folder {folder} is not readable (permissions)",
                fix=_FIXES,
            ) from exc
    return None


def _complete(folder: Path, keys: Sequence[str]) -> bool:
    return all(file_in(folder, FILES[k]) is not None for k in keys)


def missing_name(folder: Path, spec: FileSpec) -> str:
    course = f" or {COURSE_NAMES[spec.name]}" if spec.name in COURSE_NAMES else ""
    return f"{folder / spec.name}(.gz){course}"


def source_files(folder: str | os.PathLike[str], which: Which = "all") -> dict[str, Path | None]:
    """The file that holds each key of ``which`` in ``folder`` (None where none does).

    IDX (plain, then gzipped) comes before the course's .npy file of the same content.
    """
    return {key: file_in(Path(folder), FILES[key]) for key in _keys(which)}


def _keys(which: Which) -> tuple[str, ...]:
    return tuple(FILES) if which == "all" else _SPLIT_FILES[which]


def find_source(
    data_dir: str | os.PathLike[str] | None = None,
    which: Which = "all",
    *,
    allow_download: bool = True,
) -> DataSource:
    """Find the folder that holds the files of ``which`` split, downloading if needed.

    An explicit ``data_dir`` (or ``$FASHIONLAB_DATA``) is final: if it lacks a file, that is an
    error, not a reason to look elsewhere.

    Raises:
        DataError: an explicit folder is missing or incomplete, or no source has the files.
    """
    keys = _keys(which)
    explicit = [("data-dir", data_dir), ("env", os.environ.get("FASHIONLAB_DATA"))]
    for kind, value in explicit:
        if value:
            folder = Path(value)
            if not folder.is_dir():
                raise DataError(
                    f"data folder {folder} ({kind}) does not exist or is not a folder", fix=_FIXES
                )
            if not os.access(folder, os.R_OK | os.X_OK):
                raise DataError(
                    f"data folder {folder} ({kind}) is not readable (permissions)", fix=_FIXES
                )
            missing = [FILES[k] for k in keys if file_in(folder, FILES[k]) is None]
            if missing:
                raise DataError(
                    f"{missing_name(folder, missing[0])} is missing from the data folder ({kind})",
                    fix=_FIXES,
                )
            return DataSource(kind, folder)
    for kind, folder in (("cache", cache_dir()), ("debian", DEBIAN_DIR)):
        if _complete(folder, keys):
            return DataSource(kind, folder)
    if not allow_download:
        raise DataError(
            f"Fashion-MNIST not found in the cache ({cache_dir()}) nor in {DEBIAN_DIR}", fix=_FIXES
        )
    logger.info("Fashion-MNIST not found locally; downloading into %s", cache_dir())
    download(cache_dir(), keys=keys)
    return DataSource("download", cache_dir())


# --------------------------------------------------------------------------- reading


def file_content(path: Path, spec: FileSpec) -> bytes:
    """The decompressed IDX bytes of ``path``: read, gunzipped, or converted from a .npy."""
    if path.suffix == ".npy":
        return npy_idx_bytes(path, spec.magic, spec.shape, spec.sha256)
    return _decompressed_bytes(path)


def _decompressed_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except PermissionError as exc:
        raise DataError(
            f"{path} is not readable (permissions: {exc.strerror})", fix=_FIXES
        ) from exc
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror})", fix=_FIXES) from exc
    return _gunzip(raw, path) if path.suffix == ".gz" else raw


def _gunzip(raw: bytes, origin: Path | str) -> bytes:
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(
            f"{origin} is a truncated or corrupt gzip file ({exc}; expected a complete gzip "
            f"stream)",
            fix="delete it and run `fashionlab data download`, or reinstall dataset-fashion-mnist",
        ) from exc


def parse_idx(raw: bytes, spec: FileSpec, origin: Path | str) -> np.ndarray:
    """Check magic, dimensions, size, label range and sha256; return the array (a view)."""
    header = 4 + 4 * len(spec.shape)
    if len(raw) < header:
        raise DataError(
            f"{origin}: only {len(raw)} bytes, not an IDX file (expected a {header}-byte header "
            f"and {int(np.prod(spec.shape))} bytes of data for {spec.name})",
            fix=_FIXES,
        )
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != spec.magic:
        raise DataError(
            f"{origin}: wrong magic number {magic} (expected {spec.magic} for {spec.name})",
            fix=_FIXES,
        )
    ndim = len(spec.shape)
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if tuple(dims) != spec.shape:
        raise DataError(f"{origin}: dimensions {dims} (expected {spec.shape})", fix=_FIXES)
    expected_size = header + int(np.prod(spec.shape))
    if len(raw) != expected_size:
        raise DataError(
            f"{origin}: {len(raw)} bytes after decompression (expected {expected_size}): "
            f"truncated or padded file",
            fix=_FIXES,
        )
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(spec.shape)
    if spec.magic == 2049 and array.max(initial=0) > 9:
        raise DataError(
            f"{origin}: label {int(array.max())} out of range (expected 0..9)", fix=_FIXES
        )
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec.sha256:
        raise DataError(
            f"{origin}: sha256 of the decompressed content is {digest[:16]}…, expected "
            f"{spec.sha256[:16]}… ({spec.name}); the file is corrupt or another dataset",
            fix=_FIXES,
        )
    return array


def _read(folder: Path, key: str) -> np.ndarray:
    spec = FILES[key]
    path = file_in(folder, spec)
    if path is None:
        raise DataError(f"{missing_name(folder, spec)} is missing", fix=_FIXES)
    return parse_idx(file_content(path, spec), spec, path)


# --------------------------------------------------------------------------- download


def _fetch(url: str, dest: Path, spec: FileSpec, timeout: float, progress: bool) -> None:
    """Stream ``url`` into a temp file, verify its content, then rename to ``dest``."""
    from tqdm.auto import tqdm

    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                disable=not progress,
                leave=False,
            ) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and out.tell() != total:
                raise DataError(f"{url}: transfer interrupted after {out.tell()} of {total} bytes")
        parse_idx(_gunzip(tmp.read_bytes(), url), spec, url)


def download(
    dest: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download and verify the Fashion-MNIST files into ``dest`` (default: the user cache).

    Files already present and valid are kept. Each file goes to a temp file in ``dest`` and
    is renamed into place only after its decompressed content passed verification; on any
    failure nothing partial is left behind.

    Args:
        dest: the folder to download into.
        mirrors: base URLs tried in order (default :data:`MIRRORS`).
        keys: which of :data:`FILES` to fetch (default all four).
        timeout: seconds per connection attempt / socket read.
        progress: show a tqdm bar per file.

    Raises:
        DataError: every mirror failed for a file, or the disk is full / not writable.
    """
    mirrors = MIRRORS if mirrors is None else tuple(mirrors)
    keys = tuple(FILES) if keys is None else tuple(keys)
    dest = Path(dest) if dest is not None else cache_dir()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create download folder {dest} ({exc.strerror})",
            fix="choose another with --data-dir",
        ) from exc
    for key in keys:
        spec = FILES[key]
        target = dest / f"{spec.name}.gz"
        if target.is_file():
            try:
                _read(dest, key)
                continue
            except DataError:
                logger.warning("%s is invalid; downloading it again", target)
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + spec.name + ".gz"
            try:
                _fetch(url, target, spec, timeout, progress)
                logger.info("downloaded %s from %s", target.name, mirror)
                break
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise DataError(
                        f"disk full while writing {target}",
                        fix="free space or choose another folder with --data-dir",
                    ) from exc
                errors.append(f"{url}: {exc}")
            except DataError as exc:
                errors.append(f"{url}: {exc.message}")
            except (http.client.HTTPException, EOFError, zlib.error) as exc:
                errors.append(f"{url}: {exc}")
        else:
            raise DataError(
                f"could not download {spec.name}.gz from any mirror ({'; '.join(errors)})",
                fix="`apt-get install dataset-fashion-mnist` or --data-dir",
            )
    return dest


# --------------------------------------------------------------------------- serving


@lru_cache(maxsize=4)
def _load_cached(folder: str, which: str, stamp: tuple[float, ...]) -> Split:
    images_key, labels_key = _SPLIT_FILES[which]
    images = torch.from_numpy(_read(Path(folder), images_key).copy())
    labels = torch.from_numpy(_read(Path(folder), labels_key).astype(np.int64))
    return Split(images, labels)


def _load(data_dir: str | os.PathLike[str] | None, which: Literal["train", "test"]) -> Split:
    source = find_source(data_dir, which)
    paths = [file_in(source.path, FILES[k]) for k in _SPLIT_FILES[which]]
    stamp = tuple(p.stat().st_mtime_ns for p in paths if p is not None)
    return _load_cached(str(source.path.resolve()), which, stamp)


def load_train(data_dir: str | os.PathLike[str] | None = None) -> Split:
    """The 60,000 verified training images and labels. Never reads the test files."""
    return _load(data_dir, "train")


def load_test(data_dir: str | os.PathLike[str] | None = None) -> Split:
    """The 10,000 verified test images and labels — the only function that reads them."""
    return _load(data_dir, "test")


def load_train_val(
    val_size: int = 10_000, seed: int = 0, data_dir: str | os.PathLike[str] | None = None
) -> tuple[Split, Split]:
    """The training set split into (train, validation), stratified by class and seeded."""
    full = load_train(data_dir)
    train_index, val_index = stratified_split(full.labels, val_size, seed)
    return full.take(train_index), full.take(val_index)


# --------------------------------------------------------------------------- torchvision


def torchvision_root(data_dir: str | os.PathLike[str] | None = None, which: Which = "all") -> Path:
    """Prepare ``ROOT/FashionMNIST/raw/`` with verified decompressed files; return ROOT.

    ``torchvision.datasets.FashionMNIST(ROOT, download=False)`` only checks that the
    decompressed files exist, so we write them (once, atomically) after verification.
    """
    source = find_source(data_dir, which)
    check_torchvision_root(which)
    root = cache_dir() / "torchvision"
    raw_dir = root / "FashionMNIST" / "raw"
    for key in _keys(which):
        spec = FILES[key]
        target = raw_dir / spec.name
        if _raw_complete(target, spec):
            continue
        array = _read(source.path, key)
        header = struct.pack(f">I{len(spec.shape)}I", spec.magic, *spec.shape)
        atomic_write_bytes(target, header + array.tobytes())
    return root


def torchvision_dataset(
    train: bool = True,
    transform: object | None = None,
    data_dir: str | os.PathLike[str] | None = None,
):  # -> torchvision FashionMNIST
    """The real ``torchvision.datasets.FashionMNIST`` (``ToTensor()`` unless ``transform``)."""
    from torchvision import datasets, transforms

    # torchvision checks that all four raw files exist, whichever split is asked for.
    root = torchvision_root(data_dir, "all")
    return datasets.FashionMNIST(
        str(root),
        train=train,
        download=False,
        transform=transform if transform is not None else transforms.ToTensor(),
    )
