"""The appendix: the code that answers each problem, taken from the live source at build time.

Each listing names its object by qualified name (``module:attribute``), so it follows the code
wherever the lines move; its source and first line are read from the module's file by name (the
lines ``inspect.getsourcelines`` gives, a test checks), printed under the listing as
``file:line``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FashionLabError
from .markup import esc, string

__all__ = ["LISTINGS", "Listing", "listing_excerpt", "listing_source", "source_code"]

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds fashionlab/


@dataclass(frozen=True)
class Listing:
    """One listed object: ``target`` is ``"package.module:Name"`` or ``"...:Class.method"``.

    ``keep``: show only the statements whose text holds one of these strings (inside a compound
    statement or a method, the matching statements of its body); empty: the whole body. Either
    way docstrings, argument checks (an ``if`` whose body only raises) and log calls are left
    out, and a gap in the file's line numbers shows where.
    """

    target: str
    caption: str
    problem: str  # "p2", "p3", "p4": the appendix subsection it goes to
    keep: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        name = self.target.split(":")[1]
        return "lst-" + name.replace(".", "-").replace("_", "-").lower()


LISTINGS: tuple[Listing, ...] = (
    Listing(
        "fashionlab.models:MLP",
        "the MLP: 784 → hidden layers (He-initialised) → 10 logits",
        "p2",
        keep=(
            "ACTIVATIONS[",
            "layers: ",
            "layers.append",
            "nn.init.zeros_(linear.bias)",
            "fan_in",
            "for width",
            "self.body",
            "self.head",
            "def forward",
        ),
    ),
    Listing(
        "fashionlab._stacked:StackedStep._loss_and_grads",
        "the cost f_CE: softmax cross-entropy (log-softmax, the label's mean negative "
        "log-likelihood)",
        "p2",
        keep=("log_p = torch.log_softmax", "losses = torch.stack([F.nll_loss"),
    ),
    Listing(
        "fashionlab._stacked:StackedStep._update",
        "SGD with momentum; L2 only on the weight matrices (`l2` is zero at the biases)",
        "p2",
    ),
    Listing(
        "fashionlab.population:Population._train_epoch",
        "the minibatch loop every MLP of problem 2 trains through",
        "p2",
        keep=(
            "orders = torch.stack",
            "for index in range",
            "batch = orders",
            "x = self.images",
            "y = self.labels",
            "losses = self._loss_and_grads",
            "self._update()",
        ),
    ),
    Listing(
        "fashionlab.data:load_train_val",
        "the split: a stratified, seeded validation part of the 60,000 training images",
        "p2",
    ),
    Listing(
        "fashionlab.experiments.classifier.tuning.objective:suggest_params",
        "hyperparam_tuning's search space",
        "p2",
        keep=("sampled: ", "for key, allowed", "trial.suggest_"),
    ),
    Listing(
        "fashionlab.experiments.classifier.tuning.brackets:Bracket._score",
        "a population of trials: trained on the training part, scored on the validation part",
        "p2",
        keep=(
            "branch = trunk.fork",
            "branch.train()",
            "evaluate(branch.model(member), self.val",
            "entry.trial.report(",
        ),
    ),
    Listing(
        "fashionlab.experiments.classifier.tuning.brackets:promoted",
        "successive halving: the best third of a whole bracket goes on to the next rung",
        "p2",
    ),
    Listing(
        "fashionlab.experiments.classifier.tuning.export:best_pair",
        "the pick: the best validation accuracy over every (trial, epochs) pair",
        "p2",
    ),
    Listing(
        "fashionlab.experiments.classifier.stage:run_classifier",
        "the retrain on all 60,000 training images and the single test",
        "p2",
        keep=(
            "train = _training_images",
            "runs = _retrain",
            "test = load_test",
            "tested =",
            "accuracies = [",
        ),
    ),
    Listing(
        "fashionlab.experiments.landscape.trajectory:TrajectoryRecorder",
        "the parameter snapshots, several per epoch",
        "p3",
        keep=("def __call__", "params = [p.detach()", "parameters_to_vector", "self._rows.append"),
    ),
    Listing(
        "fashionlab.experiments.landscape.plane:pca_plane",
        "the PCA plane of the trajectory",
        "p3",
        keep=("thetas =", "centre =", "centred =", "_principal_components_gram", "coords ="),
    ),
    Listing(
        "fashionlab.experiments.landscape.evaluate:_grid_with_margins",
        "f_CE on the grid (c + a d₁ + b d₂), coarse first while the margins grow",
        "p3",
        keep=("while True", "a, b = grid_axes", "mesh", "grid = evaluator"),
    ),
    Listing(
        "fashionlab.experiments.landscape.plots:_draw",
        "the surface (`plot_surface`) with the SGD path as a scatter",
        "p3",
        keep=(
            "meshgrid",
            "Z = ",
            "plot_surface",
            "xs, ys, zs =",
            "ax3d.plot(",
            "ax3d.scatter(xs",
        ),
    ),
    Listing(
        "fashionlab.experiments.autoencoder.data:torchvision_loader",
        "torchvision's FashionMNIST with ToTensor() and a DataLoader",
        "p4",
        keep=("dataset = Batched", "generator =", "shuffle =", "order =", "return DataLoader"),
    ),
    Listing(
        "fashionlab.models:Autoencoder",
        "the autoencoder 784–128–64–128–784",
        "p4",
        keep=("self.encoder =", "self.decoder =", "def forward"),
    ),
    Listing(
        "fashionlab.experiments.autoencoder.train:train_autoencoder",
        "the autoencoder's training: MSELoss, Adam, the loop below",
        "p4",
        keep=("criterion =", "optimizer = ", "def reconstruction_loss", "train_epochs("),
    ),
    Listing(
        "fashionlab.train:train_epochs",
        "the autoencoder's training loop: loss, zero_grad, backward, step per minibatch",
        "p4",
        keep=(
            "model.train()",
            "for x, y in batches",
            "loss = loss_fn",
            "optimizer.zero_grad",
            "loss.backward",
            "lr_at(step)",
            "optimizer.step()",
        ),
    ),
    Listing(
        "fashionlab.experiments.autoencoder.analysis:reconstruction_figure",
        "model.eval() and two test images through the network",
        "p4",
        keep=("model.eval()", "index =", "x, y =", "reconstructions ="),
    ),
)

_HEADINGS = {
    "p2": "Problem 2: the MLP, SGD with L2, hyperparam_tuning, the retrain",
    "p3": "Problem 3: snapshots, PCA, the surface and the path",
    "p4": "Problem 4: the autoencoder, its data, training and figure",
}


def resolve(target: str) -> Any:
    """The object named ``"package.module:Name.attr"`` (imports its module)."""
    module_name, _, attribute = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return inspect.unwrap(obj)


def _module_file(module_name: str) -> Path:
    base = _PACKAGE_ROOT.joinpath(*module_name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def listing_source(target: str) -> tuple[str, str, int]:
    """``(source, file relative to the package's parent, first line)`` of a listed object.

    Read from the module's file as it is now, by name (``Name`` or ``Class.method``), with
    :mod:`ast`: the same lines as ``inspect.getsourcelines`` (decorators included), without
    importing the module (which would import torch and torchvision, the slowest part of starting
    the report).

    Raises:
        FashionLabError: the file or the object does not exist (the listing table is stale).
    """
    module_name, _, attribute = target.partition(":")
    path = _module_file(module_name)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FashionLabError(f"listing {target}: cannot read {path} ({exc})") from exc
    scope: list[ast.stmt] = ast.parse(text).body
    node: ast.stmt | None = None
    for part in attribute.split("."):
        node = next(
            (
                n
                for n in scope
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and n.name == part
            ),
            None,
        )
        if node is None:
            raise FashionLabError(
                f"listing {target}: no {part!r} in {path.name}; update "
                "fashionlab.report.listings.LISTINGS"
            )
        scope = node.body if isinstance(node, ast.ClassDef) else []
    assert node is not None and node.end_lineno is not None
    decorators = getattr(node, "decorator_list", [])
    start = min([node.lineno, *(d.lineno for d in decorators)])
    lines = text.splitlines()[start - 1 : node.end_lineno]
    shown = path.relative_to(_PACKAGE_ROOT).as_posix()
    return textwrap.dedent("\n".join(lines)).rstrip(), shown, start


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _is_plumbing(node: ast.stmt) -> bool:
    """An argument check (``if ...: raise ...``) or a log call: not what a reader grades."""
    if (
        isinstance(node, ast.If)
        and not node.orelse
        and all(isinstance(n, ast.Raise) for n in node.body)
    ):
        return True
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        return isinstance(func, ast.Attribute) and ast.unparse(func.value) in ("logger", "log")
    return False


def _shown(node: ast.stmt, text: list[str], keep: tuple[str, ...], silent: set[int]) -> list[int]:
    """The line numbers of ``node`` that an excerpt shows (see :class:`Listing`); the lines of
    the docstrings it leaves out go to ``silent`` (left out without a mark)."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    assert node.end_lineno is not None
    source = "\n".join(text[first - 1 : node.end_lineno])
    if keep and not any(k in source for k in keep):
        return []
    body = getattr(node, "body", None)
    compound = isinstance(body, list) and body and isinstance(body[0], ast.stmt)
    if not compound or getattr(node, "orelse", None) or getattr(node, "handlers", None):
        return list(range(first, node.end_lineno + 1))
    # a def or class matched on its own first line ("def forward") is shown whole
    named = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    whole = named and any(k in text[node.lineno - 1] for k in keep)
    inner = () if whole else keep
    lines: list[int] = []
    for child in body:
        assert child.end_lineno is not None
        if _is_docstring(child):
            silent.update(range(child.lineno, child.end_lineno + 1))
            continue
        if _is_plumbing(child):
            continue
        shown = _shown(child, text, inner, silent)
        if shown:  # with the comment lines right above it (they say why)
            above = shown[0] - 1
            while above > first and text[above - 1].strip().startswith("#"):
                shown.insert(0, above)
                above -= 1
        lines += shown
    if not lines:  # nothing of its body is shown: neither is its header
        return []
    header = list(range(first, body[0].lineno))
    if (
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and body[0].lineno - node.lineno > 3
    ):
        header = list(range(first, node.lineno + 1))  # a long signature: its first line, "..."
    return header + lines


def listing_excerpt(item: Listing) -> tuple[list[int | None], str, str]:
    """``(line numbers, source, file)`` of what a listing prints: the object's own lines (see
    :class:`Listing`), ``None`` for a line that marks left-out lines.

    Raises:
        FashionLabError: as :func:`listing_source`.
    """
    _, shown_path, start = listing_source(item.target)
    path = _PACKAGE_ROOT / shown_path
    text = path.read_text().splitlines()
    module = ast.parse("\n".join(text))
    scope: list[ast.stmt] = module.body
    node: ast.stmt | None = None
    for part in item.target.split(":")[1].split("."):
        node = next(n for n in scope if getattr(n, "name", None) == part)
        scope = node.body if isinstance(node, ast.ClassDef) else []
    assert node is not None
    silent: set[int] = set()
    lines = _shown(node, text, item.keep, silent)
    indent = min(len(text[n - 1]) - len(text[n - 1].lstrip()) for n in lines if text[n - 1].strip())
    numbers: list[int | None] = []
    out: list[str] = []
    for i, n in enumerate(lines):
        gap = range(lines[i - 1] + 1, n) if i else range(0)
        if any(text[m - 1].strip() and m not in silent for m in gap):  # code left out: mark it
            pad = len(text[n - 1]) - len(text[n - 1].lstrip())
            numbers.append(None)
            out.append(" " * (pad - indent) + "...")
        elif gap and not any(text[m - 1].strip() for m in gap):  # blank lines: keep them
            for m in gap:
                numbers.append(m)
                out.append("")
        numbers.append(n)
        out.append(text[n - 1][indent:])
    while out and not out[-1].strip():
        out.pop()
        numbers.pop()
    return numbers, "\n".join(out), shown_path


def _listing(item: Listing) -> str:
    numbers, source, path = listing_excerpt(item)
    start = next(n for n in numbers if n is not None)
    caption = f"`{path}:{start}`: {esc(item.caption)}"
    array = "(" + "".join("none, " if n is None else f"{n}, " for n in numbers) + ")"
    return (
        f"#figure(kind: raw, supplement: [Listing], caption: [{caption}])"
        f"[#listing({array}, {string(source)})] <{item.label}>\n"
    )


def source_code(run_dir: Path) -> str:
    """The appendix of listings (the same for every run: ``run_dir`` is not read)."""
    out = [
        '#counter(heading).update(0)\n#set heading(numbering: "A.1", supplement: [Appendix])\n',
        "= Appendix: the code <appendix>\n",
        "Excerpts of the live source with its line numbers; `...` marks left-out lines "
        "(docstrings, checks, logging, bookkeeping).\n",
    ]
    current = ""
    for item in LISTINGS:
        if item.problem != current:
            current = item.problem
            out.append(f"== {esc(_HEADINGS[current])} <code-{current}>\n")
        out.append(_listing(item))
    return "".join(out)
