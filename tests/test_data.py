"""Tests of ``fashionlab.data``.

* Tiny IDX files written here (``FILES`` monkeypatched to match them): every corrupt input gives
  one clear ``DataError`` naming the file, what was expected and the fix.
* The download code against a local ``http.server`` on 127.0.0.1 serving generated files.
* The source order (data-dir > FASHIONLAB_DATA > cache > Debian).
* The real Fashion-MNIST of the Debian package (fixture ``real_data_dir``): checksums, shapes,
  class balance, fast path == torchvision, the validation split, the test files left alone.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from fashionlab import data, data_check
from fashionlab.errors import ConfigError, DataError
from synthetic_data import idx_bytes

# ----------------------------------------------------------------------------- tiny IDX files

TINY_SIZES = {"train": 30, "test": 20}


@dataclass(frozen=True)
class Tiny:
    """Four small valid IDX files: ``raw[key]`` decompressed bytes, ``arrays[key]`` their
    content."""

    arrays: dict[str, np.ndarray]
    raw: dict[str, bytes]
    specs: dict[str, data.FileSpec]

    def name(self, key: str) -> str:
        return self.specs[key].name

    def write(self, folder: Path, keys: tuple[str, ...] | None = None, gz: bool = True) -> Path:
        """Write the files of ``keys`` (default all) into ``folder``, gzipped or plain."""
        folder.mkdir(parents=True, exist_ok=True)
        for key in keys or tuple(self.raw):
            if gz:
                (folder / f"{self.name(key)}.gz").write_bytes(gzip.compress(self.raw[key]))
            else:
                (folder / self.name(key)).write_bytes(self.raw[key])
        return folder


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> Tiny:
    """Tiny Fashion-MNIST look-alikes; ``data.FILES`` is replaced by specs matching them."""
    rng = np.random.default_rng(0)
    arrays, raw, specs = {}, {}, {}
    for split, n in TINY_SIZES.items():
        arrays[f"{split}-images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{split}-labels"] = (np.arange(n) % 10).astype(np.uint8)  # every class present
    for key, array in arrays.items():
        real = data.FILES[key]
        raw[key] = idx_bytes(array, real.magic)
        specs[key] = data.FileSpec(
            real.name, real.magic, array.shape, hashlib.sha256(raw[key]).hexdigest()
        )
    monkeypatch.setattr(data, "FILES", specs)
    return Tiny(arrays, raw, specs)


def test_tiny_files_load_gzipped_or_plain(tiny: Tiny, tmp_path: Path) -> None:
    for gz in (True, False):
        folder = tiny.write(tmp_path / f"gz-{gz}", gz=gz)
        train, test = data.load_train(folder), data.load_test(folder)
        assert torch.equal(train.images, torch.from_numpy(tiny.arrays["train-images"]))
        assert torch.equal(train.labels, torch.from_numpy(tiny.arrays["train-labels"]).long())
        assert train.labels.dtype == torch.int64 and len(test) == TINY_SIZES["test"]


def _flip_middle_byte(blob: bytes) -> bytes:
    middle = len(blob) // 2
    return blob[:middle] + bytes([blob[middle] ^ 0xFF]) + blob[middle + 1 :]


def _with_header(raw: bytes, magic: int | None = None, first_dim: int | None = None) -> bytes:
    values = list(struct.unpack(">4I", raw[:16]))
    values[0] = values[0] if magic is None else magic
    values[1] = values[1] if first_dim is None else first_dim
    return struct.pack(">4I", *values) + raw[16:]


# name -> (file to damage, how, words the message must contain besides the file name and the fix)
CORRUPTIONS = {
    "missing file": ("train-labels", lambda path, raw: path.unlink(), ["is missing"]),
    "truncated gzip": (
        "train-images",
        lambda path, raw: path.write_bytes(gzip.compress(raw)[:200]),
        ["truncated or corrupt gzip", "expected a complete gzip stream"],
    ),
    "corrupt gzip": (
        "train-images",
        lambda path, raw: path.write_bytes(_flip_middle_byte(gzip.compress(raw))),
        ["truncated or corrupt gzip", "expected"],
    ),
    "not gzip at all": (
        "train-labels",
        lambda path, raw: path.write_bytes(b"<html>404 Not Found</html>"),
        ["truncated or corrupt gzip"],
    ),
    "wrong magic": (
        "train-images",
        lambda path, raw: path.write_bytes(gzip.compress(_with_header(raw, magic=2049))),
        ["wrong magic number 2049", "expected 2051"],
    ),
    "wrong dimensions": (
        "train-images",
        lambda path, raw: path.write_bytes(gzip.compress(_with_header(raw, first_dim=31))),
        ["dimensions (31, 28, 28)", "expected (30, 28, 28)"],
    ),
    "truncated content": (
        "train-images",
        lambda path, raw: path.write_bytes(gzip.compress(raw[:-100])),
        [f"{16 + 30 * 784 - 100} bytes after decompression", f"expected {16 + 30 * 784}"],
    ),
    "padded content": (
        "train-images",
        lambda path, raw: path.write_bytes(gzip.compress(raw + b"\0")),
        ["bytes after decompression", "expected"],
    ),
    "header only": (
        "train-images",
        lambda path, raw: path.write_bytes(gzip.compress(raw[:10])),
        ["only 10 bytes, not an IDX file", "expected a 16-byte header"],
    ),
    "wrong checksum": (
        "train-images",
        lambda path, raw: path.write_bytes(gzip.compress(_flip_middle_byte(raw))),
        ["sha256", "expected"],
    ),
    "label out of range": (
        "train-labels",
        lambda path, raw: path.write_bytes(gzip.compress(raw[:-1] + bytes([10]))),
        ["label 10 out of range", "expected 0..9"],
    ),
}


def assert_clear(message: str, names: list[str]) -> None:
    """One line, naming the file (or folder) and a fix."""
    assert "\n" not in message
    assert any(name in message for name in names), message
    assert "fix:" in message and (
        "fashionlab data download" in message or "--data-dir" in message
    ), message


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_file_gives_one_clear_error(case: str, tiny: Tiny, tmp_path: Path) -> None:
    key, damage, words = CORRUPTIONS[case]
    folder = tiny.write(tmp_path / "data")
    damage(folder / f"{tiny.name(key)}.gz", tiny.raw[key])
    with pytest.raises(DataError) as info:
        data.load_train(folder)
    message = str(info.value)
    assert_clear(message, [tiny.name(key)])
    for word in words:
        assert word in message, (case, message)


def test_verify_reports_the_bad_file_and_passes_the_others(tiny: Tiny, tmp_path: Path) -> None:
    folder = tiny.write(tmp_path / "data")
    (folder / f"{tiny.name('test-labels')}.gz").write_bytes(
        gzip.compress(tiny.raw["test-labels"][:-1] + b"\x0b")
    )
    source, rows = data_check.verify(folder)
    assert source == data.DataSource("data-dir", folder)
    by_key = {row.key: row for row in rows}
    assert [key for key, row in by_key.items() if not row.ok] == ["test-labels"]
    assert (
        "label 11 out of range" in by_key["test-labels"].message
        and by_key["test-labels"].sha256 is None
    )
    assert by_key["train-images"].sha256 == tiny.specs["train-images"].sha256


def test_unreadable_file_is_a_data_error(
    tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated (root reads any file): the read raises EACCES."""
    folder = tiny.write(tmp_path / "data")
    target = folder / f"{tiny.name('train-images')}.gz"
    real_read_bytes = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == target:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(DataError, match="not readable") as info:
        data.load_train(folder)
    assert_clear(str(info.value), [str(target)])


