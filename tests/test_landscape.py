"""Loss landscape: PCA plane vs torch.linalg.svd, grid points vs direct forward passes,
reliability."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fashionlab import cli
from fashionlab.errors import ConfigError
from fashionlab.experiments.landscape import (
    LandscapeConfig,
    Trajectory,
    TrajectoryRecorder,
    check_trajectory,
    evaluate_points,
    loss_landscape,
    pca_plane,
    plane_losses,
)
from fashionlab.experiments.landscape.plots import landscape_figure, plotly_figure
from fashionlab.models import model_from_name
from fashionlab.population import fit
from fashionlab.train import TrainConfig

REL = 1e-5  # float32 forward passes of the same parameters, summed in a different order


class SmallNet(nn.Module):
    """Not our MLP: a conv input layer, BatchNorm (buffers) and dropout (must be off)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2)  # (B, 1, 8, 8) -> (B, 4, 3, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


def _train_small(seed: int, run: int = 0, steps: int = 30) -> tuple[SmallNet, Trajectory]:
    """A hand-written SGD loop (not fit): the recorder is a plain on_step hook."""
    torch.manual_seed(seed)
    model = SmallNet()
    g = torch.Generator().manual_seed(123)
    X, y = torch.randn(200, 1, 8, 8, generator=g), torch.randint(0, 3, (200,), generator=g)
    recorder = TrajectoryRecorder(5, run=run)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    recorder(0, 0.0, model, float("nan"))
    for step in range(1, steps + 1):
        index = torch.randint(0, 200, (32,), generator=g)
        loss = F.cross_entropy(model(X[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        recorder(step, step / 10, model, loss.item())
    recorder.finish(model)
    return model, recorder.trajectory()


@pytest.fixture(scope="module")
def small() -> tuple[SmallNet, Trajectory, torch.Tensor, torch.Tensor]:
    model, trajectory = _train_small(seed=0)
    g = torch.Generator().manual_seed(123)
    X, y = torch.randn(200, 1, 8, 8, generator=g), torch.randint(0, 3, (200,), generator=g)
    return model, trajectory, X, y


@pytest.fixture(scope="module")
def small_result(small):
    model, trajectory, X, y = small
    return loss_landscape(model, trajectory, X, y, resolution=7, margin=0.3)


def _direct_loss(
    model: nn.Module,
    theta: np.ndarray,
    X: torch.Tensor,
    y: torch.Tensor,
    buffers: np.ndarray | None = None,
) -> float:
    """Reference: copy the parameters (and float buffers) into a model and run one plain forward
    pass."""
    ref = copy.deepcopy(model)
    nn.utils.vector_to_parameters(torch.as_tensor(theta, dtype=torch.float32), ref.parameters())
    if buffers is not None and buffers.size:
        floats = [b for b in ref.buffers() if b.is_floating_point()]
        nn.utils.vector_to_parameters(torch.as_tensor(buffers, dtype=torch.float32), floats)
    ref.eval()
    with torch.no_grad():
        return float(F.cross_entropy(ref(X), y))


def test_recorder_with_fit_keeps_initial_and_final(tiny_train_val):
    train = tiny_train_val[0].subset(500, seed=2)
    torch.manual_seed(0)
    model = model_from_name("mlp_2x16")
    initial = nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    recorder = TrajectoryRecorder(5)
    fit(model, train, TrainConfig(epochs=2, batch_size=50, lr=0.05), on_step=recorder)
    recorder.finish(model)
    trajectory = recorder.trajectory()
    assert trajectory.step.tolist() == list(
        range(0, 21, 2)
    )  # 10 steps per epoch, 5 snapshots per epoch
    np.testing.assert_array_equal(trajectory.params[0], initial.numpy())
    np.testing.assert_array_equal(
        trajectory.params[-1], nn.utils.parameters_to_vector(model.parameters()).detach()
    )
    assert np.isnan(trajectory.train_loss[0]) and np.isfinite(trajectory.train_loss[1:]).all()
    assert trajectory.epoch_fraction[-1] == pytest.approx(2.0)
    assert trajectory.param_names[0] == "body.0.weight" and trajectory.param_shapes[0] == (16, 784)


def test_trajectory_save_load_roundtrip(small, tmp_path):
    _, trajectory, _, _ = small
    loaded = Trajectory.load(trajectory.save(tmp_path / "trajectory.npz"))
    for key in ("params", "step", "epoch_fraction", "train_loss", "run", "buffers"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(trajectory, key))
    assert (
        loaded.param_names == trajectory.param_names
        and loaded.param_shapes == trajectory.param_shapes
    )
    assert loaded.buffer_names == ("bn.running_mean", "bn.running_var")


def test_pca_plane_matches_svd_of_centred_matrix(small):
    _, trajectory, _, _ = small
    plane = pca_plane(trajectory)
    thetas = trajectory.params.astype(np.float64)
    relative = thetas - thetas[-1]
    centred = torch.from_numpy(relative - relative.mean(axis=0))
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    d = plane.directions
    np.testing.assert_allclose(d @ d.T, np.eye(2), atol=1e-12)  # orthonormal
    # Same plane: the cosines of the principal angles between the two spans are all 1.
    cosines = torch.linalg.svdvals(torch.from_numpy(d) @ vh[:2].T)
    np.testing.assert_allclose(cosines.numpy(), [1.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(
        plane.explained_variance_ratio, (s[:2] ** 2 / (s**2).sum()).numpy(), rtol=1e-9
    )
    np.testing.assert_allclose(plane.coords, relative @ d.T, atol=1e-12)  # exact projections
    np.testing.assert_array_equal(plane.coords[-1], [0.0, 0.0])  # the final model is the origin
    np.testing.assert_array_equal(plane.centre, thetas[-1])


@pytest.mark.parametrize("factor", [True, False], ids=["factorised-input-layer", "generic-vmap"])
def test_grid_value_equals_direct_forward_pass(small, factor):
    model, trajectory, X, y = small
    model.train()  # the landscape must switch to eval itself and give the mode back
    result = loss_landscape(
        model, trajectory, X, y, resolution=7, margin=0.3, factor_input_layer=factor
    )
    assert model.training and model.drop.training
    assert result.input_layer == ("conv" if factor else None)
    assert result.loss.shape == (7, 7)
    d1, d2 = result.plane.directions
    for k, j in [(0, 0), (3, 5), (6, 6), (2, 1), (6, 0)]:  # loss[k, j] is at (a[j], b[k])
        theta = result.plane.centre + result.a[j] * d1 + result.b[k] * d2
        assert result.loss[k, j] == pytest.approx(_direct_loss(model, theta, X, y), rel=REL)


def test_final_model_sits_at_origin_with_its_direct_loss(small, small_result):
    model, trajectory, X, y = small
    model.eval()
    with torch.no_grad():
        direct = float(F.cross_entropy(model(X), y))
    assert result_coords_final(small_result) == (0.0, 0.0)
    assert small_result.centre_loss == pytest.approx(direct, rel=REL)
    assert small_result.trajectory_loss[-1] == pytest.approx(direct, rel=REL)


def result_coords_final(result) -> tuple[float, float]:
    return tuple(float(v) for v in result.coords[result.trajectory.final_index(0)])


def test_path_heights_are_the_snapshots_own_losses(small, small_result):
    model, trajectory, X, y = small
    direct = [
        _direct_loss(model, trajectory.params[i], X, y, trajectory.buffers[i])
        for i in range(len(trajectory))
    ]
    np.testing.assert_allclose(small_result.trajectory_loss, direct, rtol=REL)
    # The figures plot exactly these heights (not the surface under the projection).
    fig = landscape_figure(small_result)
    (path,) = [line for line in fig.axes[0].lines if line.get_label().startswith("SGD path")]
    xs, ys, zs = path.get_data_3d()
    np.testing.assert_array_equal(zs, small_result.trajectory_loss)
    np.testing.assert_array_equal(np.column_stack([xs, ys]), small_result.coords)
    (flat,) = [line for line in fig.axes[1].lines if line.get_label() == "SGD path"]
    np.testing.assert_array_equal(flat.get_xydata(), small_result.coords)
    traces = [t for t in plotly_figure(small_result).data if t.name == "run 1 path"]
    np.testing.assert_array_equal(traces[0].z, small_result.trajectory_loss)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_two_runs_joint_pca_keeps_each_paths_own_losses(small):
    _, _, X, y = small
    model_a, run_a = _train_small(seed=0, run=0)
    model_b, run_b = _train_small(seed=1, run=1)
    trajectory = Trajectory.concat([run_a, run_b])
    result = loss_landscape(model_a, trajectory, X, y, resolution=5)
    plane = result.plane
    assert plane.construction == "joint-pca"
    np.testing.assert_allclose(
        plane.centre, (run_a.params[-1].astype(np.float64) + run_b.params[-1]) / 2
    )
    rows_b = trajectory.run == 1
    direct_b = [
        _direct_loss(model_b, p, X, y, b) for p, b in zip(run_b.params, run_b.buffers, strict=True)
    ]
    np.testing.assert_allclose(result.trajectory_loss[rows_b], direct_b, rtol=REL)
    fig = landscape_figure(result)
    assert any("joint PCA" in text.get_text() for text in fig.texts)
    assert {line.get_label() for line in fig.axes[1].lines} >= {"run 1", "run 2"}
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_grid_larger_than_one_chunk_is_chunked_with_identical_results(small):
    model, trajectory, X, y = small
    plane = pca_plane(trajectory)
    coords = np.stack(
        [g.ravel() for g in np.meshgrid(np.linspace(-1, 1, 4), np.linspace(-1, 1, 3))], axis=1
    )
    whole = plane_losses(model, plane.centre, plane.directions, coords, X, y, memory_budget_mb=512)
    from fashionlab.experiments.landscape.grid import _Evaluator

    for budget, factor in [(0.3, True), (0.3, False), (0.04, True)]:
        evaluator = _Evaluator(model, X, y, criterion=None, memory_budget_mb=budget, device="cpu")
        assert evaluator.points_per_chunk < len(coords)  # really several chunks
        chunked = evaluator.plane(plane.centre, plane.directions, coords, factor_input_layer=factor)
        np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    assert evaluator.examples_per_chunk < len(X)  # the smallest budget also splits the examples
    rows = slice(0, 5)
    snapshots = evaluate_points(
        model,
        trajectory.params[rows],
        X,
        y,
        buffers=trajectory.buffers[rows],
        memory_budget_mb=0.04,
    )
    np.testing.assert_allclose(
        snapshots,
        evaluate_points(model, trajectory.params[rows], X, y, buffers=trajectory.buffers[rows]),
        rtol=1e-6,
    )


def test_unusable_trajectories_are_refused_with_a_clear_message(small):
    model, trajectory, X, y = small
    p = trajectory.params
    two = Trajectory(
        np.stack([p[0], p[0], p[-1], p[-1]]),
        np.arange(4),
        np.arange(4) / 4,
        np.zeros(4),
        np.zeros(4),
    )
    with pytest.raises(ConfigError, match="only 2 distinct snapshot"):
        pca_plane(two)
    broken = p.copy()
    broken[3, 5] = np.nan
    nan_trajectory = Trajectory(
        broken,
        trajectory.step,
        trajectory.epoch_fraction,
        trajectory.train_loss,
        trajectory.run,
        trajectory.buffers,
    )
    with pytest.raises(ConfigError, match=r"snapshot 3 .* NaN/inf .*diverged"):
        loss_landscape(model, nan_trajectory, X, y)
    with pytest.raises(ConfigError, match=r"snapshots have \d+ parameters but the model has 195"):
        loss_landscape(nn.Linear(64, 3), trajectory, X, y)
    line = Trajectory(
        np.stack([p[0] + t * (p[-1] - p[0]) for t in (0.0, 0.5, 1.0)]),
        np.arange(3),
        np.arange(3),
        np.zeros(3),
        np.zeros(3),
    )
    with pytest.raises(ConfigError, match="on a line"):
        pca_plane(line)
    with pytest.raises(ConfigError, match="memory_budget_mb=1e-06 is too small"):
        loss_landscape(model, trajectory, X, y, memory_budget_mb=1e-6)
    with pytest.raises(ConfigError, match="resolution"):
        loss_landscape(model, trajectory, X, y, resolution=1)
    with pytest.raises(ConfigError, match="same number"):
        loss_landscape(model, trajectory, X, y[:10])
    with pytest.raises(ConfigError, match="params must be"):
        Trajectory(p[0], [0], [0.0], [0.0], [0])
    check_trajectory(trajectory, model)  # the good one passes


def test_trajectory_load_refuses_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read trajectory"):
        Trajectory.load(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ConfigError, match="not a trajectory file"):
        Trajectory.load(tmp_path / "other.npz")


def test_config_refuses_impossible_settings():
    with pytest.raises(ConfigError, match="runs"):
        LandscapeConfig(runs=0)
    with pytest.raises(ConfigError, match="snapshots_per_epoch"):
        LandscapeConfig(snapshots_per_epoch=0)
    with pytest.raises(ConfigError, match="subset"):
        LandscapeConfig(subset=10)
    with pytest.raises(ConfigError, match="threads"):
        LandscapeConfig(threads=0)
    spec = {"hidden_layers": 2, "units": 8}
    assert LandscapeConfig(model=spec).to_dict()["model"] == spec


def test_cli_reports_bad_options_in_one_line(capsys):
    assert cli.main(["landscape", "--resolution", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: resolution must be") and "\n" not in err
    assert cli.main(["landscape", "--model", "{bad json", "--no-progress"]) == 1
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_writes_every_output_and_surface_npz_is_self_sufficient(
    real_data_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    code = cli.main(
        [
            "landscape",
            "--quick",
            "--runs",
            "2",
            "--epochs",
            "2",
            "--subset",
            "640",
            "--eval-examples",
            "500",
            "--resolution",
            "7",
            "--out",
            str(out),
            "--data-dir",
            str(real_data_dir),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    stage = out / "landscape"
    names = {
        "trajectory.npz",
        "surface.npz",
        "landscape.png",
        "landscape.pdf",
        "landscape.html",
        "landscape.json",
    }
    assert names <= {p.name for p in stage.iterdir()}
    from fashionlab.atomic import read_json

    summary = read_json(stage / "landscape.json")
    assert summary["runs"] == 2 and summary["construction"] == "joint-pca"
    assert summary["grid"]["resolution"] == 7 and summary["n_snapshots"] == sum(
        summary["snapshots_per_run"]
    )
    assert 0 < sum(summary["explained_variance_ratio"]) <= 1
    html = (stage / "landscape.html").read_text()
    assert (
        '<script src="http' not in html and "plotly" in html.lower()
    )  # plotly.js inline: works offline
    # Anyone can recompute a grid point from surface.npz alone (plus the public data and the model
    # name).
    with np.load(stage / "surface.npz") as surface:
        k, j = 2, 5
        theta = (
            surface["centre"] + surface["a"][j] * surface["d1"] + surface["b"][k] * surface["d2"]
        )
        assert list(surface["param_names"]) == [
            n for n, _ in model_from_name("mlp_4x50").named_parameters()
        ]
        from fashionlab.data import load_train

        examples = load_train(real_data_dir).take(torch.as_tensor(surface["eval_indices"]))
        X, y = examples.tensors()
        assert surface["loss"][k, j] == pytest.approx(
            _direct_loss(model_from_name("mlp_4x50"), theta, X, y), rel=REL
        )
    with np.load(stage / "trajectory.npz") as trajectory:
        assert trajectory["params"].shape == (summary["n_snapshots"], summary["n_params"])
        assert set(trajectory["run"].tolist()) == {0, 1}
