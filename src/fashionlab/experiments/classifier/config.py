"""Settings of the classifier experiment: the tuning study and the retrain."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ...canonical import Canonical
from ...errors import ConfigError
from ...threads import DEFAULT_THREADS
from ...validation import (
    ALL,
    check_count,
    check_int,
    check_parallel,
    check_seed,
    is_int,
    is_number,
)
from .space import PLAIN_BATCHES, SPACES, VARIANT_BATCHES

__all__ = ["DEFAULT_TRIALS", "TuneConfig", "ClassifierConfig"]

# The default budget of each space, chosen on validation with ``benchmarks/tune_pilot.py`` and
# ``benchmarks/study_review.py`` (their numbers: benchmarks/README.md). Plain: two rounds, each
# two brackets of 27 at rungs of 6 / 18 / 54 epochs, a top rung long enough for regularised
# settings, then a bracket of 6 trained straight to 54 epochs (the short rungs rank strongly
# regularised settings out before their length shows); the second round's sampler knows the
# first round's top-rung values. Variant: one round of four brackets of 9 at 2 / 6 / 18 epochs,
# then a bracket of 3 trained straight to 18 epochs; its wide models make each epoch several
# times a plain one's, so its rungs stay short.
DEFAULT_TRIALS = {"plain": 120, "variant": 39}
DEFAULT_RUNGS = {"plain": (6, 18, 54), "variant": (2, 6, 18)}
DEFAULT_BRACKETS = {"plain": 27, "variant": 9}
DEFAULT_ROUNDS = {"plain": 2, "variant": 1}
DIRECT_SHARE = {"plain": 1 / 10, "variant": 1 / 13}  # of n_trials, straight to the top rung


def split_evenly(total: int, parts: int) -> tuple[int, ...]:
    """``total`` in ``parts`` whole shares as equal as they can be, the first taking the
    remainder: ``split_evenly(13, 2) == (7, 6)``."""
    return tuple(total // parts + (1 if i < total % parts else 0) for i in range(parts))


@dataclass(frozen=True)
class TuneConfig(Canonical):
    """Settings of one tuning study.

    Args:
        space: ``plain`` or ``variant`` (see the module docstring).
        n_trials: trials to have COMPLETE or PRUNED in the study when done (resumes count);
            None: ``DEFAULT_TRIALS[space]``.
        max_train: train on a stratified subset of this many of the 50,000 training examples
            (None: all of them, the protocol; a subset is for tests and quick runs); the
            validation part is always whole.
        val_size: validation examples forked from the 60,000 training images.
        epochs: the rung lengths (the fidelities): a trial is scored on validation after WSD
            runs of each of these many epochs (a stable trunk, a decay branch per rung) and the
            study picks the best (trial, length) pair; None: ``DEFAULT_RUNGS[space]``.
        decay: the fraction of each run whose learning rate decays linearly to 0 (WSD).
        eta: the promotion rate: a trial goes on past a rung only while its value there is in
            the top 1/eta (``asha``: of the values at that rung so far; ``sha``: of its bracket's).
        bootstrap: ``asha`` only (``sha`` and ``none`` ignore it): at every rung below the top,
            the first ``bootstrap`` trials to reach it stop there and only set the bar (Optuna's
            ``bootstrap_count``); 0: plain ASHA. Why: ASHA with one sequential worker promotes
            the first trial at a rung (it is alone there) and early trials easily. Why 0: in a
            small study the bar-setters are most of the trials at the upper rungs, so few or none
            reach the top (benchmarks/README.md); use it for studies of many trials.
        pruner: ``asha`` (that rule), ``sha`` (synchronous successive halving: brackets of
            ``bracket`` trials asked together, trained as populations, promoted only when the
            whole bracket has reached the rung; see ``brackets``) or ``none`` (every trial
            runs every rung).
        bracket: trials per bracket of ``sha`` (the last bracket of a study may be smaller);
            None: ``DEFAULT_BRACKETS[space]`` with the default rungs, else ``eta ** (len(epochs)
            - 1)`` (one trial reaches the top rung in each bracket).
        direct: ``sha`` only: ``direct`` trials train straight to the top rung, with no early
            stopping (the Hyperband bracket that starts at the top: a setting that needs its
            length is scored at it), a bracket of their own at the end of each round (see
            ``rounds``); they count in ``n_trials``. None: ``int(DIRECT_SHARE[space] *
            n_trials)`` with the default rungs and ``sha`` (12 of the plain default's 120, 3 of
            the variant's 39), else 0.
        rounds: ``sha`` only: the study is this many rounds, one after the other, each its share
            of ``n_trials`` (halving brackets first) and of ``direct`` (a bracket at the end),
            shares as equal as whole numbers allow. A later round's sampler knows the earlier
            rounds' top-rung values, the direct ones included; a study grown by whole rounds asks
            the trials a fresh study of that size would. None: ``DEFAULT_ROUNDS[space]`` with
            the default rungs and ``sha`` (plain 2, variant 1), else 1.
        enqueue: settings (flat dicts of searched keys) to run first; none by default.
        reference: also train the hand recipe of the space (``space.REFERENCE``) with the same
            protocol, outside the study, for the reference row (reference.json).
        workers: local processes on the study (1: in this process, reproducible).
        storage: an SQLAlchemy URL; None: ``sqlite:///<out_dir>/study.db``.
        study_name: None: ``fashionlab-<space>``.
        seed: seeds the data split; trial k samples its setting with TPE seeded from
            ``(seed, k)`` and trains with seed ``seed + k`` (a retried trial keeps the seed of the
            trial it retries).
        timeout_s: no new trial starts after this many seconds (None: no limit).
        threads: torch CPU threads per worker (None: leave torch's setting).
        heartbeat_s: how often a running trial says it is alive; silent for twice that plus a
            minute, a trial of another host is taken for dead (one of this host: when its
            process is gone).
        device: where trials train.
        dead_steps: ``asha`` only: a trial still below ``tuning.objective.DEAD_ACCURACY`` (0.2)
            validation accuracy at a rung below the top after this many SGD steps is a dead net
            (every ReLU off) and is pruned at once.
    """

    space: str = "plain"
    n_trials: int | None = None
    max_train: int | None = field(default=None, metadata=ALL)
    val_size: int = 10_000
    epochs: tuple[int, ...] | None = None
    decay: float = 0.2
    eta: int = 3
    bootstrap: int = 0
    pruner: str = "sha"
    bracket: int | None = None
    direct: int | None = None
    rounds: int | None = None
    enqueue: tuple[dict[str, Any], ...] = ()
    reference: bool = True
    workers: int = 1
    storage: str | None = None
    study_name: str | None = None
    seed: int = 0
    timeout_s: float | None = None
    threads: int | None = DEFAULT_THREADS
    heartbeat_s: int = 10
    device: str = "cpu"
    dead_steps: int = 500

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ConfigError(f"unknown search space {self.space!r}; choose one of {SPACES}")
        if self.n_trials is None:
            object.__setattr__(self, "n_trials", DEFAULT_TRIALS[self.space])
        check_int("n_trials", self.n_trials, 1)
        check_count("max_train", self.max_train)
        if self.max_train is not None and self.max_train < max(self.batch_choices):
            raise ConfigError(
                f"max_train {self.max_train} is smaller than the largest batch size "
                f"{max(self.batch_choices)} of the {self.space} space; use max_train >= "
                f"{max(self.batch_choices)}"
            )
        if not is_int(self.val_size) or not 0 < self.val_size < 60_000:
            raise ConfigError(f"val_size must be an integer in 1..59999, got {self.val_size!r}")
        if self.epochs is None:
            object.__setattr__(self, "epochs", DEFAULT_RUNGS[self.space])
        if not isinstance(self.epochs, (list, tuple)):
            raise ConfigError(
                f"epochs must be a list of integers >= 1, got {self.epochs!r}; "
                f"e.g. epochs = [{self.epochs!r}] for one choice"
            )
        object.__setattr__(self, "epochs", tuple(self.epochs))
        if not self.epochs or any(not is_int(e) or e < 1 for e in self.epochs):
            raise ConfigError(
                f"epochs must be a non-empty list of integers >= 1, got {self.epochs!r}"
            )
        if list(self.epochs) != sorted(set(self.epochs)):
            raise ConfigError(
                f"epochs (the rung lengths) must increase, got {list(self.epochs)}; "
                f"e.g. epochs = [2, 6, 18]"
            )
        if not (is_number(self.decay) and 0 < self.decay <= 1):
            raise ConfigError(f"decay must be a fraction in (0, 1], got {self.decay!r}")
        check_int("eta", self.eta, 2)
        check_int("bootstrap", self.bootstrap, 0)
        if self.pruner not in ("asha", "sha", "none"):
            raise ConfigError(f"pruner must be asha, sha or none, got {self.pruner!r}")
        if self.bracket is None:
            default = self.epochs == DEFAULT_RUNGS[self.space] and self.eta == 3
            bracket = (
                DEFAULT_BRACKETS[self.space] if default else self.eta ** (len(self.epochs) - 1)
            )
            object.__setattr__(self, "bracket", bracket)
        check_int("bracket", self.bracket, 1)
        self._resolve_direct()
        if not isinstance(self.enqueue, (list, tuple)) or not all(
            isinstance(item, dict) for item in self.enqueue
        ):
            raise ConfigError(f"enqueue must be a list of settings (tables), got {self.enqueue!r}")
        object.__setattr__(self, "enqueue", tuple(dict(item) for item in self.enqueue))
        for item in self.enqueue:
            _check_enqueued(item, self.space)
        check_parallel("workers", self.workers)
        check_seed("seed", self.seed)
        if self.timeout_s is not None and not (is_number(self.timeout_s) and self.timeout_s > 0):
            raise ConfigError(f"timeout_s must be None or a number > 0, got {self.timeout_s!r}")
        check_parallel("threads", self.threads, optional=True)
        check_int("heartbeat_s", self.heartbeat_s, 1)
        check_int("dead_steps", self.dead_steps, 1)
        name = self.study_name
        if name is not None and not (isinstance(name, str) and name.strip()):
            raise ConfigError(
                f"study_name must be a non-empty string, got {name!r}; leave it out "
                f"for fashionlab-<space>"
            )
        if self.storage is not None and not isinstance(self.storage, str):
            raise ConfigError(f"storage must be an SQLAlchemy URL string, got {self.storage!r}")

    def _resolve_direct(self) -> None:
        if self.direct is None:
            default = self.epochs == DEFAULT_RUNGS[self.space] and self.pruner == "sha"
            share = DIRECT_SHARE[self.space] if default else 0.0
            object.__setattr__(self, "direct", int(share * self.n_trials + 1e-9))
        check_int("direct", self.direct, 0)
        if self.direct and self.pruner != "sha":
            raise ConfigError(
                f"direct = {self.direct} needs pruner = 'sha' (a bracket of its own), got "
                f"pruner = {self.pruner!r}; use direct = 0"
            )
        if self.direct > self.n_trials:
            raise ConfigError(
                f"direct = {self.direct} is more than the study's n_trials = {self.n_trials}; "
                f"use direct <= n_trials"
            )
        if self.rounds is None:
            default = self.epochs == DEFAULT_RUNGS[self.space] and self.pruner == "sha"
            object.__setattr__(self, "rounds", DEFAULT_ROUNDS[self.space] if default else 1)
        check_int("rounds", self.rounds, 1)
        if self.rounds > 1 and self.pruner != "sha":
            raise ConfigError(
                f"rounds = {self.rounds} needs pruner = 'sha' (rounds of brackets), got "
                f"pruner = {self.pruner!r}; use rounds = 1"
            )
        if self.rounds > self.n_trials:
            raise ConfigError(
                f"rounds = {self.rounds} is more than the study's n_trials = {self.n_trials}; "
                f"use rounds <= n_trials"
            )

    def round_sizes(self) -> tuple[tuple[int, int], ...]:
        """Each round's (trials, direct trials), in order: ``n_trials`` and ``direct`` split by
        :func:`split_evenly`."""
        return tuple(
            zip(
                split_evenly(self.n_trials, self.rounds),
                split_evenly(self.direct, self.rounds),
                strict=True,
            )
        )

    @property
    def batch_choices(self) -> tuple[int, ...]:
        return PLAIN_BATCHES if self.space == "plain" else VARIANT_BATCHES

    @property
    def name(self) -> str:
        """The study name."""
        return self.study_name or f"fashionlab-{self.space}"

    @classmethod
    def quick(cls, **overrides: Any) -> TuneConfig:
        """A small study for ``--quick`` runs: 6 trials, rungs of 1 and 2 epochs on 4,000
        examples, no reference row."""
        preset = {"n_trials": 6, "max_train": 4000, "epochs": (1, 2), "reference": False}
        return cls.from_dict({**preset, **overrides})


def _check_enqueued(setting: dict[str, Any], space: str) -> None:
    """Refuse a setting to enqueue that is not in the space once in the study's keys (``lr``
    with its ``momentum`` is the effective rate)."""
    from .space import check_setting, searched_from_setting

    check_setting(searched_from_setting(setting), space)


@dataclass(frozen=True)
class ClassifierConfig(Canonical):
    """Retrain settings.

    Args:
        epochs: epochs of the retrain; None (the default): the epochs the study chose on
            validation. The retrain trains on all 60,000 images (train + validation) for that
            many epochs, so it takes 60,000 / 50,000 as many SGD steps as the run the study scored.
        max_train: train on a stratified subset of this many of the 60,000 images (quick runs).
        last_n: how many final SGD iterations the figure shows (the assignment's 20).
        label: name of this model in files and figure (``plain``, ``variant``).
        seeds: the training seeds (weights, shuffling, dropout); one model per seed, tested
            once each; the first one's last iterations are drawn.
        ablation: also train the setting with BatchNorm only and with Dropout only, scored on
            validation (``ablation.json``; the plain pick's, for the variant comparison). Off
            here; the study's retrain of the plain pick (:meth:`retrain`, not quick) turns it
            on.
        device: where to train and test.
        threads: torch CPU threads while training (None: leave torch's setting). One by default:
            these small matrices gain little from a second thread, and lose a lot when the cores are
            shared (benchmarks/README.md).
    """

    epochs: int | None = field(default=None, metadata={"none": "the length chosen on validation"})
    max_train: int | None = field(default=None, metadata=ALL)
    last_n: int = 20
    label: str = "plain"
    seeds: tuple[int, ...] = (0, 1, 2)
    ablation: bool = False
    device: str = "cpu"
    threads: int | None = DEFAULT_THREADS

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 1, optional=True)
        check_count("max_train", self.max_train)
        check_parallel("threads", self.threads, optional=True)
        check_int("last_n", self.last_n, 1)
        if not isinstance(self.seeds, (list, tuple)) or not self.seeds:
            raise ConfigError(f"seeds must be a non-empty list of integers, got {self.seeds!r}")
        object.__setattr__(self, "seeds", tuple(self.seeds))
        for seed in self.seeds:
            check_seed("seeds", seed)
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must differ, got {list(self.seeds)}")
        if not isinstance(self.label, str) or not self.label or "/" in self.label:
            raise ConfigError(f"label must be a non-empty name without '/', got {self.label!r}")

    @classmethod
    def quick(cls, **overrides: Any) -> ClassifierConfig:
        """A small retrain for ``--quick`` runs: one seed on 10,000 training images."""
        return cls.from_dict({"max_train": 10_000, "seeds": (0,), **overrides})

    def for_reference(self) -> ClassifierConfig:
        """These settings for the reference row's retrain: named ``reference``, no ablation (the
        ablation is the pick's)."""
        return dataclasses.replace(self, label="reference", ablation=False)

    @classmethod
    def retrain(
        cls, space: str, *, quick: bool = False, seed: int | None = None, **overrides: Any
    ) -> ClassifierConfig:
        """The retrain of ``space``'s pick (named ``space``; the plain one with the ablation
        unless ``quick``); ``overrides`` on top.

        ``seed``: the first of the seeds (three by default, one when ``quick``), unless ``seeds``
        is among the overrides.

        Raises:
            ConfigError: an unknown space, or a setting the config refuses.
        """
        if space not in SPACES:
            raise ConfigError(f"unknown search space {space!r}; choose one of {SPACES}")
        if seed is not None and "seeds" not in overrides:
            check_seed("seed", seed)
            overrides["seeds"] = tuple(seed + k for k in range(1 if quick else 3))
        overrides = {"ablation": space == "plain" and not quick, **overrides, "label": space}
        return cls.quick(**overrides) if quick else cls.from_dict(overrides)
