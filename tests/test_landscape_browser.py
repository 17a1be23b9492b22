"""The interactive landscape HTML really renders a surface in headless Chromium (Debian
``chromium``).

The page is opened from a file:// URL with networking disabled, a screenshot is taken, and its
pixels must show a large area in the Viridis colours of the surface with a gradient across the
colour scale (a blank page, a "WebGL is not supported" message or only the colour bar fail).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fashionlab.experiments.landscape import TrajectoryRecorder, loss_landscape
from fashionlab.experiments.landscape.plots import write_landscape_html

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PLOT_AREA = 0.85  # the left part of the page; the colour bar sits at the right edge


def _chromium(fallback: Path = Path("/usr/bin/chromium")) -> str:
    """Path of Debian's chromium; a missing browser fails in CI and skips elsewhere."""
    found = shutil.which("chromium") or (str(fallback) if fallback.exists() else None)
    if found is None:
        message = "headless Chromium not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def surface_pixels(image: np.ndarray) -> tuple[float, float]:
    """(share of the plot area in Viridis colours, spread of those colours over the scale, 0..1)."""
    from matplotlib import colormaps

    palette = colormaps["viridis"](np.linspace(0, 1, 64))[:, :3] * 255  # (64, 3)
    area = image[::3, : int(image.shape[1] * PLOT_AREA) : 3, :3].reshape(-1, 3).astype(np.float64)
    coloured = area[area.max(axis=1) - area.min(axis=1) > 40]  # not white, grey or black
    if len(coloured) == 0:
        return 0.0, 0.0
    distance = np.linalg.norm(coloured[:, None, :] - palette[None, :, :], axis=2)  # (n, 64)
    close = distance.min(axis=1) < 60  # Plotly shades the surface, so allow some distance
    index = distance.argmin(axis=1)[close] / 63
    spread = float(np.percentile(index, 95) - np.percentile(index, 5)) if close.any() else 0.0
    return float(close.sum() / len(area)), spread


def _rendered(image: np.ndarray) -> bool:
    share, spread = surface_pixels(image)
    return share > 0.05 and spread > 0.3


def test_pixel_check_tells_a_surface_from_a_blank_page():
    from matplotlib import colormaps

    blank = np.full((800, 1000, 3), 255, np.uint8)
    assert not _rendered(blank)
    colourbar_only = blank.copy()
    bar = colormaps["viridis"](np.linspace(1, 0, 500))[:, None, :3] * 255
    colourbar_only[100:600, 900:930] = bar.astype(np.uint8)
    assert not _rendered(colourbar_only)
    surface = blank.copy()
    surface[200:600, 150:750] = (
        colormaps["viridis"](np.linspace(0, 1, 600))[None, :, :3] * 255
    ).astype(np.uint8)
    assert _rendered(surface)


def test_missing_chromium_fails_in_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium on this PATH
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="Chromium not installed"):
        _chromium(fallback=tmp_path / "chromium")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        _chromium(fallback=tmp_path / "chromium")


@pytest.fixture(scope="module")
def landscape_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (small) landscape: an MLP trained on random data with a hand-written SGD loop."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(300, 20, generator=g), torch.randint(0, 4, (300,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    recorder = TrajectoryRecorder(5)
    recorder(0, 0.0, model, float("nan"))
    for step in range(1, 41):
        index = torch.randint(0, 300, (30,), generator=g)
        loss = F.cross_entropy(model(X[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        recorder(step, step / 10, model, loss.item())
    recorder.finish(model)
    result = loss_landscape(model, recorder.trajectory(), X, y, resolution=21, margin=0.5)
    return write_landscape_html(result, tmp_path_factory.mktemp("html") / "landscape.html")


def test_html_is_self_contained(landscape_html):
    html = landscape_html.read_text()
    assert "<script src=" not in html  # plotly.js is inline: the page works offline
    assert "Plotly.newPlot" in html and '"type":"surface"' in html.replace(" ", "")


def test_surface_renders_in_headless_chromium(landscape_html, tmp_path):
    from PIL import Image

    chromium = _chromium()
    shot = tmp_path / "shot.png"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        # Software WebGL (SwiftShader) for the 3-D surface; newer Chromium wants the opt-in.
        "--enable-unsafe-swiftshader",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1000,800",
        "--virtual-time-budget=10000",
        landscape_html.resolve().as_uri(),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), (
        f"chromium wrote no screenshot (exit {completed.returncode}): {completed.stderr[-2000:]}"
    )
    image = np.asarray(Image.open(shot).convert("RGB"))
    share, spread = surface_pixels(image)
    assert share > 0.05 and spread > 0.3, (
        f"no rendered surface in the screenshot: {share:.1%} of the plot area in Viridis colours "
        f"(need > 5%), colour spread {spread:.2f} (need > 0.3); chromium said: "
        f"{completed.stderr[-1500:]}"
    )
