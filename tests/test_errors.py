"""Structured errors: what is wrong and what to do are two fields, joined only for display."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from fashionlab import data
from fashionlab.errors import ConfigError, DataError


def test_message_and_fix_are_fields_and_one_line() -> None:
    error = DataError("the file is gone", fix="download it again")
    assert (error.message, error.fix) == ("the file is gone", "download it again")
    assert str(error) == "the file is gone; fix: download it again"
    assert str(ConfigError("no fix here")) == "no fix here"


def test_the_fix_survives_a_trip_to_another_process() -> None:
    error = pickle.loads(pickle.dumps(DataError("gone", fix="download")))
    assert isinstance(error, DataError) and (error.message, error.fix) == ("gone", "download")


def test_the_data_layer_says_what_is_wrong_apart_from_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        data.find_source(tmp_path / "nowhere")
    assert "does not exist" in info.value.message and "fix:" not in info.value.message
    assert info.value.fix and "--data-dir" in info.value.fix