def test_unreadable_folder_simulated(
    tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The permission checks, simulated so that they also run as root (CI)."""
    folder = tiny.write(tmp_path / "data")
    real_access = os.access
    monkeypatch.setattr(
        data.os, "access", lambda path, mode: Path(path) != folder and real_access(path, mode)
    )
    with pytest.raises(DataError, match="is not readable") as info:
        data.load_train(folder)
    assert_clear(str(info.value), [str(folder)])
    # A folder without search permission: stat() of its files raises EACCES.
    monkeypatch.setattr(data.os, "access", real_access)
    real_is_file = Path.is_file

    def is_file(self: Path) -> bool:
        if self.parent == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_is_file(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    with pytest.raises(DataError, match="not readable") as info:
        data.load_train(folder)
    assert_clear(str(info.value), [str(folder)])


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0,
    reason="root reads a chmod 000 folder anyway (CI runs as root); "
    "test_unreadable_folder_simulated covers the message",
)
def test_unreadable_folder_chmod(tiny: Tiny, tmp_path: Path) -> None:
    folder = tiny.write(tmp_path / "data")
    folder.chmod(0)
    try:
        with pytest.raises(DataError, match="not readable") as info:
            data.load_train(folder)
        assert_clear(str(info.value), [str(folder)])
    finally:
        folder.chmod(0o755)


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        data.load_train(tmp_path / "nowhere")
    assert_clear(str(info.value), [str(tmp_path / "nowhere")])


# ----------------------------------------------------------------------------- source order


def test_source_order(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = tiny.write(tmp_path / "explicit")
    env = tiny.write(tmp_path / "env")
    cache = tiny.write(data.cache_dir(), gz=False)  # the isolated cache of conftest
    debian = tiny.write(tmp_path / "debian")
    monkeypatch.setattr(data, "DEBIAN_DIR", debian)
    monkeypatch.setenv("FASHIONLAB_DATA", str(env))

    assert data.find_source(explicit, allow_download=False) == data.DataSource("data-dir", explicit)
    assert data.find_source(None, allow_download=False) == data.DataSource("env", env)
    monkeypatch.delenv("FASHIONLAB_DATA")
    assert data.find_source(None, allow_download=False) == data.DataSource("cache", cache)
    (cache / tiny.name("test-images")).unlink()  # an incomplete cache is skipped ...
    assert data.find_source(None, allow_download=False) == data.DataSource("debian", debian)
    assert data.find_source(None, "train", allow_download=False) == data.DataSource(
        "cache", cache
    )  # ... per split
    (debian / f"{tiny.name('train-labels')}.gz").unlink()
    with pytest.raises(DataError, match="not found in the cache") as info:
        data.find_source(None, allow_download=False)
    assert_clear(str(info.value), [str(debian)])


def test_explicit_folder_is_final(
    tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incomplete --data-dir / FASHIONLAB_DATA is an error, not a reason to look elsewhere."""
    monkeypatch.setattr(data, "DEBIAN_DIR", tiny.write(tmp_path / "debian"))
    partial = tiny.write(tmp_path / "partial", keys=("train-images", "train-labels"))
    with pytest.raises(DataError, match="is missing from the data folder"):
        data.find_source(partial)
    monkeypatch.setenv("FASHIONLAB_DATA", str(partial))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        data.find_source()
    assert data.find_source(which="train") == data.DataSource("env", partial)


def test_train_split_needs_no_test_files(tiny: Tiny, tmp_path: Path) -> None:
    folder = tiny.write(tmp_path / "train-only", keys=("train-images", "train-labels"))
    train, val = data.load_train_val(val_size=10, seed=0, data_dir=folder)
    assert (len(train), len(val)) == (20, 10)
    assert torch.bincount(val.labels, minlength=10).tolist() == [1] * 10
    with pytest.raises(DataError, match="t10k"):
        data.load_test(folder)


# ----------------------------------------------------------------------------- download


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (body, declared Content-Length)``; 404 otherwise."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, declared = route
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)  # HTTP/1.0: the connection closes after this, short or not

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Server:
    url: str
    routes: dict[str, tuple[bytes, int]]
    hits: list[str]

    def serve(self, mirror: str, name: str, body: bytes, declared: int | None = None) -> None:
        self.routes[f"/{mirror}/{name}"] = (body, len(body) if declared is None else declared)

    def mirror(self, name: str) -> str:
        return f"{self.url}/{name}/"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A threaded HTTP server on a free port of 127.0.0.1, stopped after the test."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.routes, httpd.hits = {}, []
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", httpd.routes, httpd.hits)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def mirrors(tiny: Tiny, server: Server) -> Server:
    """Mirrors ``good`` (valid files), ``bad`` (valid gzip, wrong sha256), ``short`` (the
    connection closes after half of the announced bytes); any other mirror answers 404."""
    for key, raw in tiny.raw.items():
        name = f"{tiny.name(key)}.gz"
        good = gzip.compress(raw)
        server.serve("good", name, good)
        server.serve("bad", name, gzip.compress(_flip_middle_byte(raw)))
        server.serve("short", name, good[: len(good) // 2], declared=len(good))
    return server


def _download(dest: Path, server: Server, *names: str, keys: tuple[str, ...] | None = None) -> Path:
    return data.download(
        dest, mirrors=[server.mirror(n) for n in names], keys=keys, timeout=10, progress=False
    )


@pytest.mark.slow  # a server
def test_download_success(tiny: Tiny, mirrors: Server, tmp_path: Path) -> None:
    dest = _download(tmp_path / "dl", mirrors, "good")
    expected = sorted(f"{spec.name}.gz" for spec in tiny.specs.values())
    assert sorted(p.name for p in dest.iterdir()) == expected  # renamed into place, no temp files
    for key, raw in tiny.raw.items():
        assert gzip.decompress((dest / f"{tiny.name(key)}.gz").read_bytes()) == raw
    assert torch.equal(data.load_train(dest).images, torch.from_numpy(tiny.arrays["train-images"]))
    # Files already present and valid are kept: a second call asks the server nothing.
    hits = len(mirrors.hits)
    _download(dest, mirrors, "good")
    assert len(mirrors.hits) == hits


@pytest.mark.slow  # a server
def test_download_checksum_failure_leaves_nothing(
    tiny: Tiny, mirrors: Server, tmp_path: Path
) -> None:
    dest = tmp_path / "dl"
    with pytest.raises(DataError) as info:
        _download(dest, mirrors, "bad", keys=("train-images",))
    message = str(info.value)
    assert "\n" not in message and "sha256" in message and mirrors.mirror("bad") in message
    assert f"could not download {tiny.name('train-images')}.gz" in message and "fix:" in message
    assert list(dest.iterdir()) == []


@pytest.mark.slow  # a server
def test_download_interrupted_transfer_leaves_nothing(
    tiny: Tiny, mirrors: Server, tmp_path: Path
) -> None:
    dest = tmp_path / "dl"
    with pytest.raises(DataError, match="transfer interrupted after") as info:
        _download(dest, mirrors, "short", keys=("train-labels",))
    assert tiny.name("train-labels") in str(info.value)
    assert list(dest.iterdir()) == []


@pytest.mark.slow  # a server
def test_download_falls_back_to_the_next_mirror(
    tiny: Tiny, mirrors: Server, tmp_path: Path
) -> None:
    dest = _download(
        tmp_path / "dl", mirrors, "missing", "bad", "short", "good", keys=("train-labels",)
    )
    name = f"{tiny.name('train-labels')}.gz"
    assert [p.name for p in dest.iterdir()] == [name]
    assert gzip.decompress((dest / name).read_bytes()) == tiny.raw["train-labels"]
    assert [hit.split("/")[1] for hit in mirrors.hits] == ["missing", "bad", "short", "good"]


@pytest.mark.slow  # a server
def test_download_disk_full_leaves_nothing(
    tiny: Tiny, mirrors: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC in the middle of a write: a clear error and no half-written file."""
    real_open = open

    class FullDisk:
        def __init__(self, path: Path, mode: str) -> None:
            self.file = real_open(path, mode)

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, chunk: bytes) -> int:
            self.file.write(chunk[: len(chunk) // 2])
            self.file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def tell(self) -> int:
            return self.file.tell()

    monkeypatch.setattr(
        data, "open", lambda path, mode="r", *a, **k: FullDisk(path, mode), raising=False
    )
    dest = tmp_path / "dl"
    with pytest.raises(DataError, match="disk full") as info:
        _download(dest, mirrors, "good", "good")
    assert f"{tiny.name('train-images')}.gz" in str(info.value) and "--data-dir" in str(info.value)
    assert list(dest.iterdir()) == []
    assert len(mirrors.hits) == 1  # a full disk is not a reason to try another mirror


@pytest.mark.slow  # a server
def test_find_source_downloads_into_the_cache(
    tiny: Tiny, mirrors: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(data, "MIRRORS", (mirrors.mirror("missing"), mirrors.mirror("good")))
    assert data.find_source(None, "train") == data.DataSource("download", data.cache_dir())
    assert sorted(p.name for p in data.cache_dir().iterdir()) == sorted(
        f"{tiny.name(k)}.gz" for k in ("train-images", "train-labels")
    )
    assert torch.equal(
        data.load_train().labels, torch.from_numpy(tiny.arrays["train-labels"]).long()
    )


@pytest.mark.slow  # a server
def test_cli_download(
    tiny: Tiny,
    mirrors: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``fashionlab data download`` (here because the server fixture lives here)."""
    from fashionlab.cli import main

    dest = tmp_path / "dl"
    monkeypatch.setattr(data, "MIRRORS", (mirrors.mirror("bad"),))
    assert (
        main(["data", "download", "--data-dir", str(dest), "--no-progress", "--timeout", "10"]) == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: could not download") and "\n" not in err
    assert list(dest.iterdir()) == []
    monkeypatch.setattr(data, "MIRRORS", (mirrors.mirror("good"),))
    assert main(["data", "download", "--data-dir", str(dest), "--no-progress"]) == 0
    assert f"verified in {dest}" in capsys.readouterr().out
    assert len(list(dest.iterdir())) == 4


# ---------------------------------------------------------------------------- splits and FastLoader


def test_stratified_split_is_seeded_balanced_and_a_partition() -> None:
    labels = torch.arange(600) % 3  # 200 per class
    train_index, val_index = data.stratified_split(labels, 60, seed=5)
    again = data.stratified_split(labels, 60, seed=5)
    other = data.stratified_split(labels, 60, seed=6)
    assert torch.equal(train_index, again[0]) and torch.equal(val_index, again[1])
    assert not torch.equal(val_index, other[1])
    assert torch.bincount(labels[val_index]).tolist() == [20, 20, 20]
    assert torch.equal(torch.sort(torch.cat([train_index, val_index])).values, torch.arange(600))
    with pytest.raises(ConfigError, match="validation size"):
        data.stratified_split(labels, 600)


def _indexed_split(n: int) -> data.Split:
    """Example i carries i in its first two pixels, so batches reveal which examples they hold."""
    index = torch.arange(n)
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 0, 0], images[:, 0, 1] = index // 256, index % 256
    return data.Split(images, index % 10)


def _indices(x: torch.Tensor) -> torch.Tensor:
    pixels = (x.reshape(len(x), 784)[:, :2] * 255).round().long()
    return pixels[:, 0] * 256 + pixels[:, 1]


def _epoch(loader: data.FastLoader) -> list[torch.Tensor]:
    batches = []
    for x, y in loader:
        index = _indices(x)
        assert torch.equal(y, index % 10)  # labels travel with their images
        batches.append(index)
    return batches


def test_fast_loader_epochs_cover_every_example_once_and_are_seeded() -> None:
    split = _indexed_split(1000)
    loader = data.FastLoader(split, 64, seed=3)
    first, second = _epoch(loader), _epoch(loader)
    assert len(loader) == len(first) == 16 and [len(b) for b in first[-2:]] == [64, 1000 - 15 * 64]
    for epoch in (first, second):
        assert torch.equal(torch.sort(torch.cat(epoch)).values, torch.arange(1000))
    assert not torch.equal(torch.cat(first), torch.cat(second))  # a new permutation each epoch
    same_seed = data.FastLoader(split, 64, seed=3)
    assert all(
        torch.equal(a, b)
        for a, b in zip(first + second, _epoch(same_seed) + _epoch(same_seed), strict=True)
    )
    assert not torch.equal(torch.cat(first), torch.cat(_epoch(data.FastLoader(split, 64, seed=4))))
    in_order = data.FastLoader(split, 64, shuffle=False)
    assert torch.equal(torch.cat(_epoch(in_order)), torch.arange(1000))
    dropped = data.FastLoader(split, 64, seed=3, drop_last=True)
    batches = _epoch(dropped)
    assert len(dropped) == len(batches) == 15 and len(torch.unique(torch.cat(batches))) == 960
    x, _ = next(iter(data.FastLoader(split, 8, flatten=False)))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32
    with pytest.raises(ConfigError, match="batch size"):
        data.FastLoader(split, 0)


def test_split_tensors_and_subset() -> None:
    split = _indexed_split(500)
    x, y = split.tensors()
    assert (
        x.shape == (500, 784)
        and torch.equal(_indices(x), torch.arange(500))
        and torch.equal(y, split.labels)
    )
    assert torch.equal(x, split.images.reshape(500, 784).float() / 255)
    subset = split.subset(100, seed=2)
    assert len(subset) == 100 and torch.bincount(subset.labels).tolist() == [10] * 10
    assert torch.equal(subset.images, split.subset(100, seed=2).images)
    assert split.subset(10_000) is split


# ----------------------------------------------------------------------------- the real files


def test_real_files_verify(real_data_dir: Path) -> None:
    source, rows = data_check.verify(real_data_dir)
    assert source.path == real_data_dir
    assert [(row.key, row.ok, row.sha256) for row in rows] == [
        (key, True, spec.sha256) for key, spec in data.FILES.items()
    ]


def test_real_shapes_and_class_balance(real_data_dir: Path) -> None:
    train, test = data.load_train(real_data_dir), data.load_test(real_data_dir)
    assert train.images.shape == (60_000, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10_000, 28, 28) and test.labels.dtype == torch.int64
    assert torch.bincount(test.labels, minlength=10).tolist() == [1000] * 10
    assert torch.bincount(train.labels, minlength=10).tolist() == [6000] * 10
    assert len(data.CLASSES) == 10


def test_real_fast_path_equals_torchvision(real_data_dir: Path) -> None:
    """Same x (ToTensor() == x/255, bit for bit) and y for a batch of indices, shuffle off."""
    for train, split in (
        (True, data.load_train(real_data_dir)),
        (False, data.load_test(real_data_dir)),
    ):
        dataset = data.torchvision_dataset(train=train, data_dir=real_data_dir)
        index = torch.tensor([0, 1, 2, 777, 4321, len(split) // 2, len(split) - 1])
        x_tv = torch.stack([dataset[i][0] for i in index.tolist()])  # (7, 1, 28, 28)
        y_tv = torch.tensor([dataset[i][1] for i in index.tolist()])
        x_fast, y_fast = next(
            iter(data.FastLoader(split.take(index), len(index), shuffle=False, flatten=False))
        )
        assert x_tv.dtype == x_fast.dtype == torch.float32
        assert torch.equal(x_fast, x_tv) and torch.equal(y_fast, y_tv)
        assert x_fast.max() > 0.9  # real images, not zeros


def test_real_load_train_val_never_reads_test_files(
    real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real_read_bytes = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        opened.append(self.name)
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setattr(
        data, "_load_cached", data._load_cached.__wrapped__
    )  # read the files for real
    train, val = data.load_train_val(val_size=10_000, seed=0, data_dir=real_data_dir)
    assert sorted(opened) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert (len(train), len(val)) == (50_000, 10_000)


def test_real_validation_split_is_deterministic_and_balanced(
    train_val: tuple[data.Split, data.Split], real_data_dir: Path
) -> None:
    train, val = train_val
    assert torch.bincount(val.labels, minlength=10).tolist() == [1000] * 10
    assert torch.bincount(train.labels, minlength=10).tolist() == [5000] * 10
    train2, val2 = data.load_train_val(val_size=10_000, seed=0, data_dir=real_data_dir)
    assert torch.equal(val.images, val2.images) and torch.equal(train.labels, train2.labels)
    full_labels = data.load_train(real_data_dir).labels
    assert not torch.equal(
        data.stratified_split(full_labels, 10_000, seed=1)[1],
        data.stratified_split(full_labels, 10_000, seed=0)[1],
    )


def test_real_fast_loader_is_seeded(train_val: tuple[data.Split, data.Split]) -> None:
    _, val = train_val
    a, b = data.FastLoader(val, 1000, seed=7), data.FastLoader(val, 1000, seed=7)
    epoch_a, epoch_b = list(a), list(b)
    assert all(
        torch.equal(xa, xb) and torch.equal(ya, yb)
        for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b, strict=True)
    )
    labels = torch.cat([y for _, y in epoch_a])
    assert torch.bincount(labels, minlength=10).tolist() == [1000] * 10
    assert not torch.equal(labels, val.labels)  # shuffled


# -------------------------------------------------------------------------- the course's .npy files

COURSE = {
    "train-images": "fashion_mnist_train_images.npy",
    "train-labels": "fashion_mnist_train_labels.npy",
    "test-images": "fashion_mnist_test_images.npy",
    "test-labels": "fashion_mnist_test_labels.npy",
}


def _course_images(split: data.Split, form: str) -> np.ndarray:
    """The images as the course may ship them: float32/float64 x / 255 or uint8; flat or square."""
    dtype, shape = form.split("-")
    images = split.images.numpy()
    array = images if dtype == "uint8" else (images / 255).astype(dtype)
    return array.reshape(len(split), 784) if shape == "flat" else array


def _write_course_test_files(
    folder: Path, test: data.Split, form: str = "float32-flat", labels: str = "int64"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / COURSE["test-images"], _course_images(test, form))
    np.save(folder / COURSE["test-labels"], test.labels.numpy().astype(labels))
    return folder


@pytest.fixture(scope="module")
def course_dir(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All four course files made from the real data: float32 (N, 784) train, uint8 test."""
    folder = tmp_path_factory.mktemp("course")
    train = data.load_train(real_data_dir)
    np.save(folder / COURSE["train-images"], _course_images(train, "float32-flat"))
    np.save(folder / COURSE["train-labels"], train.labels.numpy())
    return _write_course_test_files(folder, data.load_test(real_data_dir), "uint8-square", "uint8")


@pytest.mark.parametrize(
    ("form", "labels"),
    [
        ("float32-flat", "int64"),
        ("float32-square", "uint8"),
        ("float64-flat", "float32"),
        ("uint8-flat", "int32"),
    ],
)
def test_course_files_give_the_canonical_tensors(
    real_data_dir: Path, tmp_path: Path, form: str, labels: str
) -> None:
    expected = data.load_test(real_data_dir)
    folder = _write_course_test_files(tmp_path / "course", expected, form, labels)
    test = data.load_test(folder)
    assert torch.equal(test.images, expected.images) and torch.equal(test.labels, expected.labels)
    assert test.images.dtype == torch.uint8 and test.labels.dtype == torch.int64


def test_course_folder_is_a_source_verified_and_imported(
    course_dir: Path, real_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fashionlab.cli import main

    train = data.load_train(course_dir)
    assert torch.equal(train.images, data.load_train(real_data_dir).images)
    assert torch.equal(train.labels, data.load_train(real_data_dir).labels)
    source, rows = data_check.verify(course_dir)
    assert source == data.DataSource("data-dir", course_dir)
    assert [(row.path.name, row.ok, row.sha256) for row in rows] == [
        (COURSE[key], True, spec.sha256) for key, spec in data.FILES.items()
    ]
    assert main(["data", "where", "--data-dir", str(course_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"{course_dir}  (data-dir, the course's .npy files)"
    # import: IDX files in the (isolated) user cache, which is then the source
    assert main(["data", "import", str(course_dir)]) == 0
    assert str(data.cache_dir()) in capsys.readouterr().out
    for spec in data.FILES.values():
        raw = (data.cache_dir() / spec.name).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == spec.sha256
    source = data.find_source(None, allow_download=False)
    assert source == data.DataSource("cache", data.cache_dir())
    assert main(["data", "where"]) == 0
    assert capsys.readouterr().out.strip() == f"{data.cache_dir()}  (cache)"


def test_course_files_feed_torchvision(course_dir: Path, real_data_dir: Path) -> None:
    dataset = data.torchvision_dataset(train=False, data_dir=course_dir)
    expected = data.load_test(real_data_dir)
    for i in (0, 4321, 9999):
        x, y = dataset[i]
        assert torch.equal(x[0], expected.images[i].float() / 255) and y == int(expected.labels[i])


def _changed_pixel(folder: Path) -> None:
    path = folder / COURSE["test-images"]
    images = np.load(path)  # float32 (N, 784)
    images[123, 400] = (round(float(images[123, 400]) * 255) + 1) % 256 / 255
    np.save(path, images)


def _shuffled_labels(folder: Path) -> None:
    path = folder / COURSE["test-labels"]
    labels = np.load(path)
    np.save(path, np.random.default_rng(0).permutation(labels))


def _rewrite(key: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def rewrite(folder: Path) -> None:
        path = folder / COURSE[key]
        np.save(path, change(np.load(path)))

    return rewrite


@pytest.mark.parametrize(
    ("case", "modify", "file", "words"),
    [
        ("one pixel changed", _changed_pixel, "test-images", "the images differ"),
        ("labels shuffled", _shuffled_labels, "test-labels", "the labels differ"),
        (
            "wrong shape",
            _rewrite("test-images", lambda x: x[:, :783]),
            "test-images",
            "shape (10000, 783) (expected (10000, 28, 28) or (10000, 784))",
        ),
        (
            "one image missing",
            _rewrite("test-images", lambda x: x[1:]),
            "test-images",
            "shape (9999, 784)",
        ),
        (
            "pixels 0..255 as floats",
            _rewrite("test-images", lambda x: x * 255),
            "test-images",
            "expected [0, 1]",
        ),
        (
            "not multiples of 1/255",
            _rewrite("test-images", lambda x: x * 0.99),
            "test-images",
            "not multiples of 1/255",
        ),
        (
            "labels out of range",
            _rewrite("test-labels", lambda y: y + 1),
            "test-labels",
            "labels range from 1 to 10 (expected 0..9)",
        ),
        (
            "labels as text",
            _rewrite("test-labels", lambda y: y.astype(str)),
            "test-labels",
            "dtype <U",
        ),
    ],
)
def test_a_course_file_that_differs_is_refused_naming_it(
    real_data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    modify: Callable[[Path], None],
    file: str,
    words: str,
) -> None:
    from fashionlab.cli import main

    folder = _write_course_test_files(tmp_path / "course", data.load_test(real_data_dir))
    for key in ("train-images", "train-labels"):  # the canonical IDX beside them: a mixed folder
        name = f"{data.FILES[key].name}.gz"
        (folder / name).symlink_to(real_data_dir / name)
    modify(folder)
    with pytest.raises(DataError) as info:
        data.load_test(folder)
    message = str(info.value)
    assert message.startswith(str(folder / COURSE[file])) and words in message, (case, message)
    assert "fix:" in message
    # the CLI: one error line naming the file, exit 1, and nothing imported
    assert main(["data", "import", str(folder)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {folder / COURSE[file]}: "), err
    assert words in err[0]
    assert not data.cache_dir().exists() or not any(data.cache_dir().iterdir())
