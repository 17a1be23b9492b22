"""Passwords in storage URLs and command lines are hidden, and nothing else is changed."""

from __future__ import annotations

import logging

import pytest

from fashionlab.experiments.classifier import redact
from fashionlab.redaction import RedactingFilter, redact_command, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ann:hunter2@db.lab:5432/study", "postgresql://ann:***@db.lab:5432/study"),
        (
            "postgresql://ann@db.lab/study?password=hunter2",
            "postgresql://ann@db.lab/study?password=***",
        ),
        (
            "postgresql://ann@db.lab/study?sslmode=require&sslpassword=hunter2&passfile=/home/ann/pg",
            "postgresql://ann@db.lab/study?sslmode=require&sslpassword=***&passfile=/home/ann/pg",
        ),
        (
            "postgresql://ann@h/s?PassWord=hunter2&pass%77ord=hunter2",
            "postgresql://ann@h/s?PassWord=***&pass%77ord=***",
        ),
        (
            "postgresql://ann@h/s?oauth_client_secret=hunter2",
            "postgresql://ann@h/s?oauth_client_secret=***",
        ),
        # unescaped '@', '/' and '?' in a password: hidden whole
        ("postgresql://ann:hun@ter2@h/s", "postgresql://ann:***@h/s"),
        ("postgresql://ann:hun/ter2@h/s", "postgresql://ann:***@h/s"),
        ("postgresql://ann:hun?ter2@h/s", "postgresql://ann:***@h/s"),
        (
            "mysql+pymysql://ann:hunter2@h/s?passwd=hunter2",
            "mysql+pymysql://ann:***@h/s?passwd=***",
        ),
    ],
)
def test_passwords_in_a_storage_url_are_hidden(url: str, shown: str) -> None:
    assert redact_url(url) == shown == redact(url)
    assert "hunter2" not in redact_text(f"error: cannot open storage '{url}' (refused)")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:5432/fashionlab_test",
        "postgresql://db.lab:5432/study?sslmode=require&passfile=/home/ann/.pgpass",
        "sqlite:////home/ann/runs/a:b@c d/tune/study.db",
        "sqlite:////home/ann/runs/x/study%3F.db",
    ],
)
def test_a_url_without_a_password_is_kept_as_given(url: str) -> None:
    assert redact_url(url) == url == redact_text(url)


def test_a_command_line_and_free_text_keep_no_password() -> None:
    argv = [
        "fashionlab",
        "tune",
        "--storage=postgresql://ann:hunter2@h/s",
        "--storage",
        "postgresql://ann@h/s?password=hunter2",
        "--out",
        "runs/a",
    ]
    command = redact_command(argv)
    assert "hunter2" not in command
    assert command.startswith("fashionlab tune --storage=postgresql://ann:***@h/s --storage ")
    assert command.endswith(" --out runs/a")
    # a libpq connection string, and a quoted URL whose closing quote stays
    text = (
        "connection to \"host=h password='hunt er2' port=5\" failed; url 'sqlite:///x?pwd=hunter2'"
    )
    hidden = redact_text(text)
    assert "hunt" not in hidden and "hunter2" not in hidden
    assert hidden.endswith("'sqlite:///x?pwd=***'") and "host=h password=*** port=5" in hidden


def test_log_lines_are_redacted_by_the_filter() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "study in %s", ("postgresql://a:hunter2@h/s",), None
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "study in postgresql://a:***@h/s"
