"""What the trials of finished tuning studies say about the search space: validation only.

Reads the ``trials.csv`` (and ``reference.json``) of one or more tuning stage folders
(``<run>/tune``, ``<run>/tune_variant``) and prints, per folder:

- the trials by *effective* learning rate ``lr / (1 - momentum)`` (from ``param_effective_lr``,
  or from ``param_lr`` and ``param_momentum`` in a study that searched ``lr``): how many there
  are in each band, how many were dead nets (best validation accuracy under 20 %, chance is
  10 %), and the best value at the first rung, with and without BatchNorm where the space has it;
- the trials that reached the top rung: their L2 strength (and dropout where the space has it),
  effective rate and value there, ``direct`` for those of the direct bracket (scored at the top
  rung only), beside the reference row (the hand recipe trained with the study's protocol);
- the pick (``best.json``): its trial, length and value against the reference row's.

Nothing is trained and the test set is never read; the numbers are the studies' own validation
values. Example (the three default runs of one commit):

    .venv/bin/python benchmarks/study_review.py runs/seed0/tune runs/seed1/tune runs/seed2/tune
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

DEAD = 0.2  # best validation accuracy under this: a dead net (tuning.objective.DEAD_ACCURACY)
BANDS = (0.0, 0.01, 0.1, 0.5, 1.0, 3.0, math.inf)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def effective_rate(row: dict[str, str]) -> float:
    """The trial's lr / (1 - momentum), whichever of the two the study searched."""
    searched = _float(row.get("param_effective_lr", ""))
    if searched is not None:
        return searched
    momentum = _float(row.get("param_momentum", "")) or 0.0
    return float(row["param_lr"]) / (1.0 - momentum)


def rung_values(row: dict[str, str]) -> dict[int, float]:
    values = {}
    for key, text in row.items():
        if key.startswith("val_acc_") and _float(text) is not None:
            values[int(key.removeprefix("val_acc_"))] = float(text)
    return values


def review(folder: Path) -> None:
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    rows = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    if not rows:
        print(f"{folder}: no finished trials")
        return
    rungs = sorted({r for row in rows for r in rung_values(row)})
    first, top = rungs[0], rungs[-1]
    print(f"\n{folder}: {len(rows)} finished trials, rungs {rungs}")
    header = ("effective rate", "BatchNorm", "trials", "dead", f"best@{first}")
    print("{:>16} {:>9} {:>6} {:>5} {:>9}".format(*header))
    with_bn = any("param_batchnorm" in row for row in rows)
    for low, high in zip(BANDS, BANDS[1:], strict=False):
        for norm in ("True", "False") if with_bn else ("-",):
            band = [
                row
                for row in rows
                if low <= effective_rate(row) < high
                and (norm == "-" or row.get("param_batchnorm") == norm)
            ]
            if not band:
                continue
            dead = sum(max(rung_values(row).values(), default=0.0) < DEAD for row in band)
            best = max(rung_values(row).get(first, 0.0) for row in band)
            print(f"{low:>7g}-{high:<8g} {norm:>9} {len(band):>6} {dead:>5} {100 * best:>8.2f}%")
    print(f"top rung ({top} epochs): L2, effective rate, validation")
    reached = [row for row in rows if top in rung_values(row)]
    for row in sorted(reached, key=lambda r: -rung_values(r)[top]):
        l2 = float(row["param_l2"])
        dropout = f"  dropout {float(row['param_dropout']):.2f}" if "param_dropout" in row else ""
        direct = "  direct" if len(rungs) > 1 and set(rung_values(row)) == {top} else ""
        print(
            f"  trial {row['number']:>3}: L2 {l2:8.2e}{dropout}  rate {effective_rate(row):6.3f}"
            f"  {100 * rung_values(row)[top]:.2f} %{direct}"
        )
    reference = folder / "reference.json"
    if reference.exists():
        ref = json.loads(reference.read_text())
        print(f"  reference row: {100 * ref['val_acc']:.2f} % at {ref['epochs']} epochs")
    best = folder / "best.json"
    if best.exists():
        pick = json.loads(best.read_text())
        ref = pick.get("reference") or {}
        verdict = (
            f"; reference {100 * ref['val_acc']:.2f} %, "
            f"{'at least' if pick['val_acc'] >= ref['val_acc'] else 'below'} it"
            if "val_acc" in ref
            else ""
        )
        print(
            f"pick: trial {pick['number']} at {pick['epochs']} epochs, "
            f"{100 * pick['val_acc']:.2f} %{verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="tuning stage folders")
    for folder in parser.parse_args().folders:
        review(folder)


if __name__ == "__main__":
    main()
