"""Train K seeds of one MLP setting in lockstep, as one stacked model.

Why: a small MLP's SGD step costs per-op overhead more than arithmetic (784-50-50-50-10 at
batch 64: about 1.6 ms a step on one thread), so K seeds trained one after another cost K times
that. Here the K models' weight matrices are one (K, out, in) tensor, every linear layer is one
batched matmul (``torch.baddbmm``), every activation and dropout product one op, and one
:class:`fashionlab.train.SGD` update covers all K, so most of a step's ops are paid once. The
arithmetic is not saved, and it weighs more than the op count suggests: measured with
``benchmarks/bench_seeds.py`` (one thread, 50,000 images, K = 3), three seeds of the plain
784-50-50-50-10 at batch 64 take 3.07 s/epoch stacked against 4.04 s one after another (1.32x),
and the 2 x 256 BatchNorm + dropout 0.2 variant at batch 128 gains nothing (8.95 against
9.24 s/epoch: compute-bound).

Per seed, :func:`fit_seeds` does what :func:`fashionlab.train.fit` does for
``fit(models[k], train, replace(config, seed=seeds[k]))``:

* it starts from the weights ``models[k]`` holds (:func:`seeded_models` builds them as a retrain
  does: ``seed_everything(seed); MLP(**model_config)``) and trains that module in place;
* minibatches come in the order of a :class:`FastLoader` seeded with the seed (its
  ``epoch_order``), with fit's rule for a last batch of one;
* the learning rate of each step is train's schedule function, the one ``fit`` calls;
* the update is ``train.SGD`` itself, over the stacked tensors: weight matrices are
  (K, out, in) (3-D, so penalised by L2), biases, BatchNorm scales and shifts (K * width,) and
  PReLU slopes (K,) are 1-D (not penalised), as in the single model;
* BatchNorm runs once per model (``F.batch_norm`` on its own minibatch, its own running
  statistics, views into the stacked tensors);
* dropout masks come from one generator per model seeded with the seed, drawn as torch's CPU
  dropout draws them (``bernoulli_(1 - p)``, then ``/ (1 - p)``), layer by layer; ``fit`` draws
  from the global generator, which it seeds with the same seed and nothing else draws from;
* a non-finite training loss stops that model (``diverged``; it keeps its weights from before
  the step, as in ``fit``), so does a non-finite validation loss; the others go on. A stopped
  model leaves the stack, and nothing of it reaches the others: every op is per model (a
  batched matmul multiplies matrix k by matrix k only).

Bit-exactness versus ``fit`` (CPU, torch 2.x; ``tests/test_train_stacked.py`` checks it for
plain, BatchNorm, PReLU and dropout settings): weights, running statistics, per-step losses and
validation numbers are the same floats, not merely close. That holds because each op computes
per model what the single model computes, in the same form: ``baddbmm`` runs the same GEMM per
matrix as ``addmm``, and :class:`_Linear` computes the weight gradient as grad^T @ x as
autograd does for ``F.linear`` (``bmm``'s own backward computes x^T @ grad: other last bits,
and slower); BatchNorm and the cross-entropy run once per model, because one op over all K
reduces in another order (``F.batch_norm`` over K * width channels vectorises them differently,
a mean over a (K, B) loss tensor sums differently): last-bit differences that grow over
hundreds of steps. Not bit-exact: anything on CUDA (there ``fit``'s fused dropout kernel draws
other masks, and kernels differ), and possibly another torch version or BLAS (the tests will
say). Same seeds, same device: the same results, run after run.

Not supported: ``on_step`` hooks (trajectory snapshots), models other than :class:`MLP`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._interrupts import check as check_interrupt
from .batches import FastLoader, Split
from .errors import ConfigError
from .models import MLP
from .train import SGD, FitResult, History, TrainConfig, _learning_rate, evaluate
from .utils import resolve_device, seed_everything

__all__ = ["SeedsEpochHook", "fit_seeds", "seeded_models"]

logger = logging.getLogger(__name__)

SeedsEpochHook = Callable[[int, list[float], list[float]], None]

_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU)


def seeded_models(model_config: dict[str, Any], seeds: Sequence[int]) -> list[MLP]:
    """One :class:`MLP` per seed, each initialised as a retrain does:
    ``seed_everything(seed); MLP(**model_config)``.

    Raises:
        ConfigError: an impossible model setting or seed.
    """
    models = []
    for seed in seeds:
        seed_everything(seed)
        models.append(MLP(**model_config))
    return models


class _Linear(torch.autograd.Function):
    """K linear layers: x (K, B, in), weight (K, out, in), bias (K * out,) -> (K, B, out).

    The backward computes the weight gradient as grad^T @ x, the form autograd uses for a single
    ``F.linear`` (``torch.bmm``'s own backward computes x^T @ grad and transposes it: other last
    bits, and on one thread slower for the 784-wide first layer).
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.view(x.shape[0], 1, -1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_x, torch.bmm(grad.transpose(1, 2), x), grad.sum(1).reshape(-1)


class _Stack(nn.Module):
    """K MLPs of one architecture as tensors with a leading model axis (training forward only).

    Each parameter or running statistic of the single model becomes one stacked tensor: matrices
    are stacked to (K, out, in), 1-D tensors concatenated to (K * n,) (so ``train.SGD`` tells
    them apart by ``ndim`` as in the single model). ``slots`` remembers where each came from,
    for :meth:`write_back`.
    """

    def __init__(self, models: Sequence[MLP]) -> None:
        super().__init__()
        self.k = len(models)
        self.stacked = nn.ParameterList()
        # (layer position, attribute, stacked tensor) for every tensor a model owns
        self.slots: list[tuple[int, str, torch.Tensor]] = []
        self.ops: list[tuple[str, Any]] = []
        layers = [[*model.body, model.head] for model in models]
        for position, first in enumerate(layers[0]):
            same = [layer[position] for layer in layers]

            def gather(
                attr: str, *, parameter: bool = True, same: list = same, position: int = position
            ) -> torch.Tensor:
                tensors = [getattr(module, attr).detach() for module in same]
                value = torch.stack(tensors) if tensors[0].ndim >= 2 else torch.cat(tensors)
                if parameter:
                    value = nn.Parameter(value.clone())
                    self.stacked.append(value)
                else:
                    value = value.clone()
                self.slots.append((position, attr, value))
                return value

            if isinstance(first, nn.Linear):
                self.ops.append(("linear", (gather("weight"), gather("bias"))))
            elif isinstance(first, nn.BatchNorm1d):
                if not (first.affine and first.track_running_stats and first.momentum is not None):
                    raise ConfigError("fit_seeds needs BatchNorm with affine running statistics")
                self.ops.append(
                    (
                        "batchnorm",
                        (
                            gather("weight"),
                            gather("bias"),
                            gather("running_mean", parameter=False),
                            gather("running_var", parameter=False),
                            first.momentum,
                            first.eps,
                        ),
                    )
                )
            elif isinstance(first, nn.PReLU):
                if first.num_parameters != 1:
                    raise ConfigError("fit_seeds stacks PReLU with one slope per layer only")
                self.ops.append(("prelu", gather("weight")))
            elif isinstance(first, nn.Dropout):
                self.ops.append(("dropout", float(first.p)))
            elif isinstance(first, _ELEMENTWISE):
                self.ops.append(("elementwise", first))
            else:
                raise ConfigError(f"fit_seeds cannot stack a {type(first).__name__} layer")

    def forward(self, x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Training-mode logits (K, B, C) of minibatches ``x`` (K, B, 784), model k on x[k]."""
        k = x.shape[0]
        h = x
        for kind, op in self.ops:
            if kind == "linear":
                h = _Linear.apply(h, *op)
            elif kind == "batchnorm":
                weight, bias, mean, var, momentum, eps = op
                rows = [t.view(k, -1) for t in (weight, bias, mean, var)]
                h = torch.stack(
                    [
                        F.batch_norm(h[row], m, v, w, b, True, momentum, eps)
                        for row, (w, b, m, v) in enumerate(zip(*rows, strict=True))
                    ]
                )
            elif kind == "prelu":
                h = torch.where(h > 0, h, op.view(k, 1, 1) * h)
            elif kind == "elementwise":
                h = op(h)
            else:  # dropout, as ATen's CPU dropout: noise.bernoulli_(1 - p).div_(1 - p) * input
                keep = 1.0 - op
                noise = torch.empty(h.shape, dtype=h.dtype, device=h.device)
                for row, generator in enumerate(generators):
                    noise[row].bernoulli_(keep, generator=generator)
                h = h * noise.div_(keep)
        return h

    @torch.no_grad()
    def write_back(self, row: int, model: MLP) -> None:
        """Copy model ``row``'s parameters and running statistics into ``model``."""
        layers = [*model.body, model.head]
        for position, attr, value in self.slots:
            target = getattr(layers[position], attr)
            target.copy_(value.detach().reshape(self.k, *target.shape)[row])


def _check(models: Sequence[Any], seeds: Sequence[Any]) -> None:
    if not models or len(models) != len(seeds):
        raise ConfigError(
            f"fit_seeds needs one model per seed, got {len(models)} models and {len(seeds)} seeds"
        )
    if not all(isinstance(model, MLP) for model in models):
        raise ConfigError("fit_seeds trains MLP models only")
    if any(model.config != models[0].config for model in models):
        raise ConfigError("fit_seeds trains copies of one architecture; the model configs differ")


def fit_seeds(
    models: Sequence[MLP],
    train: Split,
    config: TrainConfig,
    seeds: Sequence[int],
    *,
    val: Split | None = None,
    device: str | torch.device = "cpu",
    on_epoch: SeedsEpochHook | None = None,
    progress: bool = False,
) -> list[FitResult]:
    """Train ``models[k]`` with ``config`` and seed ``seeds[k]`` (``config.seed`` is not used),
    all K in lockstep; each model is trained in place, as :func:`fashionlab.train.fit` does.

    Args:
        models: K :class:`MLP` of one config (e.g. from :func:`seeded_models`), in their
            initial state; on return each holds its trained weights (in training mode).
        train: training examples.
        config: the SGD settings shared by all K.
        seeds: one seed per model: its minibatch order and dropout masks.
        val: if given, each model's validation loss and accuracy after every epoch.
        device: where to train.
        on_epoch: ``on_epoch(epoch, val_accs, val_losses)`` after each epoch (with ``val``),
            lists of K values in the order of ``models``, ``math.nan`` for a model that has
            stopped (diverged); not called once all have stopped. It may raise (e.g.
            ``optuna.TrialPruned``) to stop all K; the models then hold their weights of the
            last finished epoch.
        progress: show a tqdm bar over the steps.

    Returns:
        One :class:`FitResult` per model, as ``fit`` fills it; ``seconds`` is the wall time of
        the shared run until that model finished or stopped.

    Raises:
        ConfigError: models and seeds do not pair up, the models differ, a seed is invalid, or
            the batch size exceeds the number of training examples.
    """
    from tqdm.auto import tqdm

    models, seeds = list(models), list(seeds)
    _check(models, seeds)
    for seed in seeds:
        replace(config, seed=seed)  # validates the seed as TrainConfig does
    if config.batch_size > len(train):
        raise ConfigError(
            f"batch size {config.batch_size} is larger than the training set ({len(train)} "
            f"examples); lower the batch size or train on more examples"
        )
    device = resolve_device(device)
    run = _Run(models, train, config, seeds, device)
    with tqdm(total=run.total_steps, disable=not progress, unit="step", leave=False) as bar:
        for epoch in range(1, config.epochs + 1):
            if not run.train_epoch(bar):
                break
            run.end_epoch(epoch, val, on_epoch)
            if not run.live:
                break
    return run.finish()


class _Run:
    """The state of one :func:`fit_seeds` call; ``live`` lists the models still training, in
    the order of the stack's rows."""

    def __init__(
        self,
        models: list[MLP],
        train: Split,
        config: TrainConfig,
        seeds: list[int],
        device: torch.device,
    ) -> None:
        self.models, self.seeds, self.config, self.device = models, seeds, config, device
        drop_last = len(train) % config.batch_size == 1  # as fit: BatchNorm needs two examples
        self.loaders = [
            FastLoader(
                train, config.batch_size, shuffle=True, seed=s, device=device, drop_last=drop_last
            )
            for s in seeds
        ]
        self.images = self.loaders[0].images.reshape(-1, 784)
        self.labels = self.loaders[0].labels
        self.steps_per_epoch = len(self.loaders[0])
        self.total_steps = config.epochs * self.steps_per_epoch
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.tracked = [
            [int(m.num_batches_tracked) for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
            for model in models
        ]
        for model in models:
            model.to(device).train()
        self.live = list(range(len(models)))
        self.stack = _Stack(models)
        self.optimizer = SGD(self.stack, config)
        self.histories = [History() for _ in models]
        self.diverged = [False] * len(models)
        self.steps = [0] * len(models)
        self.forwards = [0] * len(models)
        self.seconds = [0.0] * len(models)
        self.step = 0
        self.start = time.perf_counter()

    def train_epoch(self, bar: Any) -> bool:
        """One epoch for the live models; False if none is left."""
        orders = torch.stack([self.loaders[k].epoch_order() for k in self.live])
        sums = [0.0] * len(self.live)
        size = self.config.batch_size
        for index in range(self.steps_per_epoch):
            check_interrupt()  # a Ctrl-C that a finaliser swallowed stops here
            batch = orders[:, index * size : (index + 1) * size].reshape(-1)
            x = self.images.index_select(0, batch).to(torch.float32).div_(255)
            y = self.labels.index_select(0, batch)
            logits = self.stack(
                x.view(len(self.live), -1, 784), [self.generators[k] for k in self.live]
            )
            # one fused mean per model: the same float as fit's loss (a mean over a (K, B) tensor
            # of per-example losses sums in another order)
            losses = torch.stack(
                [
                    F.cross_entropy(rows, labels)
                    for rows, labels in zip(logits, y.view(len(self.live), -1), strict=True)
                ]
            )
            values = losses.detach().tolist()
            for k in self.live:
                self.forwards[k] += 1
            good = [row for row, value in enumerate(values) if math.isfinite(value)]
            for row, value in enumerate(values):
                if row not in good:
                    logger.warning(
                        "seed %d: loss became %s at step %d: stopping this run as diverged",
                        self.seeds[self.live[row]],
                        value,
                        self.step + 1,
                    )
                    self._stop(row)  # the weights before this step, as fit keeps them
            if not good:
                self.live = []
                return False
            total = losses.sum() if len(good) == len(values) else losses[good].sum()
            self.optimizer.zero_grad()
            total.backward()
            self.optimizer.lr = _learning_rate(self.config, self.step, self.total_steps)
            self.optimizer.step()
            self.step += 1
            for row in good:
                k = self.live[row]
                self.steps[k] += 1
                self.histories[k].train_loss.append(values[row])
                sums[row] += values[row]
            bar.update(1)
            if len(good) < len(values):
                orders, sums = orders[good], [sums[row] for row in good]
                self._keep(good)
        for row, k in enumerate(self.live):
            self.histories[k].epoch_train_loss.append(sums[row] / self.steps_per_epoch)
        return True

    def end_epoch(self, epoch: int, val: Split | None, on_epoch: SeedsEpochHook | None) -> None:
        """Write the weights back, validate, stop models whose validation loss is not finite."""
        for row, k in enumerate(self.live):
            self._write_back(row, k)
        accs, losses = [math.nan] * len(self.models), [math.nan] * len(self.models)
        keep = []
        for row, k in enumerate(self.live):
            history = self.histories[k]
            line = (
                f"seed {self.seeds[k]}: epoch {epoch:3d}/{self.config.epochs}  "
                f"train_loss {history.epoch_train_loss[-1]:.4f}"
            )
            if val is not None:
                val_loss, val_acc = evaluate(self.models[k], val, self.device)
                history.val_loss.append(val_loss)
                history.val_acc.append(val_acc)
                line += f"  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}"
                if not math.isfinite(val_loss):
                    self.diverged[k] = True
                    self.seconds[k] = time.perf_counter() - self.start
                    logger.info("%s (stopped: validation loss not finite)", line)
                    continue
                accs[k], losses[k] = val_acc, val_loss
            keep.append(row)
            logger.info(line)
        if len(keep) < len(self.live):
            self._keep(keep)
        if on_epoch is not None and val is not None and self.live:
            on_epoch(epoch, accs, losses)

    def finish(self) -> list[FitResult]:
        for row, k in enumerate(self.live):
            self._write_back(row, k)
            self.seconds[k] = time.perf_counter() - self.start
        return [
            FitResult(self.histories[k], self.diverged[k], self.steps[k], self.seconds[k])
            for k in range(len(self.models))
        ]

    def _write_back(self, row: int, k: int) -> None:
        model = self.models[k]
        self.stack.write_back(row, model)
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
        for norm, start in zip(norms, self.tracked[k], strict=True):
            norm.num_batches_tracked.fill_(start + self.forwards[k])

    def _stop(self, row: int) -> None:
        k = self.live[row]
        self._write_back(row, k)
        self.diverged[k] = True
        self.seconds[k] = time.perf_counter() - self.start

    def _keep(self, rows: list[int]) -> None:
        """Rebuild the stack (and the optimizer's velocity) from the models at ``rows``."""
        for row in rows:
            self._write_back(row, self.live[row])
        old_k, old = self.stack.k, self.optimizer
        self.live = [self.live[row] for row in rows]
        self.stack = _Stack([self.models[k] for k in self.live])
        self.optimizer = SGD(self.stack, self.config)
        index = torch.tensor(rows, device=self.device)
        for i, (param, velocity) in enumerate(
            zip(self.optimizer.params, old.velocity, strict=True)
        ):
            if velocity is not None:
                self.optimizer.velocity[i] = (
                    velocity.reshape(old_k, -1).index_select(0, index).reshape(param.shape).clone()
                )
