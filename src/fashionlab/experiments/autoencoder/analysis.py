"""What the autoencoder learned: the reconstruction figure, per-class MSE, the latent map, linear
probes.

Used by :func:`~fashionlab.experiments.autoencoder.stage.run_autoencoder`; every function also
works on its own.
The linear probe (Alain & Bengio 2016, "Understanding intermediate layers using linear classifier
probes") asks how linearly separable the classes are in the 64-d code compared with the 784 raw
pixels: the autoencoder never saw a label, so any gain over pixels comes from the code alone.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.lines import Line2D

from ...atomic import atomic_save_npz
from ...data import CLASSES, Split, stratified_split
from ...errors import ConfigError
from ...figures import PRINT_WIDTH_IN, print_style, pyplot, save_figure
from ...pca import principal_components
from ...runtime import resolve_device
from ...threads import blas_threads
from .train import encode_split

if TYPE_CHECKING:
    from ...models import Autoencoder

plt = pyplot()  # the Agg backend: figures go to files only

__all__ = [
    "ProbeResult",
    "choose_images",
    "plot_reconstructions",
    "reconstruction_figure",
    "per_class_mse",
    "pca_2d",
    "latent_map",
    "linear_probe",
    "linear_probes",
]

RECONSTRUCTION_FIGURE = "reconstructions"
LATENT_FIGURE = "latent_map"
TSNE_POINTS = (
    3000  # t-SNE on all 10,000 codes takes minutes on 2 cores; a stratified 3,000 shows the same
)


# --- reconstructions ------------------------------------------------------------------------------


def choose_images(labels: torch.Tensor, images: tuple[int, int] | None = None) -> tuple[int, int]:
    """The two test indices to show: ``images`` (checked), or the first image and the next of
    another class.

    Raises:
        ConfigError: an index outside the test set.
    """
    n = int(labels.shape[0])
    if images is None:
        others = torch.nonzero(labels != labels[0]).flatten()
        return 0, int(others[0])
    for index in images:
        if not 0 <= index < n:
            raise ConfigError(
                f"image index {index} is outside the test set (0..{n - 1}); choose --images I J "
                f"with 0 <= I, J < {n}"
            )
    return int(images[0]), int(images[1])


def plot_reconstructions(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    labels: list[int],
    indices: list[int],
    stem: str | Path,
) -> list[Path]:
    """Originals on top, their reconstructions directly below, each titled with its class.

    Args:
        originals, reconstructions: (K, 784) or (K, 28, 28) pixels in [0, 1].
        labels: class of each image; indices: its position in the test set (shown in the title).
        stem: output path without suffix; PNG and PDF are written.
    """
    originals = np.asarray(originals, dtype=float).reshape(-1, 28, 28)
    reconstructions = np.asarray(reconstructions, dtype=float).reshape(-1, 28, 28)
    k = originals.shape[0]
    with print_style():  # drawn at the size the report prints it
        fig, axes = plt.subplots(2, k, figsize=(1.45 * k + 0.45, 3.3), squeeze=False)
        for col in range(k):
            name = CLASSES[labels[col]]
            mse = float(np.mean((reconstructions[col] - originals[col]) ** 2))
            panels = (
                (originals[col], f"{name}\n(test image #{indices[col]})"),
                (reconstructions[col], f"{name}\n(MSE {mse:.4f})"),
            )
            for row, (image, title) in enumerate(panels):
                ax = axes[row, col]
                ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
                ax.set_title(title, fontsize=7.5)
                ax.set_xticks([])
                ax.set_yticks([])
        for row, label in enumerate(("Original", "Reconstruction")):
            axes[row, 0].set_ylabel(label, fontweight="bold")
        fig.tight_layout(h_pad=0.8, w_pad=0.6)
        return save_figure(fig, Path(stem), bbox_inches=None, dpi=200)


@torch.no_grad()
def reconstruction_figure(
    model: Autoencoder,
    test: Split,
    shown: tuple[int, int],
    errors: torch.Tensor,
    out_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
) -> tuple[list[dict[str, Any]], list[Path]]:
    """Reconstruct the test images ``shown`` (eval mode) and plot them; returns (image records,
    files)."""
    device = resolve_device(device)
    model.eval()
    index = torch.tensor(shown)
    x, y = test.take(index).tensors(device)  # (2, 784)
    reconstructions = model(x).cpu().numpy()
    records = [
        {
            "index": int(i),
            "label": int(label),
            "class": CLASSES[int(label)],
            "mse": float(errors[i]),
        }
        for i, label in zip(shown, y.tolist(), strict=True)
    ]
    files = plot_reconstructions(
        x.cpu().numpy(),
        reconstructions,
        y.tolist(),
        list(shown),
        Path(out_dir) / RECONSTRUCTION_FIGURE,
    )
    return records, files


def per_class_mse(errors: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean per-image MSE of each class, keyed by class name (``fashionlab.data.CLASSES``)."""
    return {
        name: float(errors[labels == k].mean())
        for k, name in enumerate(CLASSES)
        if bool((labels == k).any())
    }


