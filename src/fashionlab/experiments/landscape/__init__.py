"""Loss landscape along the top-2 PCA directions of the SGD trajectory (Li et al. 2018, sec. 7).

During :func:`fashionlab.train.fit` a :class:`TrajectoryRecorder` keeps flattened parameter
snapshots theta_i (about 5 per epoch, always the initial and the final parameters). PCA on
theta_i - theta_final (sklearn ``PCA(n_components=2)``, which centres the rows first) gives two
orthonormal directions d1, d2; the final model sits at the origin and each snapshot's coordinates
are the exact projections ``(theta_i - theta_final) . d_j``. The loss surface
``f_CE(theta_final + a d1 + b d2)`` is evaluated on a grid chosen from the projected path plus a
margin, many grid points per forward pass (``torch.func.functional_call`` + ``vmap``), in chunks
sized from a memory budget, with BatchNorm in eval mode and dropout off.

Flattening order: ``torch.nn.utils.parameters_to_vector(model.parameters())`` (registration
order, shared parameters once; names and shapes are saved). Buffers (BatchNorm running stats)
are not directions of the plane: each snapshot keeps its own floating buffers, used for its own
loss; every grid point uses the buffers of the final model passed to :func:`loss_landscape`.

Speed: when the module's first parameterised layer is a ``Linear``/``Conv`` applied to the raw
input, its output is linear in its (weight, bias), so on the plane it is ``z0 + a z1 + b z2``
with three products computed once (float64); the rest of the network runs batched as usual.

Several runs (``runs > 1``): one plane cannot hold every endpoint. The construction is a *joint
PCA*: the origin c is the mean of the runs' final parameters and the directions are the top-2
principal components of all snapshots of all runs (theta_i - c); it is written on the figures.

Outputs of :func:`run_landscape` (the stage directory, e.g. ``runs/NAME/landscape/``):

``trajectory.npz`` (:meth:`Trajectory.save`)::

    params (K, P) snapshots in flattening order; step (K,) SGD step (0 = initial);
    epoch_fraction (K,); train_loss (K,) minibatch f_CE at that step (NaN at step 0);
    run (K,) run index; buffers (K, B) floating buffers, flattened; param_names, param_shapes
    ("50,784"), buffer_names, buffer_shapes: the flattening order.

``surface.npz`` (:func:`save_surface_npz`)::

    d1, d2 (P,) float64 unit directions; centre (P,) float64 origin of the plane (theta_final, or
    the mean of the finals for joint PCA); a (Ra,), b (Rb,) grid coordinates; loss (Rb, Ra) with
    loss[k, l] = f_CE(centre + a[l] d1 + b[k] d2) (np.meshgrid(a, b) order); trajectory_coords
    (K, 2); trajectory_loss (K,) each snapshot's own f_CE (its parameters and buffers, eval mode,
    same examples); trajectory_plane_loss (K,) f_CE at its projection onto the plane;
    trajectory_residual (K,) ||theta_i - c - projection|| / ||theta_i - c||; trajectory_run,
    trajectory_step, trajectory_epoch_fraction (K,); explained_variance_ratio (2,),
    explained_variance (2,); centre_loss (); buffers (B,) and buffer_names/buffer_shapes used on
    the grid; param_names, param_shapes; construction ("pca" | "joint-pca"); n_examples ();
    eval_indices (N,) indices into the training images (file order) of the loss examples.

``landscape.json`` (read by the report), schema_version 1::

    model, model_config, n_params, config (LandscapeConfig incl. train), device, runs,
    n_snapshots, snapshots_per_run, train_examples, eval_examples, construction,
    construction_text, explained_variance_ratio [pc1, pc2], explained_variance_ratio_sum,
    grid {resolution, margin, points, a_min, a_max, b_min, b_max}, final_loss (run 0),
    final_losses, initial_losses (per run), centre_loss, loss_min, loss_max (grid),
    max_residual, input_layer, points_per_chunk, examples_per_chunk, grid_points_per_second,
    seconds {total, train, grid, plots}, files {trajectory, surface, png, pdf, html}

and ``landscape.png`` / ``landscape.pdf`` (3-D surface + contour panel) and ``landscape.html``
(self-contained interactive Plotly view, works offline).
"""

from __future__ import annotations

# Outside ``__all__`` but importable from here: the grid evaluator (the report lists its source) and the
# stage's file names.
from .evaluate import (
    LandscapeResult,
    _Evaluator,  # noqa: F401
    evaluate_points,
    loss_landscape,
    plane_losses,
    save_surface_npz,
)
from .plane import PCAPlane, grid_axes, pca_plane
from .stage import (
    FIGURE_STEM,  # noqa: F401
    HTML_FILE,  # noqa: F401
    SUMMARY_FILE,  # noqa: F401
    SURFACE_FILE,  # noqa: F401
    TRAJECTORY_FILE,  # noqa: F401
    LandscapeConfig,
    LandscapeRun,
    build_landscape_model,
    run_landscape,
)
from .trajectory import Trajectory, TrajectoryRecorder, check_trajectory

__all__ = [
    "Trajectory", "TrajectoryRecorder", "PCAPlane", "pca_plane", "grid_axes", "check_trajectory",
    "evaluate_points", "plane_losses", "LandscapeResult", "loss_landscape", "save_surface_npz",
    "LandscapeConfig", "LandscapeRun", "build_landscape_model", "run_landscape",
]
