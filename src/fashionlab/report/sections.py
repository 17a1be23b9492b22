"""The report's sections: each reads its stage's files and returns Typst markup.

A section whose stage has not run returns a short note instead, so partial runs still build.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .classifier import classifier, tuning_appendix
from .common import load as _load
from .common import missing as _missing
from .common import stage_figure as _fig
from .cover import provenance
from .listings import source_code
from .markup import esc, num, table, table_figure

__all__ = ["NEW_PAGE", "SECTIONS"]


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
        f"== The checks, in numbers\nEvery identity is estimated on both sides from "
        f"{num(results['identities'][0]['samples'])} draws, in the case its assumptions hold and "
        f'in cases that break one; it _holds_ when $("lhs" - "rhs") plus.minus {num(z, 2)} '
        'dot "SE"$ contains 0. @tab-checks gives one row per identity (all '
        f"{len(results['identities'])} cases: @tab-identities in the appendix). The depth "
        f"experiment (@fig-heinit-depth-variance) sends {num(depth['batch'])} Gaussian inputs "
        f"through {depth['depth']} layers of width {depth['width']}.\n"
    )
    out.append(
        table_figure(
            _checks_table(results),
            "One row per identity: both sides where the "
            "assumptions hold, and how many of its cases (assumptions kept or broken) came out as "
            "the derivation predicts.",
            "tab-checks",
        )
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
    return "".join(out)


def _checks_table(results: dict[str, Any]) -> str:
    """One row per identity: its step, both sides where its assumptions hold, verdicts."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in results["identities"]:
        rows.setdefault(r["name"], []).append(r)
    body = []
    for name, cases in rows.items():
        good = next((c for c in cases if c["expected_to_hold"]), cases[0])
        agree = sum(c["holds"] == c["expected_to_hold"] for c in cases)
        body.append(
            [
                good["step"],
                name.replace("_", " "),
                good["case"],
                num(good["lhs"], 4),
                num(good["rhs"], 4),
                f"{agree}/{len(cases)}",
            ]
        )
    kaiming = results.get("kaiming", [])
    if kaiming:
        k = kaiming[0]
        body.append(
            [
                "1.4",
                "kaiming_normal_ variance",
                f"{k['nonlinearity']}, fan-in {k['fan_in']}",
                num(k["empirical_var"], 4),
                num(k["expected_var"], 4),
                f"{sum(x['holds'] for x in kaiming)}/{len(kaiming)}",
            ]
        )
    return table(
        ["step", "identity", "case (assumptions hold)", "lhs", "rhs", "as predicted"],
        body,
        size="8pt",
    )


def tables_appendix(run_dir: Path) -> str:
    """The last appendix: the trials of both studies, every case of problem 1, the provenance."""
    return (
        "= Appendix: all trials, all checks, the provenance\n"
        + tuning_appendix(run_dir)
        + heinit_appendix(run_dir)
        + provenance(run_dir)
    )


def heinit_appendix(run_dir: Path) -> str:
    """Every Monte-Carlo case of problem 1 (the appendix)."""
    results = _load(run_dir, "heinit/results.json")
    if results is None:
        return ""
    rows = [
        [
            r["step"],
            r["name"].replace("_", " "),
            r["case"],
            num(r["lhs"], 4),
            num(r["rhs"], 4),
            f"[{num(r['ci_low'], 3)}, {num(r['ci_high'], 3)}]",
            "yes" if r["holds"] else "NO",
            "holds" if r["expected_to_hold"] else "breaks",
        ]
        for r in results["identities"]
    ]
    return "\n== Problem 1: every Monte-Carlo case\n" + table_figure(
        table(
            ["step", "identity", "case", "lhs", "rhs", "lhs − rhs ± z SE", "holds", "expected"],
            rows,
            size="7pt",
        ),
        "Both sides of every identity in every case; *holds*: the interval contains 0; "
        "*expected*: whether the derivation's assumptions hold in that case.",
        "tab-identities",
    )


# --- problem 2: report/classifier.py -----------------------------------------------------------


# --- problem 3 ------------------------------------------------------------------------------------