# --- latent map -----------------------------------------------------------------------------------


def pca_reconstruction_mse(train_x: torch.Tensor, test_x: torch.Tensor, components: int) -> float:
    """Test MSE of the linear code of the same size: PCA fit on ``train_x`` (N, 784), each test
    image projected on the top ``components`` directions and back (mean over images and pixels).
    """
    x = train_x.double()
    mean = x.mean(0)
    centred = x - mean
    scatter = centred.T @ centred  # (784, 784): the covariance up to a factor
    _, vectors = torch.linalg.eigh(scatter)  # ascending eigenvalues
    top = vectors[:, -components:]  # (784, k)
    t = test_x.double() - mean
    reconstructed = (t @ top) @ top.T
    return float((reconstructed - t).square().mean())


def pca_2d(codes: torch.Tensor) -> tuple[np.ndarray, list[float]]:
    """Project ``codes`` (N, D) on their first two principal components.

    Returns:
        ``(xy (N, 2) float32, [explained variance ratio of PC1, PC2])``, by the SVD of the centred
        codes.
    """
    rows = codes.double().numpy()
    directions, _, ratio = principal_components(rows, 2)
    xy = (rows - rows.mean(axis=0)) @ directions.T  # (N, 2)
    return xy.astype(np.float32), [float(r) for r in ratio]


def latent_map(
    codes: torch.Tensor,
    labels: torch.Tensor,
    out_dir: str | Path,
    *,
    method: str = "pca",
    points: int | None = None,
    seed: int = 0,
) -> tuple[dict[str, Any], list[Path]]:
    """2-D map of the codes coloured by class: figure (PNG, PDF) and ``latent_map.npz``.

    Args:
        codes: (N, 64) codes of the test set; labels: (N,) classes.
        method: "pca" (default) or "tsne" (sklearn, seeded).
        points: how many codes to map (a stratified seeded subset); None = all for PCA, 3,000 for
            t-SNE.

    Returns:
        ``({method, points, explained_variance_ratio}, files)``.
    """
    if method not in ("pca", "tsne"):
        raise ConfigError(f"latent map must be 'pca' or 'tsne', got {method!r}")
    n = int(labels.shape[0])
    points = points if points is not None else (n if method == "pca" else TSNE_POINTS)
    index = torch.arange(n) if points >= n else stratified_split(labels, points, seed)[1]
    codes, labels = codes[index], labels[index]
    if method == "pca":
        xy, ratio = pca_2d(codes)
        axis = [f"PC{k + 1} ({100 * r:.1f}% of variance)" for k, r in enumerate(ratio)]
    else:
        from sklearn.manifold import TSNE

        with blas_threads(1):  # see linear_probe: spinning OpenMP threads on a busy machine
            xy = (
                TSNE(
                    n_components=2,
                    init="pca",
                    learning_rate="auto",
                    perplexity=30.0,
                    random_state=seed,
                )
                .fit_transform(codes.double().numpy())
                .astype(np.float32)
            )
        ratio, axis = None, ["t-SNE 1", "t-SNE 2"]
    out_dir = Path(out_dir)
    with print_style():  # drawn at the size the report prints it
        return _draw_latent_map(xy, labels, index, axis, method, seed, out_dir, ratio)


