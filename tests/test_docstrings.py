"""Docstrings and ``--help`` texts state contracts, not measurements.

A docstring says what a function promises; how fast it ran on some machine on some day is a
measurement, and it belongs in ``benchmarks/README.md`` next to the command that measures it
(STYLE.md, principle 5). This test reads every docstring of the package (module, class and
function, by ``ast``: nothing is imported) and the ``--help`` of every subcommand, and fails on
what reads as a measurement or as history:

* a number with a unit of time (``16 s``, ``~2 min``, ``3 seconds``), a rough time (``well under
  a minute``) or the machine it was timed on (``on 2 CPU cores``);
* a percentage (``98 %``);
* a ratio (``4x faster``, ``1.2×``, ``3 times slower``) — but not a product or a shape such as
  ``11 x 11`` or ``2x256``, where a number follows;
* the words *measured*, *previously*, *used to*, *load average*, *otherwise idle*.

What is not a measurement and is allowed, by two narrow rules:

* text inside double backquotes (````89.12 ± 0.10%````): code, a value of the code or the format
  of an output, not a claim about speed;
* the phrases of :data:`CONTRACTS`, each a fixed number of the code (a constant, a default), with
  the reason. Any other number that is a contract is said without a unit of time, a percentage or
  a ratio (``2/n_l``, 784, ``DEAD_ACCURACY``), or named by its constant.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fashionlab"

MEASUREMENT = re.compile(
    r"""
      (?<![\w.])\d+(?:[.,]\d+)?\s*(?:ms|s|sec|min|mins|minutes?|seconds?|h|hours?)\b  # a duration
    | (?<![\w.])\d+(?:[.,]\d+)?\s*%                                           # a percentage
    | (?<![\w.])\d+(?:\.\d+)?\s?[x×](?!\s*\d)(?!\w)                           # a ratio, not N x M
    | (?<![\w.])\d+(?:\.\d+)?\s+times\s+(?:faster|slower|more|less|cheaper|as)\b
    | \bmeasured\b | \bpreviously\b | \bused\s+to\b | \bload\s+average\b
    | \botherwise\s+idle\b
    | (?:\babout|\bunder|\bwithin|~)\s*(?:a|an|one)\s+(?:second|minute|hour)\b     # a rough time
    | \bon\s+\d+\s+(?:\w+\s+)?(?:CPU\s+)?cores?\b                              # on N cores
    | \b(?:a\s+few|several)[\s-]+(?:seconds?|minutes?|hours?)\b
    | \b(?:second|minute)\s+or\s+two\b
    """,
    re.VERBOSE | re.IGNORECASE,
)

# Phrase (whitespace as in one line) -> why its number is a contract, not a measurement.
CONTRACTS = {
    "twice that plus 60 s": "tuning.storage.LATE_HEARTBEAT_S, the grace of a silent trial",
    "the last 20 % of the epochs": "the WSD decay fraction, 0.2 by default (TuneConfig.decay)",
}

LITERAL = re.compile(r"``.*?``", re.DOTALL)


def measurements(text: str) -> list[str]:
    """What in ``text`` reads as a measurement or as history, after the two allowed rules."""
    text = " ".join(LITERAL.sub("``…``", text).split())
    for phrase in CONTRACTS:
        text = text.replace(phrase, "…")
    return [
        text[max(0, found.start() - 40) : found.end() + 20] for found in MEASUREMENT.finditer(text)
    ]


def _docstrings() -> list[tuple[str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        for node in ast.walk(tree):
            if isinstance(node, kinds):
                text = ast.get_docstring(node, clean=False)
                if text:
                    where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 1)}"
                    found.append((where, text))
    return found


def _helps() -> list[tuple[str, str]]:
    from fashionlab.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
        yield " ".join(("fashionlab", *path, "--help")), parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, (*path, name))

    return list(walk(build_parser(), ()))


@pytest.mark.parametrize(
    "text, found",
    [
        ("~2 min on 2 otherwise idle CPU cores", True),
        ("defaults: well under a minute on 2 CPU cores", True),
        ("A few-second study", True),
        ("fewer draws (a second or two)", True),
        ("heartbeat_s: the interval in seconds; timeout: seconds per attempt", False),
        ("(measured: 3 epochs of 2x256 in 16 s with 1 thread, 98 s with 2)", True),
        ("float32 draws are 4x faster than float64", True),
        ("costs 1.5 times more", True),
        ("below 20 % validation accuracy", True),
        ("the last 20 % of the epochs", False),
        ("an 11 x 11 grid of mlp_3x50 nets, 2x256 wide", False),
        ("Var[w] = 2/n_l for 784 inputs; 50 layers; 0x1F", False),
        ("formatted as ``89.12 ± 0.10%``", False),
        ("the pick was scored at 6 epochs", False),
    ],
)
def test_the_rule_tells_a_measurement_from_a_contract(text: str, found: bool) -> None:
    assert bool(measurements(text)) is found, measurements(text)


def test_the_docstrings_are_read() -> None:
    places = {where.split(":")[0] for where, _ in _docstrings()}
    assert "fashionlab/population.py" in places
    assert "fashionlab/experiments/classifier/config.py" in places


def test_no_docstring_holds_a_measurement() -> None:
    bad = {where: found for where, text in _docstrings() if (found := measurements(text))}
    assert not bad, f"measurements belong in benchmarks/README.md: {bad}"


def test_no_help_text_holds_a_measurement() -> None:
    helps = _helps()
    assert any(where == "fashionlab tune --help" for where, _ in helps)
    bad = {where: found for where, text in helps if (found := measurements(text))}
    assert not bad, f"measurements belong in benchmarks/README.md: {bad}"