def landscape(run_dir: Path) -> str:
    out = ["= Problem 3 — The loss landscape along the SGD trajectory\n"]
    s = _load(run_dir, "landscape/landscape.json")
    if s is None:
        return "".join(out) + _missing("landscape")
    if s.get("schema_version", 1) < 2:
        return "".join(out) + (
            "_This landscape.json predates the two-run landscape; run `fashionlab landscape` "
            "again to fill this section._\n"
        )
    per_run = s["per_run"]
    several = len(per_run) > 1
    out.append(_landscape_training(s))
    own = s.get("own_plane")
    if own:
        out.append(_own_plane_text(run_dir, s, own))
    out.append(_joint_plane_text(s, own) if several else _single_plane_text(s))
    out.append(_surface_text(s))
    out.append(_basins_text(s))
    if several:
        out.append(_two_basins_text(s))
    spike = _spike_sentence(per_run)
    if spike:
        out.append(f"\n{spike}\n\n")
    out.append(_landscape_figure(run_dir, s, own))
    return "".join(out)


def _landscape_training(s: dict[str, Any]) -> str:
    """How the runs were trained, and where the plateau rule stopped them."""
    c, per_run = s["config"], s["per_run"]
    train = c["train"]
    several = len(per_run) > 1
    model = s["model"] if isinstance(s["model"], str) else s.get("model_config", s["model"])
    times = {1: "once", 2: "twice"}.get(len(per_run), f"{len(per_run)} times")
    seeds = " and ".join(str(r["init_seed"]) for r in per_run)
    text = (
        f"*Training.* A {esc(str(model))} ({num(s['n_params'])} parameters) was trained {times}"
        + (f", from initialisations drawn with seeds {seeds}," if several else "")
        + f" with minibatch SGD on {num(s['train_examples'])} training images (batch "
        f"{train['batch_size']}, learning rate {train['lr']:g}"
        + (", the same minibatch order in both runs" if several else "")
        + "). "
    )
    if c.get("plateau_tol") is None:
        return text
    stops = []
    for r in per_run:
        how = {
            "plateau": "",
            "max_epochs": f", at the cap of {train['epochs']} epochs before a final plateau",
        }.get(r["stop_reason"], "")
        stops.append(
            f"run {r['run'] + 1} after {r['epochs']} epochs ({num(r['steps'])} steps){how}"
        )
    return text + (
        f"A plateau of the training loss ({c['plateau_patience']} epochs without a relative "
        f"improvement of {c['plateau_tol'] * 100:g} %) multiplies the learning rate by "
        f"{c['lr_decay']:g}; after {c['lr_decays']} cuts the next plateau ends training, so "
        f"SGD settles in its basin. This stopped {' and '.join(stops)}.\n\n"
    )


def _joint_plane_text(s: dict[str, Any], own: dict[str, Any] | None) -> str:
    """The joint PCA plane of several runs."""
    ev = s["explained_variance_ratio"]
    return (
        ("*Both runs in one plane.* " if own else "*The plane.* ")
        + f"A joint PCA of all {s['n_snapshots']} snapshots of both runs ("
        + " and ".join(str(n) for n in s["snapshots_per_run"])
        + ", evenly spaced along each path's length), centred on the mean $c$ of the two final "
        "models: one plane that holds both paths, as in the assignment's figure. Its "
        f"directions $d_1, d_2$ explain {num(ev[0], 3, percent=True)} and "
        f"{num(ev[1], 3, percent=True)} of the snapshots' variance. $d_1$ is almost exactly "
        "the line through the two final models ($|cos|$ = "
        f"{num(s.get('pc1_final_alignment'), 3)}): the two runs end far apart while each path "
        "moves little along it. "
    )


def _single_plane_text(s: dict[str, Any]) -> str:
    """The PCA plane of one run."""
    ev = s["explained_variance_ratio"]
    return (
        f"*The plane.* PCA of the {s['n_snapshots']} snapshots minus the final parameters "
        f"gives $d_1, d_2$; they explain {num(ev[0], 3, percent=True)} and "
        f"{num(ev[1], 3, percent=True)} of the variance. "
    )


