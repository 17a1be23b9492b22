"""Tests of ``fashionlab.experiments.heinit``: each identity of the He derivation against its
assumptions and against closed-form values, calibration of the intervals, the depth experiment
against the per-layer factor n Var[w] / 2, torch.nn.init, results.json, the figures, the CLI and the
Typst fragment."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
import torch

from fashionlab.errors import ConfigError
from fashionlab.experiments.heinit import (
    SCHEMES,
    DepthResult,
    HeInitConfig,
    HeInitResult,
    IdentityCheck,
    depth_experiment,
    init_std,
    kaiming_cross_check,
    run_heinit,
    verify_he_init,
)

DERIVATION = (
    Path(__file__).resolve().parents[1] / "src" / "fashionlab" / "report" / "derivation.typ"
)
SMALL = HeInitConfig(samples=30_000, batches=30, depth=6, width=32, depth_batch=64)


@pytest.fixture(scope="module")
def verification() -> HeInitResult:
    return verify_he_init(HeInitConfig())  # the default run: 200,000 draws per setting, ~1 s


@pytest.fixture(scope="module")
def depth() -> dict[str, DepthResult]:
    return {
        activation: depth_experiment(activation, depth=50, width=256, batch=128, negative_slope=0.2)
        for activation in ("relu", "leaky_relu")
    }


def _row(result: HeInitResult, name: str, case: str) -> IdentityCheck:
    matches = [row for row in result.identities if row.name == name and row.case == case]
    assert len(matches) == 1, (name, case, [(r.name, r.case) for r in result.identities])
    return matches[0]


# --- identities -----------------------------------------------------------------------------------


def test_every_identity_holds_exactly_where_its_assumptions_hold(
    verification: HeInitResult,
) -> None:
    rows = verification.identities
    assert {row.name for row in rows} == {
        "sum_variance",
        "product_variance",
        "product_variance_zero_mean",
        "relu_mean",
        "relu_symmetry",
        "relu_zero_probability",
        "relu_second_moment",
        "he_layer_gain",
    }
    assert (
        sum(row.expected_to_hold for row in rows) >= 7
        and sum(not row.expected_to_hold for row in rows) >= 7
    )
    for row in rows:
        assert row.holds == row.expected_to_hold, row
        assert row.ci_low < row.difference < row.ci_high and row.std_error > 0
        if row.expected_to_hold:
            assert abs(row.z_score) <= verification.config.z
        else:  # a clear violation: far outside the interval, not a borderline call
            assert abs(row.z_score) > 15, row
    assert verification.unexpected() == []


def test_intervals_cover_closed_form_values(verification: HeInitResult) -> None:
    n = verification.config.fan_in
    var_w = 2 / n
    var_relu = 0.5 - 1 / (
        2 * math.pi
    )  # Var[ReLU(u)], u ~ N(0, 1): E[x^2] = 1/2, E[x] = 1/sqrt(2 pi)
    # Cov of ReLU(u), ReLU(v) for corr(u, v) = rho (arc-cosine kernel, Cho & Saul 2009)
    theta = math.acos(verification.config.input_correlation)
    cov_relu = (math.sin(theta) + (math.pi - theta) * math.cos(theta) - 1) / (2 * math.pi)
    mu2 = verification.config.weight_shift**2 * var_w
    expected = {  # (name, case) -> true lhs - rhs
        ("sum_variance", "E[w] ≠ 0, correlated inputs"): n * (n - 1) * mu2 * cov_relu,
        ("product_variance_zero_mean", "E[w] ≠ 0"): mu2 * var_relu,
        # w = sqrt(2)(Exp(1) - 1), one input: E[w^2 1{w>0}] = 2 * 2/e = 4/e, E[w^2] = 2,
        # E[x^2] = 1/2
        ("relu_symmetry", "skewed w (zero mean)"): 0.5 * (4 / math.e - (2 - 4 / math.e)),
        ("relu_second_moment", "skewed w (zero mean)"): 1 - 4 / math.e,
        # x = 0 half the time, else P(Exp(1) - 1 <= 0) = 1 - 1/e: P(z <= 0) = 1 - 1/(2e)
        ("relu_zero_probability", "skewed w (zero mean)"): 0.5 - 1 / (2 * math.e),
    }
    for (name, case), true_difference in expected.items():
        row = _row(verification, name, case)
        assert row.ci_low <= true_difference <= row.ci_high, (row, true_difference)
    # He setting: Var[z] = n Var[w] E[x^2] = 1 and Var[w x] = Var[w] / 2
    assert _row(verification, "relu_second_moment", "symmetric w, b = 0").lhs == pytest.approx(
        1.0, rel=0.02
    )
    assert _row(verification, "sum_variance", "i.i.d. inputs").lhs == pytest.approx(1.0, rel=0.02)
    zero_mean = _row(verification, "product_variance_zero_mean", "independent, E[w] = 0")
    assert zero_mean.lhs == pytest.approx(var_w / 2, rel=0.01)
    assert _row(verification, "he_layer_gain", "He, b = 0").lhs == pytest.approx(1.0, rel=0.05)


@pytest.mark.slow
def test_standard_errors_are_calibrated_across_seeds() -> None:
    # Where the identity holds, (lhs - rhs) / SE must look like N(0, 1): an SE that is too large
    # would make "holds" trivially true, one that is too small would make it flaky.
    scores = []
    for seed in range(8):
        result = verify_he_init(HeInitConfig(samples=100_000, batches=50, seed=seed))
        scores += [row.z_score for row in result.identities if row.expected_to_hold]
    assert abs(statistics.mean(scores)) < 0.4
    assert 0.7 < statistics.pstdev(scores) < 1.4


def test_verify_is_seeded() -> None:
    first, second = verify_he_init(SMALL), verify_he_init(SMALL)
    assert first.identities == second.identities
    other = verify_he_init(dataclasses.replace(SMALL, seed=1))
    assert other.identities[0].lhs != first.identities[0].lhs


@pytest.mark.parametrize(
    "field, value",
    [
        ("samples", 29_999),
        ("batches", 20),
        ("fan_in", 1),
        ("z", 0.0),
        ("bias", 0.0),
        ("weight_shift", math.nan),
        ("input_correlation", 1.0),
        ("negative_slope", 1.0),
        ("depth", 1),
        ("seed", -1),
        ("width", 2.5),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        HeInitConfig(**{field: value})


# --- torch.nn.init and the depth experiment -------------------------------------------------------


@pytest.mark.parametrize("a", [0.0, 0.2, 0.5])
def test_init_std_matches_torch_gains(a: float) -> None:
    fan_in, fan_out = 300, 120
    nonlinearity = "leaky_relu" if a else "relu"
    gain = torch.nn.init.calculate_gain(nonlinearity, a if a else None)
    assert init_std("he", fan_in, fan_out, a) == pytest.approx(gain / math.sqrt(fan_in), rel=1e-12)
    assert init_std("xavier", fan_in, fan_out) == pytest.approx(
        math.sqrt(2 / (fan_in + fan_out)), rel=1e-12
    )
    with pytest.raises(ConfigError, match="unknown init scheme"):
        init_std("lecun", fan_in, fan_out)


def test_kaiming_normal_has_variance_two_over_fan_in(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = kaiming_cross_check(256, 0.2, fan_out=1024)
    assert [c.nonlinearity for c in checks] == ["relu", "leaky_relu"]
    for check in checks:
        assert check.holds, check
        assert check.expected_var == pytest.approx(2 / ((1 + check.negative_slope**2) * 256))
    # The check can fail: fan_out mode on a 1024 x 256 weight has variance 2/1024, not 2/256.
    original = torch.nn.init.kaiming_normal_
    monkeypatch.setattr(
        torch.nn.init, "kaiming_normal_", lambda w, **kw: original(w, **{**kw, "mode": "fan_out"})
    )
    assert not any(check.holds for check in kaiming_cross_check(256, 0.2, fan_out=1024))


def test_he_keeps_the_variance_while_fixed_scales_vanish_or_explode(
    depth: dict[str, DepthResult],
) -> None:
    for result in depth.values():
        assert {c.scheme for c in result.curves} >= set(SCHEMES)
        he = result.curve("he")
        for values in (he.forward_var, he.backward_var):
            assert len(values) == 50 and all(math.isfinite(v) for v in values)
            assert max(values) / min(values) < 5  # within a small factor over 50 layers
        small, large = result.curve("normal_0.01"), result.curve("normal_1")
        assert small.forward_var[-1] < 1e-80 * he.forward_var[-1]  # vanishes
        assert large.forward_var[-1] > 1e80 * he.forward_var[-1]  # explodes
        assert small.backward_var[0] < 1e-80 and large.backward_var[0] > 1e80  # the same going back


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("scheme", ["normal_1", "normal_0.01", "xavier"])
def test_per_layer_factor_is_half_n_var_w(
    depth: dict[str, DepthResult], activation: str, scheme: str
) -> None:
    # Eq. (4) of the derivation (LeakyReLU: times 1 + a^2): Var[z_l] / Var[z_{l-1}] =
    # (1 + a^2) n Var[w] / 2.
    result = depth[activation]
    curve = result.curve(scheme)
    factor = (1 + result.negative_slope**2) * result.width * curve.std**2 / 2
    for values in (curve.forward_var, curve.backward_var[::-1]):
        measured = (values[-1] / values[0]) ** (1 / (len(values) - 1))
        assert measured == pytest.approx(factor, rel=0.05)


def test_leaky_relu_needs_its_own_gain(depth: dict[str, DepthResult]) -> None:
    leaky = depth["leaky_relu"]
    he, relu_gain = leaky.curve("he"), leaky.curve("he_relu_gain")
    assert relu_gain.std**2 / he.std**2 == pytest.approx(1 + 0.2**2)
    # the ReLU gain overshoots by (1 + a^2) per layer: 1.04^49 ~ 6.8 after 50 layers
    drift = (relu_gain.forward_var[-1] / relu_gain.forward_var[0]) / (
        he.forward_var[-1] / he.forward_var[0]
    )
    assert drift == pytest.approx((1 + 0.2**2) ** 49, rel=1e-6)


def test_depth_experiment_rejects_unknown_activation() -> None:
    with pytest.raises(ConfigError, match="activation"):
        depth_experiment("tanh")


# --- the stage, the CLI and the Typst fragment ----------------------------------------------------


def _strict_json(path: Path) -> dict:
    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.slow  # seconds: the whole stage
def test_run_heinit_writes_results_and_figures(tmp_path: Path) -> None:
    out = tmp_path / "run" / "heinit"
    run = run_heinit(out, SMALL, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "depth_variance.pdf",
        "depth_variance.png",
        "identities.pdf",
        "identities.png",
        "results.json",
    ]
    assert sorted(p.name for p in run.files) == sorted(p.name for p in out.iterdir())
    for name in ("depth_variance", "identities"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    results = _strict_json(out / "results.json")
    assert results["schema_version"] == 1 and results["config"]["samples"] == SMALL.samples
    assert len(results["identities"]) == len(run.verification.identities)
    for row in results["identities"]:
        assert set(row) >= {
            "name",
            "formula",
            "assumptions",
            "lhs",
            "rhs",
            "ci_low",
            "ci_high",
            "holds",
            "expected_to_hold",
            "formula_typst",
            "step",
            "case",
            "std_error",
            "z_score",
        }
        assert row["ci_low"] <= row["lhs"] - row["rhs"] <= row["ci_high"]
        assert row["holds"] == (row["ci_low"] <= 0 <= row["ci_high"])
    assert results["depth"]["layers"] == list(range(1, SMALL.depth + 1))
    assert [e["activation"] for e in results["depth"]["experiments"]] == ["relu", "leaky_relu"]
    for experiment in results["depth"]["experiments"]:
        for curve in experiment["curves"]:
            assert len(curve["forward_var"]) == len(curve["backward_var"]) == SMALL.depth
    assert [k["nonlinearity"] for k in results["kaiming"]] == ["relu", "leaky_relu"]
    assert results["figures"] == {
        "depth": ["depth_variance.png", "depth_variance.pdf"],
        "identities": ["identities.png", "identities.pdf"],
    }


@pytest.mark.slow  # seconds: the whole stage
def test_cli_prints_the_identity_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fashionlab.cli import main

    code = main(
        [
            "heinit",
            "--out",
            str(tmp_path),
            "--samples",
            "30000",
            "--batches",
            "30",
            "--depth",
            "6",
            "--width",
            "32",
            "--depth-batch",
            "64",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert (tmp_path / "heinit" / "results.json").is_file()
    assert "Var[z_{l-1}] = 2 E[x_l²]" in out and "lhs - rhs ± 3 SE" in out
    table = [
        line
        for line in out.splitlines()
        if line.startswith("    ") and not line.split()[0] == "case"
    ]
    assert len(table) == len(verify_he_init(SMALL).identities)
    assert any(" yes " in line for line in table) and any(" NO " in line for line in table)
    assert len({line.rindex("]") for line in table}) == 1  # the interval column is right-aligned


def test_cli_reports_bad_options_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fashionlab.cli import main

    assert main(["heinit", "--out", str(tmp_path), "--samples", "10", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "samples" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "heinit").exists()


@pytest.mark.slow
def test_derivation_compiles_standalone_and_formulas_typeset(
    tmp_path: Path, verification: HeInitResult
) -> None:
    typst = pytest.importorskip("typst")
    pypdf = pytest.importorskip("pypdf")
    shutil.copy(DERIVATION, tmp_path / "derivation.typ")
    formulas = "\n".join(f"$ {row.formula_typst} $" for row in verification.identities)
    (tmp_path / "main.typ").write_text(
        f'#set page(paper: "a4")\n#include "derivation.typ"\n#pagebreak()\n{formulas}\n'
    )
    pdf = tmp_path / "main.pdf"
    typst.compile(str(tmp_path / "main.typ"), output=str(pdf))
    reader = pypdf.PdfReader(str(pdf))
    text = " ".join(page.extract_text() for page in reader.pages)
    assert len(reader.pages) >= 3
    for phrase in (
        "He initialization",
        "Step 1",
        "Step 2",
        "Step 3",
        "Backward condition",
        "LeakyReLU",
    ):
        assert phrase in text, phrase
