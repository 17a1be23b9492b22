"""The one trainer for MLP classifiers: K >= 1 models of one depth and batch size as one program.

Why: a small MLP's SGD step at a small batch is mostly per-op overhead, not arithmetic, so K
models per step cost little more than one. A :class:`Population` holds K :class:`MLP` settings
that share depth, batch size, activation and BatchNorm as tensors with a leading model axis:

* every parameter of model k lives in row k of one (K, P) tensor; a layer's weight matrix is a
  (K, out, in) view, its bias a (K, out) view, so a linear layer is one ``torch.baddbmm``;
* widths are zero-padded to the widest member. A padded unit has zero weights in and out and a
  zero bias, so its pre-activation is 0, every ReLU-family activation maps 0 to 0, its gradients
  are 0, and L2 and momentum keep it at 0: the function of every member is exactly its own;
* per-model learning rate, momentum (Nesterov or not), L2 on the weight matrices only, seed,
  dropout rate and length (each member's own WSD / cosine / constant schedule over its own
  epochs); the update is a handful of ops over the whole (K, P) tensor;
* the backward is written out (linear layers, ReLU / leaky ReLU / ELU / GELU through the same
  ATen backward kernels autograd calls, dropout, the cross-entropy); BatchNorm and PReLU
  populations go through autograd on the same stacked forward;
* member k's minibatch order comes from a generator seeded with its seed (the order of
  ``FastLoader(train, batch_size, seed=seed)``), its dropout masks from a second generator seeded
  with its seed, drawn as ATen's CPU dropout draws them;
* or, opt-in (``order_seed``), one minibatch order for the whole population, from one generator
  seeded with ``order_seed`` (the order of ``FastLoader(train, batch_size, seed=order_seed)``);
  dropout masks stay per member. Then the first layer (most of the FLOPs) reads one (B, 784)
  minibatch instead of K, its forward is one (B, 784) @ (784, K * out) product and its weight
  gradient one (K * out, B) @ (B, 784) product, in the hand-written and the autograd backward.
  For that the first-layer weights of all members are stored as one (K * out, 784) matrix: the
  parameters (and gradients and momentum) are then a (rows, 784) tensor, the first-layer
  matrix followed by the rest of each member's row padded to a multiple of 784 with zeros,
  and the update's per-member coefficients are (rows, 1) columns; checkpoints and
  :meth:`Population.gradients` show the (K, P) member rows either way.

Exactness (CPU; ``tests/test_population.py`` checks each claim):

* bit for bit: a member trained inside a population equals the same member trained alone
  (K = 1) with the same padded widths, and two runs of one population give the same floats;
  every op either works per row (a batched matmul multiplies matrix k by matrix k only, with the
  GEMM a single matrix gets) or is elementwise;
* bit for bit with a shared order too: a member inside equals the member alone with the same
  ``order_seed`` and padded widths. This rests on one more property, of the BLAS and not of
  this code: an entry of a (B, 784) @ (784, K * out) product is computed as in the (B, 784) @
  (784, out) product of member k alone (the same sum over 784 in the same blocks), and likewise
  for the (K * out, B) @ (B, 784) weight gradient; the MKL of the pinned torch CPU builds does
  so, and the tests would fail on a BLAS that blocks by the number of columns;
* within float tolerance: a member padded to a wider population against the member unpadded
  (the matrix products sum over more, zero, terms: another blocking, other last bits; padded
  units themselves stay exactly 0); K = 1 against a plain ``nn.Module`` MLP trained with
  ``torch.optim.SGD`` (weight decay on the matrices only) on the same minibatches; the
  hand-written gradients against autograd's on the same stacked forward; a member with a
  shared order against the member with its own order from the same seed (the same minibatches;
  the first layer's product is one GEMM against a batched one: other last bits, which SGD
  may amplify over many small-batch steps).

Faults: a member whose training loss becomes NaN/inf is marked diverged and leaves the
population with its weights from before that step; a non-finite validation loss does the same;
the others go on. :func:`fashionlab._interrupts.check` runs before every step. :meth:`save`
writes a resumable checkpoint atomically.

Taking model k out: :meth:`Population.state_dict` (a plain :class:`MLP` state dict, unpadded)
or :meth:`Population.model`.

Where the code lives: this module holds the population's state and its training loop; the
layout of its tensors and the copies of a member in and out are in ``_layout``, forks and
checkpoints in ``_population_state``, the stacked step (forward, backward, update) in
``_stacked``; all three are mixed into :class:`Population`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._interrupts import check as check_interrupt
from ._layout import StackedLayout
from ._population_state import PopulationState
from ._stacked import (
    HAND_WRITTEN,
    Member,
    StackedStep,
    batchnorm_tracked,
    can_stack,
    hidden_widths,
    max_population,
    population_bytes,
    seeded_model,
)
from .batches import Split
from .errors import ConfigError
from .models import MLP
from .runtime import resolve_device
from .train import FitResult, TrainConfig, _learning_rate, evaluate, fit_module

__all__ = [
    "Population",
    "PopulationEpochHook",
    "fit_population",
    "fit",
    "seeded_model",
    "population_bytes",
    "max_population",
    "can_stack",
]

logger = logging.getLogger(__name__)

# on_epoch(member, epoch, val_acc, val_loss): after each epoch of each member (with ``val``)
PopulationEpochHook = Callable[[int, int, float, float], None]
# on_step(member, row, step, loss): after each step of each member
StepHook = Callable[[int, int, int, float], None]


class Population(StackedLayout, PopulationState, StackedStep):
    """K MLPs (members) of one depth, activation, BatchNorm and batch size, trained as one stacked
    program with per-member SGD settings and lengths.

    Args:
        models: the K initial models (e.g. :func:`seeded_model`); their weights are copied.
        configs: one :class:`TrainConfig` per model: its ``lr``, ``momentum``, ``nesterov``,
            ``l2``, ``schedule``, ``decay``, ``epochs`` (its length) and ``seed`` (minibatch
            order and dropout masks); ``batch_size`` must be the same for all.
        train: the training examples.
        device: where to train.
        widths: pad the hidden layers to at least these widths (a fixed stack shape, or a
            member trained alone exactly as inside a wider population); default: the widest
            member's.
        order_seed: None (default): each member's minibatch order comes from its own
            ``config.seed``; an int: every member sees the minibatches of one generator seeded
            with ``order_seed`` (the order of ``FastLoader(train, batch_size, seed=order_seed)``)
            and the first layer is one matrix product for the whole population; dropout masks
            and initial weights stay each member's own.

    Raises:
        ConfigError: no models, models and configs that do not pair up, models that cannot stack
            (:func:`can_stack`), different batch sizes, or a batch larger than ``train``.
    """

    def __init__(
        self,
        models: Sequence[MLP],
        configs: Sequence[TrainConfig],
        train: Split,
        *,
        device: str | torch.device = "cpu",
        widths: Sequence[int] | None = None,
        order_seed: int | None = None,
    ) -> None:
        models, configs = list(models), list(configs)
        self.batch_size = _shared_batch_size(models, configs, len(train))
        self.device = resolve_device(device)
        self.images = train.images.to(self.device).reshape(-1, 784)
        self.labels = train.labels.to(self.device)
        n = len(train)
        # As fit: a last minibatch of one example breaks BatchNorm in training mode.
        self.steps_per_epoch = (
            n // self.batch_size if n % self.batch_size == 1 else -(-n // self.batch_size)
        )
        first = models[0].config
        self.hidden_layers = first["hidden_layers"]
        self.activation = first["activation"]
        self.batchnorm = first["batchnorm"]
        padded = [hidden_widths(m.config) for m in models]
        if widths is not None:
            if len(widths) != self.hidden_layers:
                raise ConfigError(
                    f"widths lists {len(widths)} widths for {self.hidden_layers} hidden layers"
                )
            padded.append(list(widths))
        self.sizes = [
            first["in_features"],
            *(max(ws) for ws in zip(*padded, strict=True)),
            first["num_classes"],
        ]
        self.hand_written = self.activation in HAND_WRITTEN and not self.batchnorm
        if order_seed is not None and (type(order_seed) is not int or order_seed < 0):
            raise ConfigError(
                f"order_seed must be None or a non-negative int, got {order_seed!r}; pass an int "
                "seed such as 0, or None for each member's own order"
            )
        self.order_seed = order_seed
        self.order_rng = None if order_seed is None else torch.Generator().manual_seed(order_seed)
        self._layout()
        self.members = [
            Member(
                dict(m.config),
                c,
                torch.Generator().manual_seed(c.seed),
                torch.Generator(device=self.device).manual_seed(c.seed),
                tracked=batchnorm_tracked(m),
            )
            for m, c in zip(models, configs, strict=True)
        ]
        self.live = list(range(len(models)))  # member index of each row
        k = len(models)
        self.params = self._pack(torch.zeros(k, self.n_params, device=self.device))
        self.stats = torch.zeros(k, self.n_stats, device=self.device)
        for row, model in enumerate(models):
            self._load_row(row, model.state_dict())
        self.velocity = torch.zeros_like(self.params)
        self._rebuild()

    def _rebuild(self) -> None:
        """Views and per-row coefficients for the rows in ``live`` (after any change of rows)."""
        self._rebuild_grads()
        self.s = self._views(self.stats, self.stat_slots)
        configs = [self.members[m].config for m in self.live]
        k = len(configs)

        if self.order_rng is not None:  # the member of each stored row (see _layout)
            rows = torch.arange(k, device=self.device)
            first = self.sizes[1]
            self._row_member = torch.cat(
                [
                    rows.repeat_interleave(first),
                    rows.repeat_interleave(self.rows_per_member - first),
                ]
            )

        def column(values: list[float]) -> torch.Tensor:
            values = torch.tensor(values, dtype=torch.float32, device=self.device).view(k, 1)
            return values if self.order_rng is None else values[self._row_member]

        self.momentum = column([c.momentum for c in configs])
        self.any_momentum = any(c.momentum for c in configs)
        self.nesterov = column([float(c.nesterov) for c in configs]).bool()
        self.any_nesterov = any(c.nesterov for c in configs)
        self.all_nesterov = all(c.nesterov for c in configs)
        self.l2 = column([c.l2 for c in configs]) * self._pack(
            self.matrix_mask.to(self.device).expand(k, -1)
        )
        self.any_l2 = any(c.l2 for c in configs)
        self.dropout = [self.members[m].model_config["dropout"] for m in self.live]
        self._lrs: list[float] | None = None
        self.lr = column([0.0] * k)

    def _keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        with torch.no_grad():
            self.params = self._select(self.params, rows)
            self.stats = self.stats.index_select(0, index)
            self.velocity = self._select(self.velocity, rows)
        self.live = [self.live[row] for row in rows]
        self._rebuild()

    @property
    def results(self) -> list[FitResult]:
        """One :class:`FitResult` per member, in the order the population was built."""
        return [FitResult(m.history, m.diverged, m.steps, m.seconds) for m in self.members]

    # --- training -------------------------------------------------------------------------------

    def _learning_rates(self) -> None:
        total = self.steps_per_epoch
        lrs = [
            _learning_rate(m.config, m.steps, m.config.epochs * total)
            for m in (self.members[i] for i in self.live)
        ]
        if lrs != self._lrs:
            self._lrs = lrs
            self.lr = torch.tensor(lrs, dtype=torch.float32, device=self.device).view(-1, 1)
            if self.order_rng is not None:
                self.lr = self.lr[self._row_member]

    def gradients(
        self, x: torch.Tensor, y: torch.Tensor, *, autograd: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member losses (K,) and gradients (K, P) of the mean cross-entropy of minibatches
        ``x`` (K, B, 784) and labels ``y`` (K, B) (with a shared order: one minibatch, x (B,
        784) and y (B,)), without an update: through the hand-written backward, or
        (``autograd``) through autograd on the same stacked forward. Dropout masks are drawn
        as in a training step."""
        hand_written = self.hand_written
        self.hand_written = hand_written and not autograd
        if self.order_rng is not None:
            if x.dim() != 2 or y.dim() != 1:
                raise ConfigError(
                    f"a shared-order population takes one minibatch, x (B, 784) and y (B,), got "
                    f"x {tuple(x.shape)} and y {tuple(y.shape)}; pass one minibatch"
                )
            x, y = x.unsqueeze(0), y.unsqueeze(0)
        try:
            self._rebuild_grads()
            losses = self._loss_and_grads(x.to(self.device), y.to(self.device))
            return losses.detach(), self._unpack(self.grads.detach()).clone()
        finally:
            self.hand_written = hand_written
            self._rebuild_grads()

    def _rebuild_grads(self) -> None:
        self.params.requires_grad_(not self.hand_written)
        self.params.grad = None
        self.p = self._param_views(self.params.detach() if self.hand_written else self.params)
        self.grads = torch.zeros_like(self.params.detach()) if self.hand_written else None
        if self.hand_written:  # views made once: a step then makes none
            layers = range(self.hidden_layers + 1)
            self.g = self._param_views(self.grads)
            if self.order_rng is not None:  # the first layer's (K * out, 784) gradient matrix
                self.g_first = self.g[(0, "weight")].view(-1, self.sizes[0])
            self.affine = [(self.p[(layer, "bias")].unsqueeze(1),) for layer in layers]
            self.transposed = [self.p[(layer, "weight")].transpose(1, 2) for layer in layers]

    def _stop(self, rows: list[int], why: str) -> None:
        now = time.perf_counter() - self._start
        for row in rows:
            member = self.members[self.live[row]]
            member.final = self._row_state(row)
            member.seconds += now
            if why:
                member.diverged = True
                logger.warning("member %d (seed %d): %s", self.live[row], member.config.seed, why)
        self._keep([r for r in range(len(self.live)) if r not in rows])

    def _train_epoch(self, bar: Any) -> None:
        size = self.batch_size
        n = len(self.labels)
        # one order per member (K, N), or the population's shared order (1, N)
        orders = torch.stack(
            [torch.randperm(n, generator=self.members[m].order_rng) for m in self.live]
            if self.order_rng is None
            else [torch.randperm(n, generator=self.order_rng)]
        ).to(self.device)
        sums = [0.0] * len(self.live)
        for index in range(self.steps_per_epoch):
            check_interrupt()  # a Ctrl-C that a finaliser swallowed stops here
            batch = orders[:, index * size : (index + 1) * size]
            k, b = batch.shape
            flat = batch.reshape(-1)
            x = self.images.index_select(0, flat).to(torch.float32).div_(255).view(k, b, 784)
            y = self.labels.index_select(0, flat).view(k, b)
            losses = self._loss_and_grads(x, y)
            values = losses.tolist()
            for m in self.live:
                self.members[m].forwards += 1
            bad = [r for r, v in enumerate(values) if not math.isfinite(v)]
            if bad:
                grads = self.grads
                good = [r for r in range(len(values)) if r not in bad]
                # the weights from before this step: taken out before the update
                self._stop(bad, "training loss became NaN/inf: stopped as diverged")
                if not self.live:
                    return
                if self.grads is None:  # autograd: the live rows' gradients, a new tensor
                    self.grads = self._select(grads, good)
                else:
                    self.grads.copy_(self._select(grads, good))  # its views stay valid
                if self.order_rng is None:
                    orders = orders[good]
                values = [values[r] for r in good]
                sums = [sums[r] for r in good]
            self._learning_rates()
            self._update()
            for row, m in enumerate(self.live):
                member = self.members[m]
                member.steps += 1
                member.history.train_loss.append(values[row])
                sums[row] += values[row]
            if self._on_step is not None:
                for row, m in enumerate(self.live):
                    self._on_step(m, row, self.members[m].steps, values[row])
            if bar is not None:
                bar.update(1)
        for row, m in enumerate(self.live):
            member = self.members[m]
            member.epochs += 1
            member.history.epoch_train_loss.append(sums[row] / self.steps_per_epoch)

    def _end_epoch(self, val: Split | None, on_epoch: PopulationEpochHook | None) -> None:
        stop, done = [], []
        for row, m in enumerate(self.live):
            member = self.members[m]
            line = (
                f"member {m} (seed {member.config.seed}): epoch {member.epochs:3d}/"
                f"{member.config.epochs}  train_loss {member.history.epoch_train_loss[-1]:.4f}"
            )
            if val is not None:
                model = self.model(m)
                val_loss, val_acc = evaluate(model, val, self.device)
                member.history.val_loss.append(val_loss)
                member.history.val_acc.append(val_acc)
                line += f"  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}"
                if not math.isfinite(val_loss):
                    stop.append(row)
            logger.info(line)
            if row not in stop and member.epochs >= member.config.epochs:
                done.append(row)
        if stop:
            self._stop(stop, "validation loss not finite: stopped as diverged")
            done = [r - sum(s < r for s in stop) for r in done]  # rows after the removal
        if on_epoch is not None and val is not None:
            for m in list(self.live):
                member = self.members[m]
                on_epoch(m, member.epochs, member.history.val_acc[-1], member.history.val_loss[-1])
        if done:
            self._stop(done, "")

    def train(
        self,
        epochs: int | None = None,
        *,
        val: Split | None = None,
        on_epoch: PopulationEpochHook | None = None,
        on_step: StepHook | None = None,
        progress: bool = False,
    ) -> list[FitResult]:
        """Train every live member for ``epochs`` more epochs, or (None) to the end of its
        own length ``config.epochs``; a member that reaches its length leaves the population.

        Args:
            epochs: how many epochs to train now (a trunk up to a fork); None: to the end.
            val: if given, each member's validation loss and accuracy after every epoch.
            on_epoch: ``on_epoch(member, epoch, val_acc, val_loss)`` after every epoch of
                every live member (with ``val``); it may raise (e.g. ``optuna.TrialPruned``)
                to stop the population, whose members keep their last finished epoch.
            on_step: ``on_step(member, row, step, loss)`` after every step of every live member
                (``row``: its row in the stack, for :meth:`copy_into`); slow, for snapshots.
            progress: show a tqdm bar over the steps.

        Returns:
            :attr:`results`.
        """
        self._on_step = on_step
        from tqdm.auto import tqdm

        left = max(
            (self.members[m].config.epochs - self.members[m].epochs for m in self.live), default=0
        )
        rounds = left if epochs is None else min(epochs, left)
        self._start = time.perf_counter()
        with tqdm(
            total=rounds * self.steps_per_epoch, disable=not progress, unit="step", leave=False
        ) as bar:
            for _ in range(rounds):
                if not self.live:
                    break
                self._train_epoch(bar)
                if not self.live:
                    break
                self._end_epoch(val, on_epoch)
        now = time.perf_counter() - self._start
        for m in self.live:
            self.members[m].seconds += now
        return self.results


