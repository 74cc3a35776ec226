"""Training the two models (and the ranker's logistic baseline) on example tensors.

Each trainer builds its model, a step loss and a validation function and hands them to the epoch loop both
share (``epochs.fit``). Around it: ``devices`` (device, bf16 on CUDA, threads, seed), ``optimizers``
(SparseAdam for sparse id tables, Adam for the rest), ``guards`` (the divergence guard), ``early_stopping``,
``valid_metrics``, ``checkpoint`` (per-epoch state, resumed after a kill) and ``process_group`` (several
processes under DistributedDataParallel; ``nightrec.training.distributed`` launches them). The names callers
import from this module (``loop.TrainResult``, ``loop.roc_auc``...) stay importable from it.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nightrec.models.configs import DeepFMConfig, TwoTowerConfig
from nightrec.models.deepfm import DeepFM
from nightrec.models.logistic import LogisticRegression
from nightrec.models.two_tower import TwoTower, full_softmax_loss, in_batch_softmax_loss
from nightrec.settings import TrainSettings
from nightrec.training import devices, epochs, retrieval_loss, valid_metrics, warm
from nightrec.training.datasets import RankingTensors, RetrievalTensors, item_categories
from nightrec.training.devices import select_device
from nightrec.training.epochs import EpochCallback, TrainResult
from nightrec.training.guards import TrainingDiverged
from nightrec.training.item_popularity import ItemState
from nightrec.training.item_side import ItemSide
from nightrec.training.optimizers import SparseDenseOptimizer
from nightrec.training.process_group import World
from nightrec.training.valid_metrics import RECALL_K, roc_auc

__all__ = [
    "RECALL_K",
    "EpochCallback",
    "SparseDenseOptimizer",
    "TrainResult",
    "TrainingDiverged",
    "World",
    "roc_auc",
    "select_device",
    "train_logistic_baseline",
    "train_ranking",
    "train_retrieval",
]

_fit = epochs.fit  # the shared epoch loop, under the name the tests drive it by


def _log_q(item_idx: torch.Tensor, n_items: int) -> torch.Tensor:
    """Log of each item's in-batch sampling probability, estimated by its share of the training examples."""
    oov = (item_idx >= n_items) | (item_idx < 0)
    counts = torch.bincount(item_idx.masked_fill(oov, 0), minlength=n_items).float()
    # Items never seen are never sampled; clamp keeps the table finite.
    return torch.log(counts.clamp_min(1.0) / max(len(item_idx), 1))


def _dense_under_nccl(cfg, world: World, device: torch.device):
    """The config with dense id tables when several CUDA processes train it.

    DDP all-reduces sparse gradients with gloo (CPU; checked by tests/model/test_distributed.py), but NCCL
    has long had no sparse all-reduce ("Tensors must be CUDA and dense") and its newer one is untested here,
    so GPU processes train dense tables with Adam, which is what a GPU does fast anyway.
    """
    if world.distributed and device.type == "cuda" and cfg.use_sparse:
        return dataclasses.replace(cfg, sparse=False)
    return cfg


