"""Grid points per second: batched landscape evaluation vs the one-point-at-a-time loop of the
reference tools.

The reference tools (Li et al. 2018, ``loss-landscape``'s ``plot_surface.py``, and the libraries
after it) set the model's parameters to one grid point and run a full DataLoader pass over the
examples, point after point. Here, on a 41 x 41 grid of the PCA plane of a real mlp_4x50 trajectory
and the 2,500-example subset:

- reference loop: ``vector_to_parameters`` + a full pass of ``DataLoader(torchvision FashionMNIST
  (ToTensor), batch_size=128)`` per point (timed on ``--reference-points`` points, extrapolated);
- tensor loop: the same, but one forward pass of in-memory tensors per point (no DataLoader);
- batched, generic: ``fashionlab.experiments.landscape`` with ``functional_call`` + ``vmap`` over
  chunks of points;
- batched, default: the same plus the factorised input layer (z0 + a z1 + b z2).

Every method evaluates the same points; the script checks that their losses agree. Run:
``python benchmarks/bench_landscape.py`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _rate(seconds: float, points: int) -> float:
    return points / seconds if seconds > 0 else float("inf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=41)
    parser.add_argument("--examples", type=int, default=2500)
    parser.add_argument(
        "--reference-points", type=int, default=8, help="grid points timed for the reference loop"
    )
    parser.add_argument(
        "--tensor-points", type=int, default=60, help="grid points timed for the tensor loop"
    )
    parser.add_argument(
        "--generic-points",
        type=int,
        default=300,
        help="grid points timed for the generic vmap path",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch CPU threads (default 2 = the target machine)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-budget-mb", type=float, default=128.0)
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    from torch.utils.data import DataLoader, Subset

    from fashionlab.data import load_train, stratified_split, torchvision_dataset
    from fashionlab.experiments.landscape import (
        TrajectoryRecorder,
        grid_axes,
        pca_plane,
        plane_losses,
    )
    from fashionlab.models import model_from_name
    from fashionlab.population import fit
    from fashionlab.runtime import resolve_device, seed_everything
    from fashionlab.threads import pin_threads
    from fashionlab.train import TrainConfig

    pin_threads(args.threads)
    device = resolve_device(args.device)
    full = load_train()
    index, _ = stratified_split(full.labels, len(full) - args.examples, 0)
    subset = full.take(index)
    X, y = subset.tensors(device)

    # A real trajectory (2 epochs) so the grid is the plane the stage would use.
    seed_everything(0)
    model = model_from_name("mlp_4x50")
    recorder = TrajectoryRecorder(5)
    fit(
        model,
        subset,
        TrainConfig(epochs=2, batch_size=50, lr=0.05),
        device=device,
        on_step=recorder,
    )
    recorder.finish(model)
    plane = pca_plane(recorder.trajectory())
    a, b = grid_axes(plane.coords, args.resolution, 0.25)
    mesh = np.stack([g.ravel() for g in np.meshgrid(a, b)], axis=1)  # (R*R, 2)
    n_points = len(mesh)
    rng = np.random.default_rng(0)
    picks = {
        key: np.sort(rng.choice(n_points, min(count, n_points), replace=False))
        for key, count in (
            ("reference", args.reference_points),
            ("tensor", args.tensor_points),
            ("generic", args.generic_points),
        )
    }
    common = {"memory_budget_mb": args.memory_budget_mb, "device": device}

    start = time.perf_counter()
    batched = plane_losses(model, plane.centre, plane.directions, mesh, X, y, **common)
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    generic = plane_losses(
        model,
        plane.centre,
        plane.directions,
        mesh[picks["generic"]],
        X,
        y,
        factor_input_layer=False,
        **common,
    )
    generic_s = time.perf_counter() - start

    def theta(i: int) -> torch.Tensor:
        return torch.as_tensor(
            plane.centre + mesh[i] @ plane.directions, dtype=torch.float32, device=device
        )

    reference_model = model_from_name("mlp_4x50").to(device).eval()
    loader = DataLoader(
        Subset(torchvision_dataset(train=True), index.tolist()), batch_size=128, shuffle=False
    )
    reference, start = [], time.perf_counter()
    with torch.no_grad():
        for i in picks["reference"]:
            nn.utils.vector_to_parameters(theta(i), reference_model.parameters())
            total = sum(
                float(
                    F.cross_entropy(reference_model(xb.to(device)), yb.to(device), reduction="sum")
                )
                for xb, yb in loader
            )
            reference.append(total / len(index))
    reference_s = time.perf_counter() - start
    tensor_loop, start = [], time.perf_counter()
    with torch.no_grad():
        for i in picks["tensor"]:
            nn.utils.vector_to_parameters(theta(i), reference_model.parameters())
            tensor_loop.append(float(F.cross_entropy(reference_model(X), y)))
    tensor_s = time.perf_counter() - start

    rel = lambda got, want: float(np.max(np.abs(np.asarray(got) - want) / np.abs(want)))  # noqa: E731
    rows = [  # (method, points timed, seconds)
        (
            "reference loop: set params + DataLoader pass (b=128)",
            len(picks["reference"]),
            reference_s,
        ),
        ("tensor loop: set params + one in-memory forward", len(picks["tensor"]), tensor_s),
        ("batched: functional_call + vmap (generic)", len(picks["generic"]), generic_s),
        ("batched + factorised input layer (default)", n_points, batched_s),
    ]
    reference_rate = _rate(reference_s, len(picks["reference"]))
    tensor_rate = _rate(tensor_s, len(picks["tensor"]))
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"landscape grid evaluation: mlp_4x50 ({n_params:,} parameters), {args.resolution} x "
        f"{args.resolution} = {n_points:,} points, {len(index):,} examples, device {device}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"{'method':<54}{'points/s':>10}{'grid (s)':>12}{'vs reference':>14}{'vs tensor loop':>16}"
    )
    results = []
    for method, timed, seconds in rows:
        rate = _rate(seconds, timed)
        mark = "" if timed == n_points else "*"
        print(
            f"{method:<54}{rate:>10.2f}{n_points / rate:>11.1f}{mark:1}"
            f"{rate / reference_rate:>13.1f}x{rate / tensor_rate:>15.2f}x"
        )
        results.append(
            {
                "method": method,
                "points_timed": timed,
                "seconds": seconds,
                "points_per_second": rate,
                "grid_seconds": n_points / rate,
                "speedup_vs_reference": rate / reference_rate,
                "speedup_vs_tensor_loop": rate / tensor_rate,
            }
        )
    print(f"* timed on that many grid points (random, seeded) and extrapolated to all {n_points:,}")
    check = {
        "reference": rel(reference, batched[picks["reference"]]),
        "tensor loop": rel(tensor_loop, batched[picks["tensor"]]),
        "generic vmap": rel(generic, batched[picks["generic"]]),
    }
    print(
        "max relative difference from the batched default at the same points: "
        + ", ".join(f"{k} {v:.1e}" for k, v in check.items())
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "resolution": args.resolution,
                    "points": n_points,
                    "examples": len(index),
                    "threads": torch.get_num_threads(),
                    "device": str(device),
                    "methods": results,
                    "max_relative_difference": check,
                },
                fh,
                indent=2,
            )
    worst = max(check.values())
    if worst > 1e-4:
        print(f"FAIL: the methods disagree (max relative difference {worst:.1e})")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