def _shared_batch_size(models: list[MLP], configs: list[TrainConfig], examples: int) -> int:
    """The one batch size of a population's members; a ``ConfigError`` for members that cannot
    train as one population (one config per MLP, one depth, activation and BatchNorm, one batch
    size no larger than the training set)."""
    if not models or len(models) != len(configs):
        raise ConfigError(
            f"a population needs one config per model, got {len(models)} models and "
            f"{len(configs)} configs"
        )
    if not all(isinstance(m, MLP) for m in models):
        raise ConfigError("a population trains MLP models only")
    if not all(can_stack(models[0].config, m.config) for m in models):
        raise ConfigError(
            "the models of one population must share depth, activation and BatchNorm; "
            "train the others in populations of their own"
        )
    sizes = {c.batch_size for c in configs}
    if len(sizes) != 1:
        raise ConfigError(f"the members of one population share one batch size, got {sizes}")
    batch_size = sizes.pop()
    if batch_size > examples:
        raise ConfigError(
            f"batch size {batch_size} is larger than the training set ({examples} "
            f"examples); lower the batch size or train on more examples"
        )
    return batch_size


def fit_population(
    models: Sequence[MLP],
    train: Split,
    configs: Sequence[TrainConfig],
    *,
    val: Split | None = None,
    device: str | torch.device = "cpu",
    on_epoch: PopulationEpochHook | None = None,
    progress: bool = False,
) -> list[FitResult]:
    """Train ``models[k]`` with ``configs[k]`` in one :class:`Population` and write each
    member's trained weights back into ``models[k]`` (in place, as ``fit`` trains its model).

    Returns:
        One :class:`FitResult` per model.

    Raises:
        ConfigError: as :class:`Population`.
    """
    population = Population(models, configs, train, device=device)
    try:
        results = population.train(val=val, on_epoch=on_epoch, progress=progress)
    finally:
        for index, model in enumerate(models):
            model.load_state_dict(population.state_dict(index))
            model.to(population.device)
    return results


