"""The test tiers themselves: what the collection marks, what the audit hook refuses."""

from __future__ import annotations

import multiprocessing
import socket
import subprocess

import pytest

import tiers
from fashionlab import data


def test_processes_sockets_and_the_real_data_need_the_full_tier(tmp_path) -> None:
    assert "process" in tiers.full_tier_need("subprocess.Popen", ("git", ["git"], None, None))
    assert "process" in tiers.full_tier_need("os.fork", ())
    assert "socket" in tiers.full_tier_need("socket.connect", (None, ("127.0.0.1", 80)))
    real = data.DEBIAN_DIR / "train-images-idx3-ubyte.gz"
    assert "real data" in tiers.full_tier_need("open", (str(real), "rb", 0))
    assert tiers.full_tier_need("open", (str(tmp_path / "a.gz"), "rb", 0)) is None
    assert tiers.full_tier_need("open", (3, "rb", 0)) is None  # a file descriptor
    assert tiers.full_tier_need("import", ("json", None, [], [], [])) is None


def test_a_fast_test_is_refused_a_process_and_a_socket(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("slow") is None
    try:
        with pytest.raises(tiers.FullTierOnly, match="starts a process"):
            subprocess.run(["true"], check=False)
        with socket.socket() as sock, pytest.raises(tiers.FullTierOnly, match="opens a socket"):
            sock.bind(("127.0.0.1", 0))
        spawn = multiprocessing.get_context("spawn")
        with pytest.raises(tiers.FullTierOnly, match="starts a process"):
            spawn.Process(target=print).start()  # as fashionlab starts stage processes
    finally:
        tiers.WATCH.refused = None  # else the wrapper fails this test for what it was refused


def test_the_real_data_puts_a_test_in_the_full_tier(
    real_data_dir, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("slow") is not None


@pytest.fixture
def _needs_the_real_data(real_data_dir):
    return real_data_dir


def test_a_fixture_that_needs_the_real_data_does_too(
    _needs_the_real_data, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("slow") is not None