def train_retrieval(
    train: RetrievalTensors,
    valid: RetrievalTensors,
    cfg: TwoTowerConfig,
    settings: TrainSettings,
    on_epoch: EpochCallback | None = None,
    checkpoint_path: Path | None = None,
    world: World | None = None,
    item_side: ItemSide | None = None,
    item_state: ItemState | None = None,
    state_days: tuple[date, date] | None = None,
    init: nn.Module | None = None,
) -> TrainResult:
    """Train the two-tower model with in-batch sampled softmax (or the full softmax, ``cfg.loss``); early-stop on
    valid ``recall_at_50``.

    Args:
        train: Training examples.
        valid: Validation examples (may be empty: then the best epoch is the one with the lowest train loss).
        cfg: Model config.
        settings: Epochs, batch size, learning rate, patience, seed and device (``retrieval_*`` fields).
        on_epoch: Called as ``on_epoch(epoch, metrics)`` after each epoch (e.g. to log to MLflow); rank 0 only.
        checkpoint_path: Where to checkpoint after each epoch and resume from (see ``epochs.fit``); None = never.
        world: The training processes (every process passes the same examples); None = this process alone.
            With several, each trains on its share of every batch, and the in-batch negatives are the
            whole batch's items (``retrieval_loss``).
        item_side: The items' tags and catalog features (``item_side.load_item_side``), installed in the
            model and saved with it; None = none (zeros).
        item_state: With ``cfg.item_state``: each item's popularity and age by day (``item_popularity``).
            Training reads them as of each example's ``day``; validation as of ``state_days[0]``, and the
            returned model scores as of ``state_days[1]`` (both installed with ``set_item_state``).
        init: A model of the same architecture to start from (``warm.copy_overlap``); None = fresh weights.

    Returns:
        The model with its best epoch's weights; per-epoch rows hold ``train_loss``, ``valid_loss``,
        ``recall_at_50``, ``epoch_seconds`` and ``samples_per_s``.

    Raises:
        TrainingDiverged: a training loss was NaN/inf.
    """
    world = world or World()
    device = devices.prepare(settings, world)
    cfg = _dense_under_nccl(cfg, world, device)
    model = TwoTower(cfg)
    if init is not None:
        warm.copy_overlap(model, init)
    model = model.to(device)
    if item_side is not None:
        model.set_item_side(item_side.tags.to(device), item_side.dense.to(device))
        model.tag_index = item_side.tag_index
    cats = item_categories(cfg.n_items, train, valid).to(device)
    log_q = _log_q(train.item_idx, cfg.n_items).to(device) if cfg.logq else None
    tr, va = train.to(device), valid.to(device)
    all_items = torch.arange(cfg.n_items, device=device)
    state = _state_for(cfg, item_state, state_days, train, device)
    if state is not None:
        model.set_item_state(*state.as_of(state_days[0]))

    def pair_bias(b: RetrievalTensors):
        """The item-state logits of each row against given items: as of the row's day in training, as of
        the installed day when validating (as the model scores)."""
        if state is None:
            return None
        if not model.training:
            return lambda items: model.state_bias.installed(items).unsqueeze(0).expand(len(b), -1)
        # The bias depends on (day, item) only: looked up once per distinct day of the batch, then spread
        # over its rows (a batch spans a few dozen days, so this gathers and back-propagates far fewer pairs).
        days, row_day = torch.unique(b.day, return_inverse=True)
        return lambda items: model.state_bias.of_key(state.keys_at(days[:, None], items[None, :]))[row_day]

    def loss_of(b: RetrievalTensors) -> torch.Tensor:
        u = model.unit_user_vectors(b.user_idx, b.segment_idx, b.history)
        if cfg.loss == "full":
            v = model.unit_item_vectors(all_items, cats)
            return full_softmax_loss(u, v, b.item_idx, cfg.temperature, b.weight, pair_bias=pair_bias(b))
        v = model.unit_item_vectors(b.item_idx, b.category_idx)
        return in_batch_softmax_loss(u, v, b.item_idx, cfg.temperature, b.weight, log_q, pair_bias(b))

    def shard_loss_of(b: RetrievalTensors) -> torch.Tensor:
        u = model.unit_user_vectors(b.user_idx, b.segment_idx, b.history)
        if cfg.loss == "full":
            total = world.gather_rows(b.weight.float()).sum()
            v = model.unit_item_vectors(all_items, cats)
            return full_softmax_loss(
                u, v, b.item_idx, cfg.temperature, b.weight, total, scale=world.size, pair_bias=pair_bias(b)
            )
        v = model.unit_item_vectors(b.item_idx, b.category_idx)
        return retrieval_loss.sharded_in_batch_softmax_loss(
            world, u, v, b.item_idx, cfg.temperature, b.weight, log_q, pair_bias(b)
        )

    step_loss_of = shard_loss_of if world.distributed else loss_of

    def evaluate() -> dict:
        return valid_metrics.evaluate_retrieval(
            model, va, cats, loss_of, settings.retrieval_batch_size, world
        )

    result = epochs.fit(
        model,
        name="two-tower retrieval",
        n_train=len(tr),
        step_loss=lambda idx: step_loss_of(tr.take(idx)),
        evaluate=evaluate,
        monitor=(f"recall_at_{RECALL_K}", "-valid_loss"),
        epochs=settings.retrieval_epochs,
        batch_size=settings.retrieval_batch_size,
        lr=settings.retrieval_lr,
        settings=settings,
        device=device,
        on_epoch=on_epoch,
        checkpoint_path=checkpoint_path,
        world=world,
    )
    if state is not None:
        result.model.set_item_state(*(t.cpu() for t in state.as_of(state_days[1])))
    return result


