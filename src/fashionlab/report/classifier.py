"""Problem 2 of the report: the tuning protocol, its pictures, the pick beside the reference row
(validation and test, mean ± std over seeds), the variant; the trial tables for the appendix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..experiments.classifier.export import NOT_RECORDED
from ..experiments.classifier.retrain import format_last_iterations
from .common import load as _load
from .common import missing as _missing
from .common import stage_figure as _fig
from .common import test_accuracy_text
from .markup import esc, figure_label, num, string, table

__all__ = ["classifier", "tuning_appendix"]


def _console(text: str) -> str:
    """Lines as a terminal shows them."""
    return (
        '#block(fill: rgb("#1d1f21"), inset: 7pt, radius: 3pt, width: 100%, breakable: false)'
        f'[#set text(size: 8pt, fill: rgb("#e6e6e6"))\n#raw({string(text)}, block: true)]\n'
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
    header = ["#", "state", *(f"val acc {r} ep." for r in rungs), *searched, "s"]
    return table(header, rows, size="6.5pt")


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


def _protocol(best: dict[str, Any]) -> str:
    cfg = best["config"]
    rungs = ", ".join(str(r) for r in cfg["epochs"])
    correlation = best.get("rank_correlation") or {}
    rho = correlation.get("spearman")
    rho_text = (
        f"Spearman's rank correlation between the {correlation['first_rung']}- and "
        f"{correlation['top_rung']}-epoch values of the {correlation['trials']} trials that "
        f"reached the top rung is *{rho:.2f}*"
        if rho is not None
        else f"Too few trials ({correlation.get('trials', 0)}) reached the top rung for a rank "
        "correlation"
    )
    bootstrap = cfg.get("bootstrap", 0)
    pruning = (
        f"asynchronous successive halving (a trial goes on past a rung only while its value is in "
        f"the top 1/{cfg['eta']} of the values at that rung so far"
        + (
            f"; the first {bootstrap} trials to reach a rung stop there and only set the bar, "
            "so that early trials are not promoted for want of competitors)"
            if bootstrap
            else ")"
        )
        if cfg["pruner"] == "asha"
        else "no pruning (every trial runs every rung)"
    )
    enqueued = (
        f"{len(cfg['enqueue'])} setting(s) were enqueued by the user."
        if cfg.get("enqueue")
        else "Nothing was enqueued."
    )
    return (
        f"`hyperparam_tuning` is a multi-fidelity Optuna study (TPE sampler, seed {cfg['seed']}) "
        f"whose fidelity is the training length: rungs of {rungs} epochs, with {pruning}. Every "
        f"rung trains on all {num(best['train_examples'])} images of the training part and is "
        f"scored on the {num(best['val_examples'])} validation images forked from the 60,000 "
        "training images (stratified, seeded); the test set is never read while tuning. The "
        "learning rate follows a warmup-stable-decay schedule: a trial trains one trunk at its "
        "constant learning rate and, before each rung, forks a copy that decays the rate linearly "
        f"to 0 over the last {num(100 * cfg['decay'], 3)} % of the rung's epochs. A rung's value "
        "is therefore exactly the validation accuracy of a finished run of that length, and the "
        "number of epochs is chosen on validation with the rest of the setting: the pick is the "
        f"best (trial, rung) pair. {enqueued} The hand recipe is the reference row below, trained "
        f"with the same protocol outside the study. {rho_text}.\n\n"
    )


def _figures(run_dir: Path, stage: str) -> str:
    out = []
    for stem, caption in (
        (
            "tuning_curves",
            "Validation accuracy of every trial at each rung it reached (the value of a finished "
            "run of that many epochs); pruned trials end early. The star marks the pick.",
        ),
        ("tuning_best", "The best rung value so far against the trial number."),
        (
            "tuning_importance",
            "Parameter importances of the study (Optuna's fANOVA on the trial values).",
        ),
    ):
        if any((run_dir / stage / f"{stem}{s}").is_file() for s in (".pdf", ".png")):
            out.append(_fig(run_dir, stage, stem, caption))
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
        (f"{label}: reference row", reference, ref_test),
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


def _retrain_text(run_dir: Path, stage: str, label: str, last20: str | None = None) -> str:
    """The retrain of one model; ``last20``: the heading (markup) above its last-20 figure."""
    test = _load(run_dir, f"{stage}/test.json")
    if test is None:
        return _missing(stage)
    train = test["train"]
    seeds = len(test["seeds"])
    return (
        f"The {label} pick, *{esc(test['model_name'])}*, is retrained as the study chose it on all "
        f"{num(test['train_examples'])} training images (training and validation part) for the "
        f"{test['epochs']} epochs chosen on validation (the same number of epochs, so 1.2 times "
        f"the SGD steps of the scored run): learning rate {num(train['lr'], 3)}, batch "
        f"{train['batch_size']}, momentum {num(train['momentum'], 2)}, L2 {num(train['l2'], 3)} "
        f"on the weight matrices, {esc(train['schedule'])} schedule; {num(test['steps'])} SGD "
        f"steps per seed. {seeds} seed{'s' if seeds > 1 else ''}, each tested once on the "
        f"{num(test['test_examples'])} test images: *test accuracy {test_accuracy_text(test)}*"
        + (" (mean ± sample standard deviation over the seeds)" if seeds > 1 else "")
        + f" (code: @lst-run-classifier). Its last {len(test['last20_losses'])} SGD iterations: "
        f"#answered(<{figure_label(f'/{stage}/last20.pdf')}>, []) and the console below it.\n\n"
        + (f"{last20}\n" if last20 else "")
        + _fig(
            run_dir,
            stage,
            "last20",
            f"Training loss (unregularized cross-entropy) of the last "
            f"{len(test['last20_losses'])} SGD iterations of the {label} model (seed "
            f"{test['last20_seed']}), steps {test['last20_steps'][0]}–{test['last20_steps'][-1]} "
            "(code: @lst-plot-last-iterations). The console block after it: the same values as "
            "the terminal printed them.",
        )
        + _console(format_last_iterations(test))
    )


def classifier(run_dir: Path) -> str:
    out = [
        "= Problem 2 — An MLP classifier, tuned on a validation split\n",
        "== The network, SGD with L2, and hyperparam_tuning <p2-1>\n",
        "The MLP (@lst-mlp) is trained by minibatch SGD whose L2 term touches the weight matrices "
        "only (@lst-penalised-parameters, @lst-sgd; the loop: @lst-train-epochs). "
        "`hyperparam_tuning` (@lst-hyperparam-tuning) searches the space of @lst-suggest-params "
        "with the objective of @lst-objective.\n\n",
    ]
    best = _load(run_dir, "tune/best.json")
    if best is None:
        return "".join(out) + _missing("tune")
    out.append(_protocol(best))
    counts = best["counts"]
    out.append(
        f"The plain space: hidden layers {{3, 4, 5}}, units {{30, 40, 50}}, learning rate, "
        f"minibatch size {{16, ..., 256}}, L2 strength on the weight matrices, momentum — and the "
        f"number of epochs. Trials: {counts.get('complete', 0)} complete, "
        f"{counts.get('pruned', 0)} pruned, {counts.get('fail', 0)} failed; the pick is trial "
        f"{best['number']} after {best['epochs']} epochs, validation accuracy "
        f"{num(best['val_acc'], 4, percent=True)}.{_sharing(best)} The full trial table is in "
        "the appendix.\n\n"
    )
    out.append(_figures(run_dir, "tune"))
    out.append("\n== The pick, retrained and tested <p2-2>\n")
    out.append(
        _retrain_text(
            run_dir,
            "classifier",
            "plain",
            "== The last 20 iterations and the test accuracy <p2-3>",
        )
    )
    out.append("\n== A better variant <p2-4>\n")
    vbest = _load(run_dir, "tune_variant/best.json")
    if vbest is not None:
        out.append(
            "A second study with the same protocol searched BatchNorm, Dropout and the activations "
            "ReLU, LeakyReLU, ELU and PReLU, with 2–3 hidden layers of 128–512 units; "
            f"{vbest['counts'].get('finished', 0)} trials, pick: trial {vbest['number']} after "
            f"{vbest['epochs']} epochs, validation accuracy "
            f"{num(vbest['val_acc'], 4, percent=True)}.{_sharing(vbest)}\n\n"
        )
    out.append(_retrain_text(run_dir, "variant", "variant"))
    rows = _rows(run_dir, "tune", "classifier", "plain") + _rows(
        run_dir, "tune_variant", "variant", "variant"
    )
    if rows:
        out.append(
            "\nThe search's picks beside the reference rows (a person's recipes, trained with "
            "the same protocol, their length chosen the same way):\n\n"
            + table(["model", "name", "epochs", "validation accuracy", "test accuracy"], rows)
        )
    plain, variant = _load(run_dir, "classifier/test.json"), _load(run_dir, "variant/test.json")
    if plain and variant:
        gap = variant["test_accuracy"] - plain["test_accuracy"]
        spread = max(plain["test_accuracy_std"], variant["test_accuracy_std"])
        verdict = (
            "more than the larger seed standard deviation"
            if gap > spread
            else "not more than the larger seed standard deviation"
        )
        if len(plain["seeds"]) < 2 or len(variant["seeds"]) < 2:
            verdict = "with one seed each, so the seed spread is not measured"
        out.append(
            f"\nThe variant's mean test accuracy differs from the plain model's by "
            f"{100 * gap:+.2f} points, {verdict} ({100 * spread:.2f} points).\n"
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
    spread = (
        f" Between seeds, the plain pick's retrains differ by "
        f"{num(100 * test['test_accuracy_std'], 2)} points (standard deviation), so a difference "
        "of that size between two arms says nothing."
        if test and len(test.get("seeds", [])) > 1 and len(seeds) == 1
        else ""
    )
    return (
        "\nThe variant is wider as well as regularised differently. A short ablation at the plain "
        f"pick's width and length ({ablation['epochs']} epochs, {len(seeds)} "
        f"seed{'s' if len(seeds) > 1 else ''}, scored on the "
        f"{num(ablation['val_examples'])} validation images) adds BatchNorm alone, or Dropout "
        f"alone.{reused}{spread}\n\n" + table(["arm", "change", "validation accuracy"], rows)
    )


def tuning_appendix(run_dir: Path) -> str:
    """The full trial tables of both studies (also in trials.csv)."""
    out = []
    for stage, label in (("tune", "plain"), ("tune_variant", "variant")):
        trials = _load(run_dir, f"{stage}/trials.json")
        if trials:
            out.append(f"\n== All trials of the {label} study\n" + _trials_table(trials))
    if not out:
        return ""
    return "= Appendix — tuning trials\n" + "".join(out)