def _surface_text(s: dict[str, Any]) -> str:
    """The surface's grid, how its margins grew, and how far the final models lie off it."""
    grid = s["grid"]
    sides = grid.get("margins", [grid["margin"]] * 4)
    origin = "c" if len(s["per_run"]) > 1 else 'theta_"final"'
    return (
        f'The surface is $f_"CE" ({origin} + a d_1 + b d_2)$ on the same '
        f"{num(s['eval_examples'])} training images, on a {grid['resolution']} × "
        f"{grid['resolution']} grid over $a in [{num(grid['a_min'], 3)}, "
        f"{num(grid['a_max'], 3)}]$, $b in [{num(grid['b_min'], 3)}, {num(grid['b_max'], 3)}]$; "
        "a side's margin doubles while the lowest surface point near a final model lies on that "
        f"edge ({_growth_text(grid.get('margin_growths', 0), sides)}). The final models lie off "
        "the plane by "
        + " and ".join(num(x, 2, percent=True) for x in s.get("final_residuals", []))
        + f" of their distance from ${origin}$.\n\n"
    )


def _basins_text(s: dict[str, Any]) -> str:
    """The basin criterion's verdict and one table row per run."""
    per_run = s["per_run"]
    rows = [
        [
            f"run {r['run'] + 1}",
            r["init_seed"],
            r["epochs"],
            num(r["initial_loss"], 4),
            num(r["final_loss"], 4),
            num(r["final_plane_loss"], 4),
            num(r["surface_min"], 4),
            num(r["surface_min_interior"]),
            num(max(r["gap_over_range"], r["plane_gap_over_range"]), 2, percent=True),
            num(r["in_basin"]),
        ]
        for r in per_run
    ]
    ok = all(r["in_basin"] for r in per_run)
    if len(per_run) > 1:
        verdict = "Both runs end" if ok else "Not every run ends"
    else:
        verdict = "The run ends" if ok else "The run does not end"
    header = [
        "run",
        "init. seed",
        "epochs",
        "initial loss",
        "final loss",
        "surface at final",
        "lowest surface point near it",
        "inside the grid",
        "gap / range",
        "in its basin",
    ]
    return (
        f"\n*The basins.* {verdict} in a basin: the final model's loss (its own, and the "
        f"surface's at its projection) is at most {s['config']['basin_tol'] * 100:g} % of the "
        "surface's range above the lowest surface point near it, which lies inside the grid.\n"
    ) + table(header, rows, size="8pt")


def _two_basins_text(s: dict[str, Any]) -> str:
    """Where two runs end, and the loss at the average of their weights."""
    losses = [r["final_loss"] for r in s["per_run"]]
    return (
        f"\nThe two runs end at losses {num(losses[0], 4)} and {num(losses[1], 4)}, in basins "
        f"separated by a ridge up to {num(s['loss_max'], 3)}. At $c$, the average of the two "
        f"final models' weights, the loss is {num(s['centre_loss'], 3)}"
        + (
            ", above both: averaging the two networks' weights does not give a good network."
            if s["centre_loss"] > max(losses)
            else "."
        )
        + "\n"
    )


def _landscape_figure(run_dir: Path, s: dict[str, Any], own: dict[str, Any] | None) -> str:
    """The joint plane's contours (when run 1 has its own plane above), else the main figure."""
    several = len(s["per_run"]) > 1
    width = s.get("figure_size_in", [6.3])[0]
    return _fig(
        run_dir,
        "landscape",
        "landscape_two_runs" if own else "landscape",
        "Both runs in their joint PCA plane (centred on the mean $c$ of the two final "
        "models): contours of the loss with the projected paths; ○ start, ★ final model, ✕ "
        "the lowest surface point near each final model. Interactive: landscape.html."
        if own
        else "Top: the loss surface over the PCA plane with the SGD path"
        + ("s of both runs" if several else "")
        + ", each point at its snapshot's own loss. Bottom: contours of the same surface with "
        "the projected paths; ○ start, ★ final model, ✕ the lowest surface point near each "
        "final model. Interactive version: landscape.html in the run directory.",
        f"{width}in",
        placement="auto",
    )


