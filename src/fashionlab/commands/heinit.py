"""``fashionlab heinit``: check every step of the He-initialization derivation and run the depth
experiment."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fashionlab.experiments.heinit.config import HeInitConfig

from . import config_option, config_values, force_option, stage_dir, writes_run_dir

if TYPE_CHECKING:
    from fashionlab.experiments.heinit import HeInitResult, HeInitRun


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "heinit",
        parents=[common],
        help="He initialization: Monte-Carlo check of each identity, depth experiment",
        description="Estimate both sides of every identity of the He et al. (2015) variance "
        "derivation, under its assumptions and under broken ones, with batch-means intervals; "
        "propagate a batch through a deep ReLU/LeakyReLU MLP for He, Xavier, N(0,1) and "
        "N(0,0.01^2); write results.json and figures to <run>/heinit. Runs on the CPU (seconds), "
        "whatever --device.",
    )
    group = parser.add_argument_group("heinit options")
    for field, flag, kind, text in (
        ("samples", "--samples", int, "Monte-Carlo draws per identity"),
        ("batches", "--batches", int, "batches for the batch-means standard error"),
        ("fan_in", "--fan-in", int, "n, the fan-in of the identity checks"),
        ("z", "--z", float, "interval half-width in standard errors"),
        ("depth", "--depth", int, "layers of the depth experiment"),
        ("width", "--width", int, "units per layer of the depth experiment"),
        ("depth_batch", "--depth-batch", int, "inputs sent through the deep MLP"),
        ("negative_slope", "--negative-slope", float, "LeakyReLU slope a"),
    ):
        config_option(group, HeInitConfig, field, flag, type=kind, help=text)
    force_option(parser)
    parser.set_defaults(func=writes_run_dir(_heinit, ("heinit",)))


def format_identity_table(result: HeInitResult) -> str:
    """The identities grouped by formula: case, lhs, rhs, interval for lhs - rhs, holds?,
    expected."""
    z = result.config.z
    header = ("case", "lhs", "rhs", f"lhs - rhs ± {z:g} SE", "holds", "expected")
    lines, previous = [], None
    cases = max(len(row.case) for row in result.identities)
    width = (cases, 11, 11, 25, 5, 8)

    def line(cells: tuple[str, ...]) -> str:
        first, *numbers, holds, expected = cells
        return "    " + "  ".join(
            [
                first.ljust(width[0]),
                *(c.rjust(w) for c, w in zip(numbers, width[1:4], strict=True)),
                holds.ljust(width[4]),
                expected,
            ]
        )

    for row in result.identities:
        if row.formula != previous:
            lines += ["", f"[{row.step}] {row.name}:  {row.formula}", line(header)]
            previous = row.formula
        interval = f"[{row.ci_low:+.4g}, {row.ci_high:+.4g}]"
        flag = "" if row.holds == row.expected_to_hold else "   <-- unexpected"
        lines.append(
            line(
                (
                    row.case,
                    f"{row.lhs:.5g}",
                    f"{row.rhs:.5g}",
                    interval,
                    "yes" if row.holds else "NO",
                    ("holds" if row.expected_to_hold else "breaks") + flag,
                )
            )
        )
    return "\n".join(lines[1:])


def _summary(run: HeInitRun) -> list[str]:
    result = run.verification
    lines = [
        f"{len(result.identities) - len(result.unexpected())} of {len(result.identities)} verdicts "
        f"as the assumptions predict (interval: {result.config.z:g} batch-means standard errors)."
    ]
    for check in result.kaiming:
        lines.append(
            f"kaiming_normal_ ({check.nonlinearity}, a={check.negative_slope:g}, "
            f"fan_in={check.fan_in}): Var = {check.empirical_var:.5g} in [{check.ci_low:.5g}, "
            f"{check.ci_high:.5g}], expected 2/((1+a²) fan_in) = {check.expected_var:.5g}: "
            f"{'ok' if check.holds else 'MISMATCH'}"
        )
    for depth in run.depth:
        ranges = []
        for curve in depth.curves:
            first, last = curve.forward_var[0], curve.forward_var[-1]
            ranges.append(f"{curve.scheme} {first:.3g} -> {last:.3g}")
        lines.append(
            f"depth {depth.depth}, {depth.activation}: Var[z_1] -> Var[z_L]: " + "; ".join(ranges)
        )
    return lines


def _heinit(args: argparse.Namespace) -> int:
    from fashionlab.experiments.heinit import run_heinit
    from fashionlab.threads import DEFAULT_THREADS, pin_threads

    pin_threads(DEFAULT_THREADS)  # as under `fashionlab run`
    config = HeInitConfig(**config_values(args, HeInitConfig))
    out_dir = stage_dir(args, "heinit")
    run = run_heinit(out_dir, config, progress=not args.no_progress)
    print(format_identity_table(run.verification))
    print()
    print("\n".join(_summary(run)))
    print(f"wrote {', '.join(path.name for path in run.files)} to {out_dir} in {run.seconds:.1f} s")
    return 0