def fit(
    model: nn.Module,
    train: Split,
    config: TrainConfig,
    *,
    val: Split | None = None,
    device: str | torch.device = "cpu",
    on_step: Callable[[int, float, nn.Module, float], None] | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
    progress: bool = False,
) -> FitResult:
    """Train ``model`` with minibatch SGD on ``train``: an :class:`MLP` as a one-member
    :class:`Population` (the same floats as a member of any population), any other classifier
    with :func:`fashionlab.train.fit_module`.

    Args:
        model: trained in place; on return it holds its trained weights (in training mode).
        train: training examples; batches in the order of ``FastLoader(seed=config.seed)``.
        config: the SGD settings.
        val: if given, validation loss and accuracy are recorded after every epoch.
        device: where to train.
        on_step: ``on_step(step, epoch_fraction, model, loss)`` after every SGD step, and once
            with step 0 (loss NaN) before the first — the hook for trajectory snapshots; the
            model holds the weights after that step.
        on_epoch: ``on_epoch(epoch, val_acc, val_loss)`` after each epoch (with ``val``); it may
            raise (e.g. ``optuna.TrialPruned``) to stop training.
        progress: show a tqdm bar over the minibatches.

    Returns:
        ``FitResult``; ``diverged`` is True if a loss became NaN/inf (training stops there,
        the model keeps its last parameters).

    Raises:
        ConfigError: the batch size exceeds the number of training examples.
    """
    if not isinstance(model, MLP):
        return fit_module(
            model,
            train,
            config,
            val=val,
            device=device,
            on_step=on_step,
            on_epoch=on_epoch,
            progress=progress,
        )
    population = Population([model], [config], train, device=device)
    model.to(population.device).train()
    per_epoch = population.steps_per_epoch

    def step_hook(member: int, row: int, step: int, loss: float) -> None:
        population.copy_into(row, model)
        on_step(step, step / per_epoch, model, loss)

    def epoch_hook(member: int, epoch: int, val_acc: float, val_loss: float) -> None:
        on_epoch(epoch, val_acc, val_loss)

    if on_step is not None:
        on_step(0, 0.0, model, float("nan"))
    try:
        population.train(
            val=val,
            on_epoch=None if on_epoch is None else epoch_hook,
            on_step=None if on_step is None else step_hook,
            progress=progress,
        )
    finally:
        model.load_state_dict(population.state_dict(0))
    return population.results[0]
