"""The report's sections: each reads its stage's files and returns Typst markup.

A section whose stage has not run returns a short note instead, so partial runs still build.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..experiments.classifier.retrain import format_last_iterations
from ..utils import read_json
from .cover import provenance, test_accuracy_text
from .listings import source_code
from .markup import TEXT_WIDTH_PT, esc, figure, figure_label, num, string, table, table_figure
from .pdfinfo import pdf_page_size

__all__ = ["SECTIONS"]


def _load(run_dir: Path, relative: str) -> Any | None:
    path = run_dir / relative
    return read_json(path) if path.is_file() else None


def _missing(stage: str) -> str:
    return (
        f"_The {esc(stage)} stage has not run in this run directory; run `fashionlab run` to fill "
        "this section._\n"
    )


def _fig(
    run_dir: Path,
    stage: str,
    stem: str,
    caption: str,
    width: str = "100%",
    placement: str | None = None,
) -> str:
    """Prefer the vector PDF of a figure, printed at its own width (the width it was drawn
    for, at most the text width); fall back to the PNG at ``width``. ``placement="auto"``:
    a float (see :func:`markup.figure`)."""
    pdf = run_dir / stage / f"{stem}.pdf"
    if pdf.is_file():
        natural, _ = pdf_page_size(pdf)
        printed = f"{min(natural, TEXT_WIDTH_PT):.2f}pt"
        return figure(f"/{stage}/{stem}.pdf", caption, printed, placement)
    if (run_dir / stage / f"{stem}.png").is_file():
        return figure(f"/{stage}/{stem}.png", caption, width, placement)
    return f"_Figure {esc(stem)} is missing._\n"


# --- problem 1 ------------------------------------------------------------------------------------


def heinit(run_dir: Path) -> str:
    out = ["= Problem 1 — He initialization\n"]
    if (run_dir / "report" / "derivation.typ").is_file():
        out.append('#[#set heading(offset: 1)\n#include "derivation.typ"\n]\n')
    results = _load(run_dir, "heinit/results.json")
    if results is None:
        return "".join(out) + _missing("heinit")
    z = results["z"]
    depth = results["depth"]
    out.append(
        f"== Depth experiment\nA batch of {num(depth['batch'])} Gaussian inputs goes through "
        f"{depth['depth']} layers of width {depth['width']}; @fig-heinit-depth-variance shows "
        "the variance of the pre-activations (forward) and of the gradients (backward) per layer: "
        "He keeps both within a small factor, as the conditions of @p1-cond predict; the others "
        "explode or vanish geometrically.\n"
    )
    out.append(
        _fig(
            run_dir,
            "heinit",
            "depth_variance",
            "Per-layer variance under He, Xavier/Glorot, N(0, 1) and N(0, 0.01²) initialization, "
            "for ReLU (top) and LeakyReLU with its gain 2/(1+a²) (bottom). Log scale.",
            placement="auto",
        )
    )
    out.append(
        f"== Numerical checks\n Each row of @tab-identities estimates both sides from "
        f"{num(results['identities'][0]['samples'])} draws; the interval is "
        f'$("lhs" - "rhs") plus.minus {num(z, 2)} dot "SE"$ (batch means). '
        "*holds* means the interval contains 0; *expected* says whether the derivation's "
        "assumptions hold in that case.\n"
    )
    out.append(
        _fig(
            run_dir,
            "heinit",
            "identities",
            "Each identity's (lhs − rhs) in standard errors, with the "
            f"±{num(z, 2)} SE band: the rows whose assumptions hold sit inside it, the broken ones "
            "far out.",
            placement="auto",
        )
    )
    rows = []
    for r in results["identities"]:
        rows.append(
            [
                r["step"],
                r["name"],
                r["case"],
                num(r["lhs"], 4),
                num(r["rhs"], 4),
                f"[{num(r['ci_low'], 3)}, {num(r['ci_high'], 3)}]",
                "yes" if r["holds"] else "NO",
                "holds" if r["expected_to_hold"] else "breaks",
            ]
        )
    out.append(
        table_figure(
            table(
                ["step", "identity", "case", "lhs", "rhs", "lhs − rhs ± z SE", "holds", "expected"],
                rows,
                size="7.5pt",
            ),
            "Both sides of every identity, by Monte Carlo; the steps are those of the derivation "
            "(@fig-heinit-identities shows the same rows in standard errors).",
            "tab-identities",
        )
    )
    krows = [
        [
            k["nonlinearity"],
            num(k["negative_slope"], 2),
            k["fan_in"],
            num(k["expected_var"], 4),
            num(k["empirical_var"], 4),
            f"[{num(k['ci_low'], 4)}, {num(k['ci_high'], 4)}]",
            "yes" if k["holds"] else "NO",
        ]
        for k in results.get("kaiming", [])
    ]
    if krows:
        out.append(
            table_figure(
                table(
                    [
                        "nonlinearity",
                        "a",
                        "fan-in",
                        "expected Var",
                        "empirical Var",
                        "interval",
                        "holds",
                    ],
                    krows,
                    size="8pt",
                ),
                "The variance of `torch.nn.init.kaiming_normal_` against $2 \\/ ((1 + a^2) n_l)$.",
                "tab-kaiming",
            )
        )
    return "".join(out)


# --- problem 2 ------------------------------------------------------------------------------------


def _trials_table(best: dict[str, Any], trials: dict[str, Any]) -> str:
    searched = sorted({k for t in trials["trials"] for k in t.get("params", {})})
    rows = []
    for t in trials["trials"]:
        attrs = t.get("user_attrs", {})
        state = t["state"] + (" (diverged)" if attrs.get("diverged") else "")
        rows.append(
            [
                t["number"],
                state,
                num(t.get("value"), 4),
                num(attrs.get("val_loss"), 4),
                *(_short(t["params"].get(k)) for k in searched),
                num(t.get("duration_s"), 3),
            ]
        )
    return table(["#", "state", "val acc", "val loss", *searched, "s"], rows, size="6.5pt")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "—" if value is None else str(value)


def _console(text: str) -> str:
    """Lines as a terminal shows them."""
    return (
        '#block(fill: rgb("#1d1f21"), inset: 7pt, radius: 3pt, width: 100%, breakable: false)'
        f'[#set text(size: 8pt, fill: rgb("#e6e6e6"))\n#raw({string(text)}, block: true)]\n'
    )


def _classifier_block(run_dir: Path, stage: str, label: str, last20: str | None = None) -> str:
    """The retrain of one model; ``last20``: the heading (markup) above its last-20 figure."""
    test = _load(run_dir, f"{stage}/test.json")
    if test is None:
        return _missing(stage)
    train = test["train"]
    return (
        f"The best {label} setting, *{esc(test['model_name'])}*, was retrained from scratch on "
        f"{num(test['train_examples'])} training images for {test['epochs']} epochs "
        f"(learning rate {num(train['lr'], 3)}, batch {train['batch_size']}, momentum "
        f"{num(train['momentum'], 2)}, L2 {num(train['l2'], 3)} on the weight matrices, "
        f"{esc(train['schedule'])} schedule; {num(test['steps'])} SGD steps), then tested once on "
        f"the {num(test['test_examples'])} test images: *test accuracy "
        f"{test_accuracy_text(test)}*, test loss {num(test['test_loss'], 4)} "
        f"(code: @lst-run-classifier). Its last {len(test['last20_losses'])} SGD iterations: "
        f"#answered(<{figure_label(f'/{stage}/last20.pdf')}>, []) and the console below it.\n\n"
        + (f"{last20}\n" if last20 else "")
        + _fig(
            run_dir,
            stage,
            "last20",
            f"Training loss (unregularized cross-entropy) of the last "
            f"{len(test['last20_losses'])} SGD iterations of the {label} model, steps "
            f"{test['last20_steps'][0]}–{test['last20_steps'][-1]} (code: "
            "@lst-plot-last-iterations). The console block after it: the same values as the "
            "terminal printed them.",
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
    trials = _load(run_dir, "tune/trials.json")
    if best is None or trials is None:
        return "".join(out) + _missing("tune")
    cfg = best["config"]
    out.append(
        f"`hyperparam_tuning` ran an Optuna study (TPE sampler, seed {cfg['seed']}, "
        f"{esc(cfg['pruner'])} pruning on the per-epoch validation accuracy) over the plain space: "
        f"hidden layers {{3, 4, 5}}, units {{30, 40, 50}}, learning rate, minibatch size, epochs, "
        f"L2 strength (and momentum). The objective is the accuracy on {num(best['val_examples'])} "
        "validation images forked from the 60,000 training images (stratified, seeded); each trial "
        f"trains on {num(best['train_examples'])} of the remaining images. The test set is never "
        "read while tuning. Trial 0 of a fresh study is a hand recipe enqueued before the search "
        "(`fashionlab.experiments.classifier.BASELINES`, chosen earlier on the same validation "
        "split), so the best trial is never worse than it. Trials: "
        f"{best['counts'].get('complete', 0)} complete, {best['counts'].get('pruned', 0)} pruned, "
        f"{best['counts'].get('fail', 0)} failed; the best is trial {best['number']} with "
        f"validation accuracy {num(best['val_acc'], 4, percent=True)}.\n\n"
    )
    out.append(_trials_table(best, trials))
    out.append("\n== The best setting, retrained and tested <p2-2>\n")
    out.append(
        _classifier_block(
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
            "A second study searched BatchNorm, Dropout and other activations (LeakyReLU, ELU, "
            f"PReLU) with wider layers; {vbest['counts'].get('finished', 0)} trials, best "
            f"validation accuracy {num(vbest['val_acc'], 4, percent=True)} (trial "
            f"{vbest['number']}).\n\n"
        )
    out.append(_classifier_block(run_dir, "variant", "variant"))
    plain, variant = _load(run_dir, "classifier/test.json"), _load(run_dir, "variant/test.json")
    if plain and variant:
        out.append(
            "\n"
            + table(
                ["model", "name", "test accuracy", "test loss", "epochs", "train images"],
                [
                    [
                        label,
                        t["model_name"],
                        num(t["test_accuracy"], 4, percent=True),
                        num(t["test_loss"], 4),
                        t["epochs"],
                        num(t["train_examples"]),
                    ]
                    for label, t in (("plain", plain), ("variant", variant))
                ],
            )
        )
        vtrials = _load(run_dir, "tune_variant/trials.json")
        if vtrials and vbest:
            out.append("\n#text(size: 9pt)[All variant trials:]\n" + _trials_table(vbest, vtrials))
    return "".join(out)


# --- problem 3 ------------------------------------------------------------------------------------


def landscape(run_dir: Path) -> str:
    out = ["= Problem 3 — The loss landscape along the SGD trajectory\n"]
    s = _load(run_dir, "landscape/landscape.json")
    if s is None:
        return "".join(out) + _missing("landscape")
    ev = s["explained_variance_ratio"]
    grid = s["grid"]
    train = s["config"]["train"]
    model = s["model"] if isinstance(s["model"], str) else s.get("model_config", s["model"])
    out.append(
        f"A {esc(str(model))} ({num(s['n_params'])} parameters) was trained with minibatch SGD on "
        f"{num(s['train_examples'])} training images ({train['epochs']} epochs, batch "
        f"{train['batch_size']}, learning rate {num(train['lr'], 3)}), keeping {s['n_snapshots']} "
        "flattened parameter snapshots along the way. PCA of the snapshots minus the final "
        "parameters gives two orthonormal directions $d_1, d_2$ that explain "
        f"{num(ev[0], 3, percent=True)} and {num(ev[1], 3, percent=True)} of the trajectory's "
        "variance. The surface is the unregularized cross-entropy "
        '$f_"CE" lr((theta_"final" + a d_1 + b d_2))$ on a fixed, seeded subset of '
        f"{num(s['eval_examples'])} training images, on a {grid['resolution']} × "
        f"{grid['resolution']} grid ($a in [{num(grid['a_min'], 3)}, {num(grid['a_max'], 3)}]$, "
        f"$b in [{num(grid['b_min'], 3)}, {num(grid['b_max'], 3)}]$), evaluated in batches of grid "
        f"points ({num(s['grid_points_per_second'], 3)} points/s). Each point of the path is drawn "
        "at the loss of the actual snapshot on the same images, not at the surface's height below "
        f"it. The final model sits at the origin with loss {num(s['final_loss'], 4)}; the surface "
        f"ranges over [{num(s['loss_min'], 3)}, {num(s['loss_max'], 3)}]. "
        + (
            f"With {s['runs']} runs: {esc(s.get('construction_text', ''))}"
            if s.get("runs", 1) > 1
            else ""
        )
        + "\n\n"
    )
    out.append(
        _fig(
            run_dir,
            "landscape",
            "landscape",
            "Left: the loss surface over the PCA plane with the SGD trajectory (start and end "
            "marked). Right: contours of the same surface with the path. The interactive version "
            "is landscape.html in the run directory.",
        )
    )
    return "".join(out)


# --- problem 4 ------------------------------------------------------------------------------------


def autoencoder(run_dir: Path) -> str:
    out = ["= Problem 4 — A dense autoencoder\n"]
    m = _load(run_dir, "autoencoder/metrics.json")
    if m is None:
        return "".join(out) + _missing("autoencoder")
    history = _load(run_dir, "autoencoder/history.json") or {}
    loader = m.get("loader", "torchvision")
    out.append(
        "== Task 1: the data, through torchvision <p4-1>\n"
        + (
            "The training and the test set are `torchvision.datasets.FashionMNIST` datasets with "
            "`transforms.ToTensor()` (pixels in [0, 1]), read through `torch.utils.data.DataLoader`"
            " (@lst-batchedfashionmnist, @lst-torchvision-loader). `ToTensor()` is applied once "
            "to each split instead of once per image, and a `BatchSampler` fetches a whole batch "
            "with one indexing operation: the same tensors as the per-image path, without its "
            "per-image PIL conversion and collation. "
            if loader == "torchvision"
            else f"This run loaded the images with the {esc(loader)} loader; the default is "
            "torchvision's `FashionMNIST` with `ToTensor()` and `DataLoader` "
            "(@lst-torchvision-loader), which gives the same tensors. "
        )
        + f"Loader recorded in `metrics.json`: *{esc(loader)}*.\n"
        "== Task 2: the network <p4-2>\n"
        "`Autoencoder` (@lst-autoencoder): the encoder 784–128–64 and the decoder 64–128–784, "
        "ReLU after every hidden layer and a sigmoid on the output, so reconstructions are pixels "
        "in [0, 1] like `ToTensor()`'s.\n"
        "== Task 3: its training <p4-3>\n"
        "The network was trained with the mean squared "
        f"error and Adam (learning rate {num(m['lr'], 3)}, batch {m['batch_size']}) for "
        f"{m['epochs']} epochs on {num(m['train_size'])} training images "
        f"({num(m['seconds_per_epoch'], 3)} s per epoch). *Test MSE: {num(m['test_mse'], 4)}* over "
        "the 10,000 test images (@lst-train-autoencoder; per epoch: "
        "#answered(<tab-ae-history>, [])).\n\n"
    )
    out.append("== Task 4: two test images and their reconstructions\n")
    out.append(
        _fig(
            run_dir,
            "autoencoder",
            "reconstructions",
            "Two test images (top, “Original”) and their reconstructions (bottom).",
            "70%",
        )
    )
    tables = []
    if history.get("epoch"):
        rows = zip(history["epoch"], history["train_mse"], history["test_mse"], strict=False)
        tables.append(
            table_figure(
                table(
                    ["epoch", "train MSE", "test MSE"],
                    [[e, num(a, 4), num(b, 4)] for e, a, b in rows],
                    size="8pt",
                ),
                "Reconstruction MSE per epoch.",
                "tab-ae-history",
            )
        )
    tables.append(
        table_figure(
            table(
                ["class", "test MSE"],
                [[k, num(v, 4)] for k, v in m["per_class_mse"].items()],
                size="8pt",
            ),
            "Test MSE per class.",
            "tab-ae-classes",
        )
    )
    out.append("\n== What the code learned\n")
    out.append(
        "The MSE per epoch and per class are in "
        + " and ".join(
            f"@{label}" for label in ("tab-ae-history", "tab-ae-classes")[-len(tables) :]
        )
        + ". "
    )
    probe = m.get("probe", {})
    out.append(
        "\nA linear probe (logistic regression on standardized features, fit on "
        f"{num(probe.get('train_size'))} training images) reaches "
        f"*{num(m['probe_code_accuracy'], 4, percent=True)}* test accuracy on the 64-dimensional "
        f"codes and {num(m['probe_pixel_accuracy'], 4, percent=True)} on the 784 raw pixels. "
    )
    units = m.get("code_units")
    if units:
        out.append(
            f"Of the {units['total']} code units, {units['dead']} are zero on every test image; an "
            f"image activates {num(units['mean_active'], 3)} units on average."
        )
    lm = m.get("latent_map", {})
    out.append(
        "\n"
        + _fig(
            run_dir,
            "autoencoder",
            "latent_map",
            f"The 64-d codes of {num(lm.get('points'))} test images mapped to 2-D with "
            f"{esc(str(lm.get('method', 'PCA')).upper())}, coloured by class.",
            "80%",
            placement="auto",
        )
    )
    cells = ", ".join(f"[{t.rstrip()}]" for t in tables)
    out.append(f"#grid(columns: {len(tables)}, gutter: 1em, {cells})\n")
    return "".join(out)


SECTIONS: tuple[Callable[[Path], str], ...] = (
    heinit,
    classifier,
    landscape,
    autoencoder,
    source_code,
    provenance,
)
