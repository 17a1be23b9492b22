"""Loss landscape along the top-2 PCA directions of the SGD trajectory (Li et al. 2018, sec. 7).

During :func:`fashionlab.population.fit` a :class:`TrajectoryRecorder` keeps flattened parameter
snapshots theta_i (about 5 per epoch, always the initial and the final parameters). PCA on
theta_i - theta_final (``pca.principal_components``, which centres the rows first) gives two
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

Two runs by default (:mod:`.training`): each trained until the loss on its training subset stops
improving (learning-rate cuts on plateaus), so that it settles in a basin; the grid's margins grow
until the surface's minimum near each final model is inside the grid, and :mod:`.basin` checks
that each final model lies within ``basin_tol`` of the surface's loss range above that minimum.

Outputs of :func:`run_landscape` (``trajectory.npz``, ``surface.npz``, ``landscape.json``, the
figures and ``landscape.html``): ``docs/run-directory.md``.
"""

from __future__ import annotations

# Outside ``__all__`` but importable from here: the grid evaluator (the report lists its source) and
# the stage's file names.
from ..._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "config": ("LandscapeConfig",),
        "trajectory": ("Trajectory", "TrajectoryRecorder", "check_trajectory"),
        "plane": ("PCAPlane", "pca_plane", "grid_axes"),
        "grid": ("evaluate_points", "plane_losses"),
        "evaluate": ("LandscapeResult", "loss_landscape", "save_surface_npz"),
        "basin": ("basin_check", "basin_minimum"),
        "training": ("RunLog", "train_run", "explain_spike"),
        "stage": (
            "LandscapeRun",
            "build_landscape_model",
            "run_landscape",
            "FIGURE_STEM",
            "HTML_FILE",
            "SUMMARY_FILE",
            "SURFACE_FILE",
            "TRAJECTORY_FILE",
        ),
    },
)
