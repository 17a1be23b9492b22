"""What longer runs give on validation: WSD runs of growing length of a few settings, one seed.

For the tuning protocol's top rung and the run's time budget: trains each setting once with the
study's protocol (the 50,000 / 10,000 split of seed 0, one trunk, a decay branch per length, as
``experiments/classifier/tuning/rungs.py``) and prints its validation accuracy at every length,
with the seconds it took. Nothing is chosen from it inside the package; the test set is not read.

Settings: ``plain-reference`` and ``variant-reference`` (the reference rows, ``space.REFERENCE``),
``variant-512`` (the variant reference at 512 units, dropout 0.3), or the pick of a study (the
path of its best.json). The model-epoch cost of a 3-seed retrain at each length follows from the
seconds printed.

    .venv/bin/python benchmarks/rung_lengths.py                          # the three above
    .venv/bin/python benchmarks/rung_lengths.py runs/default/tune/best.json --lengths 18,36,54
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fashionlab.data import load_train_val
from fashionlab.experiments.classifier.space import REFERENCE, settings_from_params
from fashionlab.experiments.classifier.tuning.rungs import train_rungs
from fashionlab.models import MLP, model_name
from fashionlab.runtime import seed_everything
from fashionlab.threads import pin_threads

NAMED = {
    "plain-reference": REFERENCE["plain"],
    "variant-reference": REFERENCE["variant"],
    "variant-512": REFERENCE["variant"] | {"units": 512, "dropout": 0.3},
}


def setting(name: str) -> dict:
    if name in NAMED:
        return {"activation": "relu", "batchnorm": False, "dropout": 0.0, **NAMED[name]}
    best = json.loads(Path(name).read_text())
    return {k: v for k, v in best["params"].items() if k != "epochs"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="*", default=list(NAMED), help="names or best.json")
    parser.add_argument("--lengths", default="18,36,54", help="run lengths in epochs")
    parser.add_argument("--decay", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    pin_threads(1)
    train, val = load_train_val(10_000, seed=0)
    print(f"{'setting':<20} {'model':<28} " + " ".join(f"{r:>4} ep" for r in lengths) + "  seconds")
    for name in args.settings:
        params = setting(name) | {"schedule": "wsd", "decay": args.decay}
        model_config, train_config = settings_from_params(
            params, seed=args.seed, epochs=lengths[-1]
        )
        seed_everything(train_config.seed)
        model = MLP(**model_config)
        start = time.perf_counter()
        result = train_rungs(model, train, train_config, lengths, val=val)
        seconds = time.perf_counter() - start
        accs = " ".join(f"{100 * result.values[r][0]:6.2f}" for r in lengths if r in result.values)
        print(f"{Path(name).name:<20} {model_name(model_config):<28} {accs}  {seconds:7.1f}")


if __name__ == "__main__":
    main()