def _draw_latent_map(
    xy: np.ndarray,
    labels: torch.Tensor,
    index: torch.Tensor,
    axis: list[str],
    method: str,
    seed: int,
    out_dir: Path,
    ratio: list[float] | None,
) -> tuple[dict[str, Any], list[Path]]:
    fig, ax = plt.subplots(figsize=(0.8 * PRINT_WIDTH_IN, 3.6))
    colours = plt.get_cmap("tab10")
    label_array = labels.numpy()
    marker = 2 if len(index) > 4000 else 5
    # One scatter in a random order: plotting class by class would bury the early classes under the
    # late ones.
    order = np.random.default_rng(seed).permutation(len(label_array))
    ax.scatter(
        xy[order, 0],
        xy[order, 1],
        s=marker,
        c=colours(label_array[order]),
        alpha=0.6,
        linewidths=0,
        rasterized=True,
    )
    handles = [
        Line2D([], [], ls="", marker="o", markersize=5, color=colours(k), label=name)
        for k, name in enumerate(CLASSES)
    ]
    ax.set_xlabel(axis[0])
    ax.set_ylabel(axis[1])
    ax.set_title(
        f"64-d codes of {len(index):,} test images ({'PCA' if method == 'pca' else 't-SNE'}), "
        "coloured by class\n(the labels were never used in training)"
    )
    ax.legend(
        handles=handles, title="class", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False
    )
    fig.tight_layout()
    files = save_figure(fig, out_dir / LATENT_FIGURE, bbox_inches=None, dpi=200)
    files.append(
        atomic_save_npz(
            out_dir / f"{LATENT_FIGURE}.npz",
            xy=xy.astype(np.float32),
            labels=label_array.astype(np.int64),
            index=index.numpy().astype(np.int64),
        )
    )
    return {"method": method, "points": int(len(index)), "explained_variance_ratio": ratio}, files


# --- linear probes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    """A fitted probe's accuracies, whether lbfgs converged within ``max_iter``, and its fit
    time."""

    test_accuracy: float
    train_accuracy: float
    converged: bool
    seconds: float


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    max_iter: int = 1000,
) -> ProbeResult:
    """Multinomial logistic regression (StandardScaler + sklearn ``LogisticRegression``, lbfgs,
    C=1)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    # One BLAS/OpenMP thread: when the cores are shared, spinning BLAS threads slow lbfgs down
    # many times over.
    with warnings.catch_warnings(), blas_threads(1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported through `converged` instead
        probe.fit(train_x, train_y)
    iterations = int(np.max(probe[-1].n_iter_))
    return ProbeResult(
        test_accuracy=float(probe.score(test_x, test_y)),
        train_accuracy=float(probe.score(train_x, train_y)),
        converged=iterations < max_iter,
        seconds=time.perf_counter() - start,
    )


def linear_probes(
    model: Autoencoder,
    train: Split,
    test: Split,
    *,
    test_codes: torch.Tensor | None = None,
    train_size: int | None = 10_000,
    max_iter: int = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Probe the 64-d codes and the raw pixels with the same classifier on the same images.

    Both probes are fit on a stratified seeded subset of ``train_size`` training images (None = all)
    and scored on the whole test set.

    Returns:
        ``{code_accuracy, pixel_accuracy, train_size, test_size, max_iter, code_train_accuracy,
        pixel_train_accuracy, code_converged, pixel_converged, code_seconds, pixel_seconds}``.
    """

    subset = train.subset(train_size, seed=seed) if train_size is not None else train
    train_pixels, train_y = subset.tensors()
    test_pixels, test_y = test.tensors()
    train_codes = encode_split(model, subset, device)
    test_codes = test_codes if test_codes is not None else encode_split(model, test, device)
    code = linear_probe(
        train_codes.numpy(), train_y.numpy(), test_codes.numpy(), test_y.numpy(), max_iter=max_iter
    )
    pixel = linear_probe(
        train_pixels.numpy(),
        train_y.numpy(),
        test_pixels.numpy(),
        test_y.numpy(),
        max_iter=max_iter,
    )
    return {
        "code_accuracy": code.test_accuracy,
        "pixel_accuracy": pixel.test_accuracy,
        "train_size": len(subset),
        "test_size": len(test),
        "max_iter": max_iter,
        "code_train_accuracy": code.train_accuracy,
        "pixel_train_accuracy": pixel.train_accuracy,
        "code_converged": code.converged,
        "pixel_converged": pixel.converged,
        "code_seconds": code.seconds,
        "pixel_seconds": pixel.seconds,
    }