def _own_plane_text(run_dir: Path, s: dict[str, Any], own: dict[str, Any]) -> str:
    """Run 1 in its own PCA plane: the text and the main figure."""
    ev, grid, basin = own["explained_variance_ratio"], own["grid"], own["basin"]
    c = s["config"]
    where = "ends in its basin" if basin["in_basin"] else "does not end in a basin"
    per_epoch = c.get("snapshots_per_epoch")
    width = s.get("figure_size_in", [6.3])[0]
    return (
        f"*Run 1 in its own plane.* PCA of run 1's {own['n_snapshots']} snapshots"
        + (
            f" (taken {per_epoch:g} times per epoch, thinned evenly along the path)"
            if per_epoch
            else ""
        )
        + ' minus its final parameters $theta_"final"$ gives $d_1, d_2$, which explain '
        f"{num(ev[0], 3, percent=True)} and {num(ev[1], 3, percent=True)} of their variance "
        "(@lst-pca-plane). The surface is "
        '$f_"CE" (theta_"final" + a d_1 + b d_2)$, the unregularized cross-entropy on '
        f"{num(s['eval_examples'])} training images, on a {grid['resolution']} × "
        f"{grid['resolution']} grid over $a in [{num(grid['a_min'], 3)}, "
        f"{num(grid['a_max'], 3)}]$, $b in [{num(grid['b_min'], 3)}, {num(grid['b_max'], 3)}]$ "
        "(@lst--grid-with-margins); each path point is drawn at its snapshot's own loss "
        f"(@lst--draw). The run {where}: final loss {num(own['final_loss'], 4)}, the lowest "
        f"surface point near it {num(basin['surface_min'], 4)}.\n\n"
        + _fig(
            run_dir,
            "landscape",
            "landscape",
            "Run 1 in its own PCA plane. Top: the loss surface with the SGD path, each point at "
            "its snapshot's own loss. Bottom: contours with the projected path; ○ start, ★ final "
            "model, ✕ the lowest surface point near it.",
            f"{width}in",
            placement="auto",
        )
    )


def _growth_text(growths: int, sides: list[float]) -> str:
    margins = ", ".join(f"{m * 100:g} %" for m in sides)
    if not growths:
        return f"the first margins sufficed: {margins} of the path's extent"
    return f"{growths} doubling{'s' if growths > 1 else ''}, to {margins} of the path's extent"


def _spike_sentence(per_run: list[dict[str, Any]]) -> str:
    """The largest rise on the first run's path, as the stage's replay found it."""
    p = per_run[0].get("spike") if per_run else None
    if not p:
        return ""
    where = "right after a change of the learning rate" if p["lr_changed"] else "at learning rate"
    return (
        f"The largest rise on the path of run 1 (from {num(p['from_loss'], 3)} to "
        f"{num(p['to_loss'], 3)}) is one SGD step, {num(p['step'])}, {where} {p['lr']:g}, "
        f"{num(p['update_norm_over_median'], 2)} times as long as the median step there."
    )


def _pca_line(m: dict[str, Any]) -> str:
    """The linear baseline: PCA with as many components as the code has units."""
    pca = m.get("pca_test_mse")
    if pca is None:
        return ""
    comparison = "below" if m["test_mse"] < pca["mse"] else "not below"
    return (
        f" PCA with {pca['components']} components (the code's size), fit on the same training "
        f"images, reconstructs the same test images with MSE {num(pca['mse'], 4)}: the network's "
        f"MSE is {comparison} the linear baseline's."
    )


# --- problem 4 ------------------------------------------------------------------------------------


def autoencoder(run_dir: Path) -> str:
    out = ["= Problem 4 — A dense autoencoder\n"]
    m = _load(run_dir, "autoencoder/metrics.json")
    if m is None:
        return "".join(out) + _missing("autoencoder")
    history = _load(run_dir, "autoencoder/history.json") or {}
    out.append(_autoencoder_tasks(m))
    out.append(
        "== Task 4: two test images and their reconstructions\n"
        "In eval mode (`model.eval()`), two test images go through the network "
        "(@lst-reconstruction-figure).\n"
    )
    out.append(
        _fig(
            run_dir,
            "autoencoder",
            "reconstructions",
            "Two test images (top, “Original”) and their reconstructions (bottom).",
            "70%",
        )
    )
    tables = _autoencoder_tables(m, history)
    out.append("\n== What the code learned\n")
    out.append(_code_text(m, tables))
    cells = ", ".join(f"[{t.rstrip()}]" for t in tables)
    # the tables side by side, kept on one page
    out.append(f"#block(breakable: false)[#grid(columns: {len(tables)}, gutter: 1em, {cells})]\n")
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
    return "".join(out)


