"""Problem 2 of the report: the tuning protocol, its pictures, the pick beside the reference row
(validation and test, mean ± std over seeds), the variant; the trial tables for the appendix."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from ..experiments.classifier.config import split_evenly
from ..experiments.classifier.space import FloatRange, search_space
from ..experiments.classifier.stage import format_last_iterations
from ..experiments.classifier.tuning.export import NOT_RECORDED
from ..experiments.classifier.tuning.figures import best_floor, curves_floor
from .common import load as _load
from .common import missing as _missing
from .common import stage_figure as _fig
from .common import test_accuracy_text
from .markup import esc, num, string, table

__all__ = ["classifier", "tuning_appendix"]


def _console(text: str) -> str:
    """Lines as a terminal shows them."""
    return (
        '#block(fill: rgb("#1d1f21"), inset: 7pt, radius: 3pt, width: 100%, breakable: true)'
        f'[#set text(size: 8pt, fill: rgb("#e6e6e6"))\n#show raw: set text(size: 7.5pt)\n'
        f"#raw({string(text)}, block: true)]\n"
    )


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "—" if value is None else str(value)


def _trials_table(trials: dict[str, Any]) -> str:
    searched = sorted({k for t in trials["trials"] for k in t.get("params", {})})
    rungs = sorted({int(r) for t in trials["trials"] for r in t.get("intermediate_values", {})})
    rows = []
    for t in trials["trials"]:
        attrs = t.get("user_attrs", {})
        values = {int(k): v for k, v in t.get("intermediate_values", {}).items()}
        state = t["state"] + (" (diverged)" if attrs.get("diverged") else "")
        rows.append(
            [
                t["number"],
                state,
                *(num(values.get(r), 4) for r in rungs),
                *(_short(t["params"].get(k)) for k in searched),
                num(t.get("duration_s"), 3),
            ]
        )
    short = {
        "hidden_layers": "layers",
        "batch_size": "batch",
        "batchnorm": "BN",
        "momentum": "mom.",
    }
    header = [
        "#",
        "state",
        *(f"val acc {r} ep." for r in rungs),
        *(short.get(k, k) for k in searched),
        "s",
    ]
    return table(header, rows, size="7pt")


def _sharing(best: dict[str, Any]) -> str:
    """A sentence on the trials that other runs wrote into a shared study (best.json's ``runs``),
    or nothing when this run wrote them all."""
    runs = best.get("runs") or {}
    by_run = runs.get("trials", {})
    others, unnamed = runs.get("by_others", 0), runs.get("not_recorded", 0)
    if not others and not unnamed:
        return ""
    this = runs.get("this")
    named = ", ".join(
        f"{esc(name)} ({count})"
        for name, count in by_run.items()
        if name not in (this, NOT_RECORDED)
    )
    parts = [f"{others} by other runs sharing it ({named})"] if others else []
    if unnamed:
        parts.append(f"{unnamed} by runs not recorded (an older version)")
    text = (
        f" Of the study's {sum(by_run.values())} trials that ran, {by_run.get(this, 0)} were "
        f"written by this run, {' and '.join(parts)}"
    )
    writer = best.get("written_by")
    if writer is not None and writer != this:
        text += f"; the pick is a trial of {esc(writer)}"
    return text + "."


def _span(values: tuple[int, ...]) -> str:
    """'6' when all are 6, else '6-7'."""
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def _direct_text(cfg: dict[str, Any]) -> str:
    """The direct brackets and the rounds of a ``sha`` study, as a clause ('' if none)."""
    direct, rounds, top = cfg.get("direct"), cfg.get("rounds") or 1, cfg["epochs"][-1]
    if not direct:
        return ""
    if rounds == 1:
        return (
            f"; the last {direct} trials are a bracket of their own trained straight to {top} "
            "epochs, so that settings that need the length are scored at it"
        )
    trials, directs = split_evenly(cfg["n_trials"], rounds), split_evenly(direct, rounds)
    return (
        f"; the study runs in {rounds} rounds of {_span(trials)} trials, each ending with a "
        f"bracket of {_span(directs)} trained straight to {top} epochs, "
        "so that settings that need the length are scored at it; a later round's sampler knows "
        "the earlier rounds' values"
    )


def _protocol(best: dict[str, Any]) -> str:
    cfg = best["config"]
    rungs = ", ".join(str(r) for r in cfg["epochs"])
    pruning = {
        "asha": f"a trial goes on to the next rung only while its value is in the top "
        f"1/{cfg['eta']} of the values at that rung so far (asynchronous successive halving)",
        "sha": f"the trials are asked in brackets of {cfg.get('bracket')} and trained together "
        f"as populations; once every trial of a bracket has its value at a rung, the top "
        f"1/{cfg['eta']} of the bracket go on to the next (synchronous successive halving)"
        + _direct_text(cfg),
    }.get(cfg["pruner"], "every trial runs every rung")
    return (
        "`hyperparam_tuning` (@lst-suggest-params, @lst-bracket--score, @lst-promoted) is an "
        f"Optuna study (TPE sampler, seed {cfg['seed']}). The "
        f"{num(best['val_examples'])} validation images are a stratified, seeded part of the "
        f"60,000 training images (@lst-load-train-val); a trial trains on the other "
        f"{num(best['train_examples'])} and is scored on them; the test set is never read while "
        f"tuning. The number of epochs is searched too: each trial is scored after {rungs} "
        f"epochs (its learning rate decays linearly to 0 over the last "
        f"{num(100 * cfg['decay'], 3)} % of each length, so every value is that of a finished "
        f"run), and {pruning}. The pick is the best (trial, epochs) pair on validation "
        "(@lst-best-pair).\n\n"
    )


def _clipped(trials: dict[str, Any] | None) -> tuple[int, int]:
    """How many trials have values under the lower edge of the tuning curves, and of the
    best-so-far figure (the figures' own limits, :mod:`...classifier.tuning.figures`)."""
    if not trials:
        return 0, 0
    finished = [
        [100 * v for v in t.get("intermediate_values", {}).values()]
        for t in trials["trials"]
        if t["state"] in ("COMPLETE", "PRUNED")
    ]
    finished = [values for values in finished if values]
    tops = [v for values in finished for v in values]
    if not tops:
        return 0, 0
    floor = curves_floor(tops)
    bests = [max(values) for values in finished]
    best_so_far = list(itertools.accumulate(bests, max))
    return (
        sum(min(values) < floor for values in finished),
        sum(b < best_floor(best_so_far) for b in bests),
    )


def _figures(run_dir: Path, stage: str) -> str:
    curves, _ = _clipped(_load(run_dir, f"{stage}/trials.json"))

    def below(n: int) -> str:
        return (
            f" {n} trial{'s' if n != 1 else ''} with lower values lie below the y-axis."
            if n
            else ""
        )

    out = []
    for stem, caption in (
        (
            "tuning_curves",
            "Validation accuracy of each trial after each number of epochs it reached; pruned "
            "trials end early. The star marks the pick." + below(curves),
        ),
    ):
        if any((run_dir / stage / f"{stem}{s}").is_file() for s in (".pdf", ".png")):
            out.append(_fig(run_dir, stage, stem, caption, placement="auto"))
    return "".join(out)


def _rows(run_dir: Path, tune: str, stage: str, label: str) -> list[list[str]]:
    """The pick and the reference row of one space: validation and test side by side."""
    best, reference = _load(run_dir, f"{tune}/best.json"), _load(run_dir, f"{tune}/reference.json")
    test, ref_test = (
        _load(run_dir, f"{stage}/test.json"),
        _load(run_dir, f"{stage}/reference/test.json"),
    )
    rows = []
    for name, val, tested in (
        (f"{label}: the search's pick", best, test),
        (f"{label}: reference row (by hand)", reference, ref_test),
    ):
        if val is None:
            continue
        rows.append(
            [
                name,
                tested["model_name"] if tested else "—",
                str(val["epochs"]),
                num(val["val_acc"], 4, percent=True),
                test_accuracy_text(tested) if tested else "—",
            ]
        )
    return rows


def _space_text(space: str) -> str:
    """The searched values of ``space``, read from the space itself."""
    names = {
        "hidden_layers": "hidden layers",
        "units": "units",
        "lr": "learning rate",
        "effective_lr": "effective learning rate lr/(1 − momentum)",
        "batch_size": "minibatch size",
        "l2": "L2 strength",
        "momentum": "momentum",
        "activation": "activation",
        "batchnorm": "BatchNorm",
        "dropout": "dropout",
    }
    parts = []
    for key, allowed in search_space(space).items():
        if isinstance(allowed, FloatRange):
            scale = "log-uniform " if allowed.log else ""
            low, high = (f"{x:g}".replace("e-0", "e-") for x in (allowed.low, allowed.high))
            shown = f"{scale}{low}–{high}"
        else:
            shown = "{" + ", ".join(esc(str(v)).replace("_", " ") for v in allowed) + "}"
        parts.append(f"{names.get(key, key)} {shown}")
    return ", ".join(parts)


def _comparison(run_dir: Path, tune: str, stage: str, label: str) -> str:
    rows = _rows(run_dir, tune, stage, label)
    if not rows:
        return ""
    out = table(["model", "name", "epochs", "validation accuracy", "test accuracy"], rows)
    best, reference = _load(run_dir, f"{tune}/best.json"), _load(run_dir, f"{tune}/reference.json")
    if best is not None and reference is not None:
        # from the printed (rounded) values, so that the sentence agrees with the table
        gap = round(100 * best["val_acc"], 2) - round(100 * reference["val_acc"], 2)
        if gap >= 0:
            out += (
                f"\nOn validation, the {label} search's pick scores {gap:.2f} points "
                "above the hand recipe.\n"
            )
        else:
            out += (
                f"\n*The hand recipe beats the {label} search on validation* by {-gap:.2f} "
                "points: the search did not find a setting as good as a person's.\n"
            )
    return out


def _retrain_text(run_dir: Path, stage: str, label: str, last20: bool = True) -> str:
    """The retrain of one model and its test accuracy; ``last20``: with the figure and the
    console of its last 20 iterations."""
    test = _load(run_dir, f"{stage}/test.json")
    if test is None:
        return _missing(stage)
    train = test["train"]
    seeds = len(test["seeds"])
    first = test["last20_seed"]
    accuracies = test.get("test_accuracies") or [test["test_accuracy"]]
    return (
        f"The {label} pick, *{esc(test['model_name'])}*, is retrained on all "
        f"{num(test['train_examples'])} training images for its {test['epochs']} epochs "
        f"(learning rate {num(train['lr'], 3)}, batch {train['batch_size']}, momentum "
        f"{num(train['momentum'], 2)}, L2 {num(train['l2'], 3)}; {num(test['steps'])} SGD steps) "
        f"with {seeds} seed{'s' if seeds > 1 else ''}, each tested once on the "
        f"{num(test['test_examples'])} test images (@lst-run-classifier). "
        + ("The figure and the console show seed" if last20 else "Seed")
        + f" {first}: test accuracy *{100 * accuracies[0]:.2f} %*"
        + (
            f"; over the {seeds} seeds, *{test_accuracy_text(test)}* (mean ± sample standard "
            "deviation)."
            if seeds > 1
            else "."
        )
        + "\n\n"
        + (
            ""
            if not last20
            else _fig(
                run_dir,
                stage,
                "last20",
                f"Training loss (unregularized cross-entropy) of the last "
                f"{len(test['last20_losses'])} SGD iterations of the {label} model, seed "
                f"{first}, steps {test['last20_steps'][0]}–{test['last20_steps'][-1]}. Below: "
                "the same values as the terminal printed them.",
            )
            + _console(format_last_iterations(test))
        )
    )


def classifier(run_dir: Path) -> str:
    out = ["= Problem 2 — An MLP classifier, tuned on a validation split\n"]
    best = _load(run_dir, "tune/best.json")
    if best is None:
        return "".join(out) + _missing("tune")
    plain = _load(run_dir, "classifier/test.json")
    counts = best["counts"]
    direct = best["config"].get("direct")  # absent in a study made before direct brackets
    tried = (
        f"*Tried:* {counts.get('complete', 0) + counts.get('pruned', 0)} settings of "
        f"{_space_text('plain')} and epochs ({counts.get('complete', 0)} ran to the longest "
        "length, "
        + (f"{direct} of them straight to it, " if direct else "")
        + f"{counts.get('pruned', 0)} were stopped early). *Chosen on validation:* trial "
        f"{best['number']} after {best['epochs']} epochs, validation accuracy "
        f"{num(best['val_acc'], 4, percent=True)}.{_sharing(best)} "
    )
    if plain:
        tried += (
            f"*Test accuracy* of {esc(plain['model_name'])}, retrained on all 60,000 training "
            "images: "
            + ("mean ± std " if len(plain["seeds"]) > 1 else "")
            + f"*{test_accuracy_text(plain)}*. Beside it, a setting chosen by hand and "
            "trained the same way:\n\n"
        )
    out.append(tried + _comparison(run_dir, "tune", "classifier", "plain"))
    out.append(
        "\n== The network, its cost and SGD with L2 <p2-1>\n"
        "The MLP (@lst-mlp) maps 784 pixels through ReLU layers to 10 logits; the cost is the "
        'softmax cross-entropy $f_"CE"$ of the logits (@lst-stackedstep--loss-and-grads) plus '
        "$lambda/2 sum_l ||W_l||^2$ on the weight matrices only (biases unpenalised): SGD adds "
        "$lambda W_l$ to their gradients (@lst-stackedstep--update) in the minibatch loop of "
        "@lst-population--train-epoch.\n"
    )
    out.append("\n== hyperparam_tuning <p2-2>\n")
    out.append(_protocol(best))
    out.append(_figures(run_dir, "tune"))
    out.append("\n== The last 20 iterations and the test accuracy <p2-3>\n")
    out.append(_retrain_text(run_dir, "classifier", "plain"))
    out.append("\n== Bonus: a better network <p2-4>\n")
    vbest = _load(run_dir, "tune_variant/best.json")
    if vbest is not None:
        out.append(
            "A second study with the same protocol searched BatchNorm, Dropout and the activations "
            "ReLU, LeakyReLU, ELU and PReLU, with 2–3 hidden layers of 128–512 units: "
            f"{vbest['counts'].get('finished', 0)} trials"
            + (
                f" ({vdirect} of them trained straight to {vbest['config']['epochs'][-1]} epochs)"
                if (vdirect := vbest["config"].get("direct"))
                else ""
            )
            + f"; pick: trial {vbest['number']} after "
            f"{vbest['epochs']} epochs, validation accuracy "
            f"{num(vbest['val_acc'], 4, percent=True)}.{_sharing(vbest)}\n\n"
        )
    out.append(_retrain_text(run_dir, "variant", "variant", last20=False))
    out.append("\n" + _comparison(run_dir, "tune_variant", "variant", "variant"))
    variant = _load(run_dir, "variant/test.json")
    if plain and variant:
        # the difference of the printed (rounded) means, so that it agrees with what is shown
        gap = round(100 * variant["test_accuracy"], 2) - round(100 * plain["test_accuracy"], 2)
        spread = max(plain["test_accuracy_std"], variant["test_accuracy_std"])
        verdict = (
            "more than the larger seed standard deviation"
            if abs(gap) > round(100 * spread, 2)
            else "within seed noise: not more than the larger seed standard deviation"
        )
        if len(plain["seeds"]) < 2 or len(variant["seeds"]) < 2:
            verdict = "with one seed each, so the seed spread is not measured"
        out.append(
            f"\nThe variant's mean test accuracy differs from the plain model's by "
            f"{gap:+.2f} points, {verdict} ({100 * spread:.2f} points).\n"
        )
    out.append(_ablation(run_dir))
    return "".join(out)


def _ablation(run_dir: Path) -> str:
    ablation = _load(run_dir, "classifier/ablation.json")
    if ablation is None:
        return ""
    arms = ablation["arms"]
    rows = [
        [
            name,
            ", ".join(f"{k} {v}" for k, v in arm["change"].items()) or "—",
            num(arm["val_accuracy"], 4, percent=True),
        ]
        for name, arm in arms.items()
    ]
    seeds = ablation["seeds"]
    reused = (
        f" The plain arm is the study's own run of the pick (seed {seeds[0]}), read from the "
        "study, not trained again; the other arms train with the same seed."
        if arms.get("plain", {}).get("from_study")
        else ""
    )
    test = _load(run_dir, "classifier/test.json")
    return (
        "\nThe variant is wider as well as regularised differently. A short ablation at the plain "
        f"pick's width and length ({ablation['epochs']} epochs, {len(seeds)} "
        f"seed{'s' if len(seeds) > 1 else ''}, scored on the "
        f"{num(ablation['val_examples'])} validation images) adds BatchNorm alone, or Dropout "
        f"alone.{reused} "
        + _ablation_verdict(arms, test, _load(run_dir, "variant/test.json"))
        + "\n\n"
        + table(["arm", "change", "validation accuracy"], rows)
    )


def _ablation_verdict(
    arms: dict[str, Any], plain: dict[str, Any] | None, variant: dict[str, Any] | None
) -> str:
    """What the ablation shows, from its printed values and the plain pick's seed spread."""
    if "plain" not in arms or len(arms) < 2:
        return ""
    base = round(100 * arms["plain"]["val_accuracy"], 2)
    gains = {
        name: round(100 * arm["val_accuracy"], 2) - base
        for name, arm in arms.items()
        if name != "plain"
    }
    best = max(gains, key=gains.__getitem__)
    if plain is None or len(plain.get("seeds", [])) < 2:
        return f"The best arm, {esc(best)}, differs from plain by {gains[best]:+.2f} points."
    spread = round(100 * plain["test_accuracy_std"], 2)
    if gains[best] > spread:
        return (
            f"{esc(best)} alone adds {gains[best]:+.2f} points, more than the seeds' spread "
            f"({spread:.2f} points): part of the variant's gain can come from it."
        )
    other = []
    if variant is not None and plain is not None:
        v, q = variant.get("model", {}), plain.get("model", {})
        if v.get("units") != q.get("units") or v.get("hidden_layers") != q.get("hidden_layers"):
            other.append("its width")
        if v.get("activation") != q.get("activation"):
            other.append(f"its activation ({esc(v.get('activation'))})")
    rest = " and ".join(other) if other else "its other changes"
    return (
        "*Conclusion:* neither BatchNorm nor Dropout alone raises the plain pick's validation "
        f"accuracy by more than the seeds' spread ({spread:.2f} points, the standard deviation of "
        f"its test accuracy); the variant's gain comes from {rest}."
    )


def tuning_appendix(run_dir: Path) -> str:
    """The full trial tables of both studies (also in trials.csv)."""
    out = []
    for stage, label in (("tune", "plain"), ("tune_variant", "variant")):
        trials = _load(run_dir, f"{stage}/trials.json")
        if trials:
            out.append(f"\n== All trials of the {label} study\n" + _trials_table(trials))
    return "".join(out)
