"""Which scheduler, trial count and rungs the tuner should use: whole studies, compared on
validation only.

Runs ``hyperparam_tuning`` once per protocol (a fresh SQLite study each, on the 50,000 / 10,000
split of ``--seed``, one worker, one thread) and prints, per protocol, the seconds the study took,
the best validation accuracy and its setting and length, the reference row's validation
accuracy (the hand recipe trained with the same protocol), and how many trials reached each
rung. The test set is never read. The protocols run one after another in one process, so their
seconds are comparable with each other (not with another machine's).

A protocol is ``pruner:trials:rungs[:bracket[:direct]]``, e.g. ``asha:18:2,6,18`` (the protocol
before brackets), ``sha:54:6,18,54:27:0`` or ``sha:60:6,18,54:27:6`` (the last 6 trials trained
straight to the top rung). Left out, ``bracket`` and ``direct`` take ``TuneConfig``'s defaults.

    .venv/bin/python benchmarks/tune_pilot.py --space plain asha:18:2,6,18 sha:54:2,6,18
    .venv/bin/python benchmarks/tune_pilot.py --space variant sha:27:4,12,36 --out /tmp/pilot
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fashionlab.data import load_train_val
from fashionlab.experiments.classifier import TuneConfig, hyperparam_tuning
from fashionlab.threads import pin_threads


def protocol(text: str) -> dict:
    parts = text.split(":")
    if len(parts) not in (3, 4, 5):
        raise SystemExit(
            f"error: a protocol is pruner:trials:rungs[:bracket[:direct]], got {text!r}"
        )
    config = {
        "pruner": parts[0],
        "n_trials": int(parts[1]),
        "epochs": tuple(int(r) for r in parts[2].split(",")),
    }
    if len(parts) >= 4:
        config["bracket"] = int(parts[3])
    if len(parts) == 5:
        config["direct"] = int(parts[4])
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocols", nargs="+", help="pruner:trials:rungs[:bracket[:direct]]")
    parser.add_argument("--space", choices=("plain", "variant"), default="plain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--bootstrap", type=int, default=0, help="TuneConfig.bootstrap (asha only; default 0)"
    )
    parser.add_argument("--out", type=Path, default=None, help="keep the studies here")
    args = parser.parse_args()
    pin_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="tune-pilot-"))
    splits = load_train_val(10_000, seed=args.seed)
    rows = []
    for text in args.protocols:
        config = TuneConfig(
            space=args.space,
            seed=args.seed,
            threads=1,
            bootstrap=args.bootstrap,
            **protocol(text),
        )
        folder = out / f"{args.space}-{text.replace(':', '_').replace(',', '-')}-seed{args.seed}"
        start = time.perf_counter()
        result = hyperparam_tuning(folder, config, splits=splits)
        seconds = time.perf_counter() - start
        trials = json.loads((folder / "trials.json").read_text())["trials"]
        reached = {
            r: sum(str(r) in t["intermediate_values"] for t in trials) for r in config.epochs
        }
        row = {
            "protocol": text,
            "seconds": round(seconds, 1),
            "best_val": result.best["value"],
            "epochs": result.best["epochs"],
            "reference_val": (result.reference or {}).get("val_acc"),
            "reached": reached,
            "pick": result.best["searched"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{args.space} space, split seed {args.seed} (studies in {out})")
    print(f"{'protocol':<24}{'seconds':>9}{'best val':>10}{'epochs':>8}{'reference':>11}  reached")
    for row in rows:
        print(
            f"{row['protocol']:<24}{row['seconds']:>9.1f}{row['best_val']:>10.4f}"
            f"{row['epochs']:>8}{row['reference_val'] or float('nan'):>11.4f}  {row['reached']}"
        )


if __name__ == "__main__":
    main()