def _autoencoder_tasks(m: dict[str, Any]) -> str:
    """Tasks 1 to 3: the data, the network, its training."""
    loader = m.get("loader", "torchvision")
    return (
        "== Task 1: the data, through torchvision <p4-1>\n"
        + (
            "The training and the test set are `torchvision.datasets.FashionMNIST` with "
            "`transforms.ToTensor()` (pixels in [0, 1]), read through `torch.utils.data.DataLoader`"
            " (@lst-torchvision-loader); the dataset applies `ToTensor()` once per split and the "
            "loader fetches a whole batch per step, the same tensors as the per-image path. "
            if loader == "torchvision"
            else f"This run loaded the images with the {esc(loader)} loader; the default is "
            "torchvision's `FashionMNIST` with `ToTensor()` and `DataLoader` "
            "(@lst-torchvision-loader), which gives the same tensors. "
        )
        + "\n"
        "== Task 2: the network <p4-2>\n"
        "`Autoencoder` (@lst-autoencoder): the encoder 784–128–64 and the decoder 64–128–784, "
        "ReLU after every hidden layer and a sigmoid on the output, so reconstructions are pixels "
        "in [0, 1] like `ToTensor()`'s.\n"
        "== Task 3: its training <p4-3>\n"
        "The network was trained with the mean squared "
        f"error and Adam (learning rate {num(m['lr'], 3)}, batch {m['batch_size']}) for "
        f"{m['epochs']} epochs on {num(m['train_size'])} training images "
        f"({num(m['seconds_per_epoch'], 3)} s per epoch; @lst-train-autoencoder, "
        "@lst-train-epochs). *Test MSE: "
        f"{num(m['test_mse'], 4)}* over the 10,000 test images (per epoch: "
        "#answered(<tab-ae-history>, []))." + _pca_line(m) + "\n\n"
    )


def _autoencoder_tables(m: dict[str, Any], history: dict[str, Any]) -> list[str]:
    """The MSE per epoch (when history.json has it) and the test MSE per class."""
    tables = []
    if history.get("epoch"):
        rows = list(zip(history["epoch"], history["train_mse"], history["test_mse"], strict=False))
        last = rows[-1][0]
        shown = [r for r in rows if r[0] <= 3 or r[0] % 5 == 0 or r[0] == last]
        tables.append(
            table_figure(
                table(
                    ["epoch", "train MSE", "test MSE"],
                    [[e, num(a, 4), num(b, 4)] for e, a, b in shown],
                    size="8pt",
                ),
                "Reconstruction MSE per epoch"
                + (
                    " (epochs 1–3, every fifth and the last; all in history.json)."
                    if len(shown) < len(rows)
                    else "."
                ),
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
    return tables


def _code_text(m: dict[str, Any], tables: list[str]) -> str:
    """What the code learned: the tables' references, the linear probes, the active units."""
    text = (
        "The MSE per epoch and per class are in "
        + " and ".join(
            f"@{label}" for label in ("tab-ae-history", "tab-ae-classes")[-len(tables) :]
        )
        + ". "
    )
    probe = m.get("probe", {})
    text += (
        "\nA linear probe (logistic regression on standardized features, fit on "
        f"{num(probe.get('train_size'))} training images) reaches "
        f"*{num(m['probe_code_accuracy'], 4, percent=True)}* test accuracy on the 64-dimensional "
        f"codes and {num(m['probe_pixel_accuracy'], 4, percent=True)} on the 784 raw pixels. "
    )
    units = m.get("code_units")
    if units:
        text += (
            f"Of the {units['total']} code units, {units['dead']} are zero on every test image; an "
            f"image activates {num(units['mean_active'], 3)} units on average."
        )
    return text


SECTIONS: tuple[Callable[[Path], str], ...] = (
    heinit,
    classifier,
    landscape,
    autoencoder,
    source_code,
    tables_appendix,
)

NEW_PAGE = (heinit,)  # the sections that start a page (problem 1, after the cover)