def _state_for(cfg, item_state, state_days, train: RetrievalTensors, device) -> ItemState | None:
    """The item state moved to ``device`` when the config reads it; refused when it is missing."""
    if not cfg.item_state:
        return None
    if item_state is None or state_days is None or train.day is None:
        raise ValueError(
            "TwoTowerConfig.item_state needs the item state, the days it is read as of and the examples' days "
            "(train_retrieval(item_state=..., state_days=...), examples loaded with_day=True)"
        )
    return item_state.to(device)


def train_ranking(
    train: RankingTensors,
    valid: RankingTensors,
    cfg: DeepFMConfig,
    settings: TrainSettings,
    on_epoch: EpochCallback | None = None,
    checkpoint_path: Path | None = None,
    world: World | None = None,
    init: nn.Module | None = None,
) -> TrainResult:
    """Train DeepFM with binary cross-entropy; early-stop on valid ``auc``.

    Args:
        train: Training examples.
        valid: Validation examples (may be empty: then the best epoch is the one with the lowest train loss).
        cfg: Model config.
        settings: Epochs, batch size, learning rate, patience, seed and device (``ranking_*`` fields).
        on_epoch: Called as ``on_epoch(epoch, metrics)`` after each epoch; rank 0 only.
        checkpoint_path: Where to checkpoint after each epoch and resume from (see ``epochs.fit``); None = never.
        world: The training processes (every process passes the same examples); None = this process alone.
        init: A DeepFM of the same architecture to start from (``warm.copy_overlap``); None = fresh weights.

    Returns:
        The model with its best epoch's weights; per-epoch rows hold ``train_loss``, ``logloss``, ``auc``,
        ``epoch_seconds`` and ``samples_per_s``.

    Raises:
        TrainingDiverged: a training loss was NaN/inf.
    """
    world = world or World()
    device = devices.prepare(settings, world)
    model = DeepFM(_dense_under_nccl(cfg, world, device))
    if init is not None:
        warm.copy_overlap(model, init)
    return _fit_binary(
        model.to(device),
        train,
        valid,
        name="DeepFM ranking",
        epochs=settings.ranking_epochs,
        settings=settings,
        device=device,
        on_epoch=on_epoch,
        checkpoint_path=checkpoint_path,
        world=world,
    )


def train_logistic_baseline(
    train: RankingTensors,
    valid: RankingTensors,
    field_dims: tuple[int, ...],
    settings: TrainSettings,
    world: World | None = None,
) -> TrainResult:
    """Logistic regression over the same one-hot fields and examples as DeepFM: the AUC it must beat.

    Same batch size, learning rate, seed and early stopping as the ranker (``ranking_*`` fields), so the
    two AUCs differ by the model only.

    Returns:
        The fitted baseline; ``metrics["auc"]`` is its best validation AUC.
    """
    world = world or World()
    device = devices.prepare(settings, world)
    return _fit_binary(
        LogisticRegression(field_dims).to(device),
        train,
        valid,
        name="logistic regression baseline",
        epochs=settings.ranking_epochs,
        settings=settings,
        device=device,
        on_epoch=None,
        world=world,
    )


def _fit_binary(
    model: nn.Module,
    train: RankingTensors,
    valid: RankingTensors,
    *,
    name: str,
    epochs: int,
    settings: TrainSettings,
    device: torch.device,
    on_epoch: EpochCallback | None,
    checkpoint_path: Path | None = None,
    world: World,
) -> TrainResult:
    """Binary cross-entropy over ``x -> logit``; valid ``logloss`` and ``auc`` per epoch."""
    tr, va = train.to(device), valid.to(device)

    def step_loss(idx: torch.Tensor) -> torch.Tensor:
        b = tr.take(idx)
        return F.binary_cross_entropy_with_logits(model(b.x).float(), b.label)

    return _fit(
        model,
        name=name,
        n_train=len(tr),
        step_loss=step_loss,
        evaluate=lambda: valid_metrics.evaluate_binary(model, va, world),
        monitor=("auc", "-logloss"),
        epochs=epochs,
        batch_size=settings.ranking_batch_size,
        lr=settings.ranking_lr,
        settings=settings,
        device=device,
        on_epoch=on_epoch,
        checkpoint_path=checkpoint_path,
        world=world,
    )
