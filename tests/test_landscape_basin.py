"""The landscape's two runs in their basins: the basin criterion, the margin growth, the plateau
rule, the spike replay, and the figure at print size (the default stage on the real data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.text import Text

from fashionlab.atomic import read_json
from fashionlab.experiments.landscape import LandscapeConfig, loss_landscape, run_landscape
from fashionlab.experiments.landscape.basin import basin_check, basin_minimum, edges_touched
from fashionlab.experiments.landscape.plots import FIGURE_SIZE, landscape_figure
from fashionlab.experiments.landscape.training import thin_trajectory
from test_landscape import _train_small  # the tests folder is on sys.path (rootdir)

A = np.linspace(-2.0, 2.0, 21)
B = np.linspace(-1.0, 1.0, 11)


def _bowl(a0: float, b0: float) -> np.ndarray:
    grid_a, grid_b = np.meshgrid(A, B)
    return (grid_a - a0) ** 2 + 4 * (grid_b - b0) ** 2  # (len(B), len(A))


def test_descent_finds_the_bowls_bottom_and_tells_an_edge_minimum():
    loss = _bowl(0.6, -0.2)
    k, j = basin_minimum(loss, A, B, np.array([-1.5, 0.9]))
    assert (A[j], B[k]) == pytest.approx((0.6, -0.2))
    assert edges_touched((k, j), loss.shape) == []
    # The bottom lies beyond the high-a edge: descent stops on that edge.
    k, j = basin_minimum(_bowl(3.0, 0.0), A, B, np.array([0.0, 0.0]))
    assert edges_touched((k, j), loss.shape) == [1]
    assert edges_touched((0, 0), loss.shape) == [0, 2]


def test_two_bowls_each_final_model_finds_its_own_minimum():
    loss = np.minimum(_bowl(-1.4, 0.0) + 0.1, _bowl(1.4, 0.2))
    left = basin_minimum(loss, A, B, np.array([-0.9, 0.5]))
    right = basin_minimum(loss, A, B, np.array([0.9, -0.5]))
    assert A[left[1]] == pytest.approx(-1.4) and A[right[1]] == pytest.approx(1.4)


def test_basin_criterion_tolerance_and_edge():
    loss = _bowl(0.0, 0.0)
    span = loss.max() - loss.min()
    point = np.array([0.0, 0.0])
    inside = basin_check(loss, A, B, point, 0.019 * span, 0.0, tol=0.02)
    assert inside["in_basin"] and inside["surface_min_interior"]
    assert inside["gap_over_range"] == pytest.approx(0.019)
    # Own loss fine, but the surface under the final model is too high above the minimum.
    assert not basin_check(loss, A, B, point, 0.0, 0.021 * span, tol=0.02)["in_basin"]
    # Below the minimum (off the plane) is inside; an edge minimum is not.
    assert basin_check(loss, A, B, point, -1.0, 0.0)["in_basin"]
    edge = basin_check(_bowl(3.0, 0.0), A, B, point, -1.0, -1.0)
    assert not edge["surface_min_interior"] and not edge["in_basin"]


def test_margins_grow_until_every_basin_is_inside_the_grid():
    model, trajectory = _train_small(seed=0, steps=60)
    g = torch.Generator().manual_seed(123)
    X, y = torch.randn(200, 1, 8, 8, generator=g), torch.randint(0, 3, (200,), generator=g)
    fixed = loss_landscape(model, trajectory, X, y, resolution=9, margin=0.0)
    grown = loss_landscape(model, trajectory, X, y, resolution=9, margin=0.0, margin_growths=6)
    final = fixed.coords[trajectory.final_index(0)]
    touched = edges_touched(basin_minimum(fixed.loss, fixed.a, fixed.b, final), fixed.loss.shape)
    assert touched, "a margin of 0 should put the final model's basin minimum on an edge"
    assert grown.margin_growths >= 1
    assert all(grown.margin[side] > 0 for side in touched)
    index = basin_minimum(grown.loss, grown.a, grown.b, grown.coords[trajectory.final_index(0)])
    assert edges_touched(index, grown.loss.shape) == []


def _small_texts(figure) -> list[tuple[str, float]]:
    figure.canvas.draw()  # tick labels exist only once the figure is drawn
    texts = [t for t in figure.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert len(texts) > 20  # tick labels, axis labels, legend, colour bar, the plane's note
    return [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < 7]


def test_two_run_figure_has_no_text_under_7pt_at_its_print_size():
    import matplotlib.pyplot as plt

    from fashionlab.experiments.landscape import Trajectory

    model, first = _train_small(seed=0, run=0)
    _, second = _train_small(seed=1, run=1)
    g = torch.Generator().manual_seed(123)
    X, y = torch.randn(200, 1, 8, 8, generator=g), torch.randint(0, 3, (200,), generator=g)
    result = loss_landscape(model, Trajectory.concat([first, second]), X, y, resolution=7)
    figure = landscape_figure(result, basin_minima=[(0.0, 0.0), (1.0, 1.0)])
    try:
        assert tuple(figure.get_size_inches()) == pytest.approx(FIGURE_SIZE)
        assert not _small_texts(figure)
        labels = figure.legends[0].get_texts()
        assert {"run 1", "run 2"} <= {t.get_text() for t in labels}
        assert not figure.axes[1].get_legend()  # the legend sits below the axes, off the data
    finally:
        plt.close(figure)


def test_thinning_keeps_the_ends_and_the_run_indices():
    _, first = _train_small(seed=0, run=0, steps=60)
    _, second = _train_small(seed=1, run=3, steps=60)
    from fashionlab.experiments.landscape import Trajectory

    both = Trajectory.concat([first, second])
    both = type(both)(**{**both.__dict__, "run": np.r_[first.run, second.run]})
    thin = thin_trajectory(both, 8)
    for run, part in ((0, first), (3, second)):
        rows = thin.run == run
        assert 3 <= rows.sum() <= 8
        assert thin.step[rows][0] == part.step[0] and thin.step[rows][-1] == part.step[-1]
        np.testing.assert_array_equal(thin.params[rows][-1], part.params[-1])


def test_config_refuses_a_schedule_that_fights_the_plateau_rule():
    from fashionlab.errors import ConfigError
    from fashionlab.train import TrainConfig

    with pytest.raises(ConfigError, match="plateau"):
        LandscapeConfig(train=TrainConfig(epochs=5, batch_size=50, schedule="cosine"))
    LandscapeConfig(train=TrainConfig(epochs=5, batch_size=50, schedule="cosine"), plateau_tol=None)
    with pytest.raises(ConfigError, match="basin_tol"):
        LandscapeConfig(basin_tol=0.0)


@pytest.fixture(scope="module")
def default_stage(real_data_dir, tmp_path_factory):
    """The default landscape stage on the real data (two runs, the plateau rule, grown margins)."""
    out = tmp_path_factory.mktemp("run") / "landscape"  # a run folder, as the report reads it
    run = run_landscape(
        out, LandscapeConfig(threads=1), data_dir=real_data_dir, device="cpu", progress=False
    )
    return out, run


@pytest.mark.slow
def test_default_stage_puts_both_runs_in_their_basins_on_one_plane(default_stage):
    out, run = default_stage
    summary = read_json(out / "landscape.json")
    assert summary["runs"] == 2 and summary["construction"] == "joint-pca"
    with np.load(out / "surface.npz") as surface:
        assert set(surface["trajectory_run"].tolist()) == {0, 1}  # one plane, both paths
    for row in summary["per_run"]:
        assert row["stop_reason"] == "plateau", row["epochs"]
        assert row["surface_min_interior"], row
        assert row["gap_over_range"] <= 0.02 and row["plane_gap_over_range"] <= 0.02, row
        assert row["in_basin"]
        assert row["final_loss"] < row["initial_loss"] / 5
    assert summary["in_basin"]


@pytest.mark.slow
def test_default_stage_explains_each_spike_by_an_exact_replay(default_stage):
    _, run = default_stage
    for row in run.summary["per_run"]:
        spike = row["spike"]
        assert spike is not None and spike["replay_matches_snapshot"], spike
        assert spike["from_step"] < spike["step"] <= spike["to_step"]
        assert spike["loss_after"] > spike["loss_before"]


@pytest.mark.slow
def test_default_figure_is_drawn_at_print_size_with_no_text_under_7pt(default_stage):
    out, run = default_stage
    minima = [tuple(row["surface_min_coords"]) for row in run.summary["per_run"]]
    figure = landscape_figure(run.result, basin_minima=minima)
    try:
        assert tuple(figure.get_size_inches()) == pytest.approx(FIGURE_SIZE)
        assert not _small_texts(figure)
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)
    assert run.summary["figure_size_in"] == pytest.approx(list(FIGURE_SIZE))
    # The PDF is exactly the figure's size (no tight bounding box), so the report's width holds.
    from pypdf import PdfReader

    box = PdfReader(out / "landscape.pdf").pages[0].mediabox
    assert (float(box.width) / 72, float(box.height) / 72) == pytest.approx(FIGURE_SIZE, abs=0.01)


@pytest.mark.slow
def test_default_stage_html_and_report_section_show_both_runs(default_stage):
    out, run = default_stage
    html = (out / "landscape.html").read_text()
    assert "run 1 path" in html and "run 2 path" in html
    from fashionlab.report.sections import landscape

    text = landscape(out.parent)
    assert "Both runs end in a basin" in text
    for row in run.summary["per_run"]:
        assert f"{row['final_loss']:.4f}" in text
    spike = run.summary["per_run"][0]["spike"]  # one sentence, on run 1's largest rise
    assert f"is one SGD step, {spike['step']:,}" in text
    # the main figure: run 1 in its own plane; both runs in the joint plane after it
    own = run.summary["own_plane"]
    assert own["run"] == 0 and own["basin"]["in_basin"]
    assert own["n_snapshots"] == run.summary["snapshots_per_run"][0]
    assert "Run 1 in its own plane" in text and "landscape_two_runs.pdf" in text
    assert text.index("/landscape/landscape.pdf") < text.index("/landscape/landscape_two_runs.pdf")
    # printed at the width it was drawn for (the report reads it from the PDF's page size)
    assert f'image("/landscape/landscape.pdf", width: {FIGURE_SIZE[0] * 72:.2f}pt)' in text
