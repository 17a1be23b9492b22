"""Settings of the He-initialization experiment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...canonical import Canonical
from ...errors import ConfigError
from ...validation import check_int, check_memory, check_seed, is_int, is_number

__all__ = ["HeInitConfig"]


@dataclass(frozen=True)
class HeInitConfig(Canonical):
    """Settings of the He-initialization stage.

    ``weight_shift`` is the mean of the weights in the broken cases, in units of their standard
    deviation; ``bias`` the bias b of the broken cases (Var[z] is 1 in the He setting);
    ``input_correlation`` the correlation of the Gaussians behind correlated inputs.
    """

    samples: int = 200_000
    fan_in: int = 16
    batches: int = 100
    z: float = 3.0
    weight_shift: float = 1.0
    bias: float = 1.0
    input_correlation: float = 0.8
    depth: int = 50
    width: int = 256
    depth_batch: int = 128
    negative_slope: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        # >= 30 batches of >= 1000 draws: each batch estimate is near-normal and the batch-means
        # t statistic near N(0, 1), so "+- z SE" keeps its coverage (checked in the tests).
        for name, low in (
            ("batches", 30),
            ("fan_in", 2),
            ("depth", 2),
            ("width", 2),
            ("depth_batch", 2),
        ):
            check_int(f"HeInitConfig.{name}", getattr(self, name), low)
        if not is_int(self.samples) or self.samples < 1000 * self.batches:
            raise ConfigError(
                f"HeInitConfig.samples must be an integer >= 1000 * batches = "
                f"{1000 * self.batches}, got {self.samples!r}; raise samples or lower batches"
            )
        if not (is_number(self.z, finite=True) and self.z > 0):
            raise ConfigError(
                f"HeInitConfig.z must be a positive number of standard errors, got {self.z!r}"
            )
        for name in ("weight_shift", "bias"):
            if not (is_number(getattr(self, name), finite=True) and getattr(self, name) != 0):
                raise ConfigError(
                    f"HeInitConfig.{name} must be finite and non-zero (it breaks an "
                    f"assumption on purpose), got {getattr(self, name)!r}"
                )
        if not (is_number(self.input_correlation) and 0 < self.input_correlation < 1):
            raise ConfigError(
                f"HeInitConfig.input_correlation must lie in (0, 1), got {self.input_correlation!r}"
            )
        if not (is_number(self.negative_slope) and 0 <= self.negative_slope < 1):
            raise ConfigError(
                f"HeInitConfig.negative_slope must lie in [0, 1), got {self.negative_slope!r}"
            )
        check_seed("HeInitConfig.seed", self.seed)
        parts = self.memory_bytes()
        part = max(parts, key=parts.__getitem__)
        check_memory(
            f"HeInitConfig: the {part}",
            parts[part],
            fix="lower --samples or --fan-in (the identity checks), or --depth, --width or "
            "--depth-batch (the depth experiment)",
        )

    def memory_bytes(self) -> dict[str, int]:
        """Bytes the largest arrays of each part hold at once (an estimate from the sizes).

        The identity checks draw ``samples / batches`` rows at a time: two float32 matrices of
        ``fan_in`` columns and, for 1/8 of the rows, ``fan_in**2`` weights, transformed a few times
        per row; the depth experiment keeps ``depth`` float64 weight matrices and, per layer, the
        activations, their gradients and the inputs of the next layer.
        """
        rows, n = self.samples // self.batches, self.fan_in
        identities = 4 * 4 * rows * (2 * n + 2 + n * n // 8)
        layers = self.depth * self.width
        depth = 8 * (layers * self.width + (2 + 4 * self.depth) * self.depth_batch * self.width)
        kaiming = 8 * 2 * 1024 * self.width  # the cross-check's (1024, width) float64 weights
        return {
            "identity checks": identities,
            "depth experiment": depth,
            "kaiming cross-check": kaiming,
        }

    @classmethod
    def quick(cls, **overrides: Any) -> HeInitConfig:
        """A smoke-test setting: fewer draws, a shallower depth experiment."""
        return cls.from_dict({"samples": 100_000, "depth": 30, **overrides})
