"""Tests of the ``fashionlab`` command line: help of every subcommand, one-line errors, ``data``."""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fashionlab import data
from fashionlab.cli import build_parser, main
from fashionlab.commands import COMMANDS


def _subcommands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every (nested) subcommand path of ``parser``, e.g. ("data",), ("data", "verify")."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths.extend(_subcommands(sub, (*prefix, name)))
    return paths


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    paths = _subcommands(parser)
    registered = {path[0] for path in paths}
    assert {"data"} <= registered <= set(COMMANDS)
    assert {("data", "where"), ("data", "verify"), ("data", "download")} <= set(paths)
    for path in [(), *paths]:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([*path, "--help"])
        assert exit_info.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith(f"usage: {' '.join(('fashionlab', *path))}"), (path, out[:200])


def test_common_options_on_leaf_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["data", "verify", "--help"])
    out = capsys.readouterr().out
    for option in ("--device", "--seed", "--out", "--data-dir", "--no-progress", "--verbose"):
        assert option in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: fashionlab" in capsys.readouterr().out


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_device_cuda_without_cuda_is_one_line(
    monkeypatch: pytest.MonkeyPatch, real_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["data", "where", "--device", "cuda"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "--device cuda: CUDA is not available" in line and "--device cpu" in line
    assert main(["data", "where", "--device", "gpu"]) == 1
    assert "auto, cpu, cuda or cuda:N" in _one_error_line(capsys.readouterr().err)
    assert main(["data", "where", "--device", "cpu"]) == 0


def test_data_where_prints_the_debian_source(
    real_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # conftest gives every test an empty cache and no FASHIONLAB_DATA: the Debian package is next.
    assert main(["data", "where"]) == 0
    assert capsys.readouterr().out.strip() == f"{data.DEBIAN_DIR}  (debian)"


def test_data_where_prefers_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for spec in data.FILES.values():
        (tmp_path / f"{spec.name}.gz").write_bytes(b"")  # `where` only looks for the files
    assert main(["data", "where", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path}  (data-dir)"


def test_data_verify_real_files(real_data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "verify", "--data-dir", str(real_data_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"source: {real_data_dir} (data-dir)"
    assert lines[1:] == [
        f"OK    {spec.name + '.gz':<28} {spec.sha256}" for spec in data.FILES.values()
    ]


def _bad_folder(folder: Path) -> Path:
    """The four file names, each holding a valid gzip of a non-IDX payload (wrong magic)."""
    folder.mkdir()
    for spec in data.FILES.values():
        (folder / f"{spec.name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 12))
    return folder


@pytest.mark.slow  # a subprocess
def test_verify_bad_data_dir_in_a_subprocess(tmp_path: Path) -> None:
    """`python -m fashionlab data verify --data-dir BAD`: exit 1, one line on stderr, no
    traceback."""
    folder = _bad_folder(tmp_path / "bad")
    result = subprocess.run(
        [sys.executable, "-m", "fashionlab", "data", "verify", "--data-dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result
    line = _one_error_line(result.stderr)
    assert str(folder) in line and "fix:" in line
    assert (
        "4 of 4 files failed verification" in line
        and "wrong magic number 2049 (expected 2051" in line
    )
    assert result.stdout.count("FAIL") == 4


def test_verify_missing_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same in-process (a subprocess costs a torch import): a folder that does not exist."""
    assert main(["data", "verify", "--data-dir", str(tmp_path / "nowhere")]) == 1
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert str(tmp_path / "nowhere") in line and "does not exist" in line and "fix:" in line
    assert captured.out == ""


def test_logging_keeps_sqlalchemy_s_cleanup_tracebacks_out_of_the_output() -> None:
    """An interrupt inside a query makes SQLAlchemy log "Error closing cursor" with a traceback;
    the command reports the interrupt in one line, so that record is not shown."""
    import logging

    from fashionlab._log_setup import configure_logging

    configure_logging(logging.INFO, "%(message)s")
    assert not logging.getLogger("sqlalchemy.pool.impl.QueuePool").isEnabledFor(logging.ERROR)
    assert not logging.getLogger("optuna").isEnabledFor(logging.INFO)
