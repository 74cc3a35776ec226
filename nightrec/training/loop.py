"""Training loops for the two models: device, precision, seeding, early stopping and the divergence guard.

Both models share one epoch loop (:func:`_fit`); each model supplies a step loss and a validation function.
CPU runs are fp32 and seeded (same seed, same losses); CUDA runs use bf16 autocast (needs no grad scaler).
Id tables with sparse gradients train with SparseAdam, everything else with Adam: on a 2-core CPU the dense
Adam update over the id tables is what dominates a step. With a checkpoint path the loop writes its whole
state after every epoch (``nightrec.training.checkpoint``) and a re-run resumes after the last complete one.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nightrec import faults
from nightrec.errors import NightrecError
from nightrec.models.configs import DeepFMConfig, TwoTowerConfig
from nightrec.models.deepfm import DeepFM
from nightrec.models.logistic import LogisticRegression
from nightrec.models.two_tower import TwoTower, in_batch_softmax_loss
from nightrec.settings import TrainSettings
from nightrec.training import checkpoint
from nightrec.training.datasets import RankingTensors, RetrievalTensors, item_categories, iter_batches

RECALL_K = 50
_EVAL_CHUNK = 8192
EpochCallback = Callable[[int, dict], None]


class TrainingDiverged(NightrecError):
    """The training loss became NaN or infinite; nothing should be registered from this run."""

    def __init__(self, model: str, epoch: int, step: int, last_finite_loss: float | None) -> None:
        self.model, self.epoch, self.step, self.last_finite_loss = model, epoch, step, last_finite_loss
        last = f"{last_finite_loss:.6g}" if last_finite_loss is not None else "none (first step)"
        super().__init__(
            f"{model} training diverged at epoch {epoch}, step {step}: loss is not finite; "
            f"last finite loss {last}. Lower the learning rate or check the examples for NaN weights/labels."
        )


@dataclass
class TrainResult:
    """A trained model (best epoch's weights, on CPU, in eval mode) and how it got there."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)  # one row per epoch
    best_epoch: int = 0
    metrics: dict = field(default_factory=dict)  # the best epoch's row, plus best_epoch and epochs_run


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cpu``/``cuda`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _autocast(device: torch.device):
    # bf16 autocast pays off on GPUs only; on this CPU the gathers and optimizer dominate (ECOSYSTEM 6).
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


class SparseDenseOptimizer:
    """SparseAdam over the weights of embedding tables with ``sparse=True``, Adam over the rest.

    Adam rejects sparse gradients and SparseAdam dense ones, so one model needs both.
    """

    def __init__(self, model: nn.Module, lr: float) -> None:
        sparse = {
            id(m.weight)
            for m in model.modules()
            if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse
        }
        params = list(model.parameters())
        groups = [
            (torch.optim.SparseAdam, [p for p in params if id(p) in sparse]),
            (torch.optim.Adam, [p for p in params if id(p) not in sparse]),
        ]
        self.optimizers = [cls(ps, lr=lr) for cls, ps in groups if ps]

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> list[dict]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for opt, state in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(state)


def _fit(
    model: nn.Module,
    *,
    name: str,
    n_train: int,
    step_loss: Callable[[torch.Tensor], torch.Tensor],
    evaluate: Callable[[], dict],
    monitor: tuple[str, ...],
    epochs: int,
    batch_size: int,
    lr: float,
    settings: TrainSettings,
    device: torch.device,
    on_epoch: EpochCallback | None,
    checkpoint_path: Path | None = None,
) -> TrainResult:
    """The shared epoch loop: train, validate, call back, checkpoint, early-stop on ``monitor``.

    ``monitor`` names validation figures compared in order (higher is better; a ``-`` prefix negates), so a
    tie in the first (recall saturates on small catalogs) is broken by the next (the loss).
    With ``checkpoint_path`` the full state (weights, optimizer, epoch, best so far, RNG) is written there
    after every epoch, and a run that finds one resumes after its epoch; seeded on CPU, the result equals an
    uninterrupted run's.
    """
    if n_train == 0 or epochs < 1:
        raise ValueError(f"{name}: nothing to train ({n_train} examples, {epochs} epochs)")
    opt = SparseDenseOptimizer(model, lr)
    gen = torch.Generator().manual_seed(settings.seed)
    s = checkpoint.FitState()
    if checkpoint_path is not None:
        s = checkpoint.resume_fit(checkpoint_path, name, n_train, model, opt, gen, device) or s
    for epoch in range(s.epoch + 1, epochs + 1):
        if s.stale > settings.patience:
            break  # the checkpoint was written by the epoch that exhausted the patience
        model.train()
        start, total = time.perf_counter(), 0.0
        n_steps = 0
        for step, idx in enumerate(iter_batches(n_train, batch_size, gen), start=1):
            with _autocast(device):
                loss = step_loss(idx.to(device))
            value = loss.item()  # one sync per step; it is also the divergence check
            if not math.isfinite(value):
                raise TrainingDiverged(name, epoch, step, s.last_finite)
            s.last_finite, total, n_steps = value, total + value, step
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad(), _autocast(device):
            valid = evaluate()
        row = {"epoch": epoch, "train_loss": total / n_steps, **valid}
        row |= {"epoch_seconds": seconds, "samples_per_s": n_train / seconds}
        s.history.append(row)
        s.epoch = epoch
        if on_epoch is not None:
            on_epoch(epoch, dict(row))
        score = _score(row, monitor)
        if s.best is None or score > s.best:
            s.best, s.best_epoch, s.stale = score, epoch, 0
            s.best_state = copy.deepcopy(model.state_dict())
        else:
            s.stale += 1
        if checkpoint_path is not None:
            checkpoint.save_fit(checkpoint_path, name, n_train, s, model, opt, gen, device)
            faults.fault("train.after_epoch", count=epoch)
    model.load_state_dict(s.best_state)
    model.to("cpu").eval()
    metrics = {k: v for k, v in s.history[s.best_epoch - 1].items() if k != "epoch"}
    metrics |= {"best_epoch": s.best_epoch, "epochs_run": len(s.history)}
    return TrainResult(model=model, history=s.history, best_epoch=s.best_epoch, metrics=metrics)


def _score(row: dict, monitor: tuple[str, ...]) -> tuple[float, ...]:
    signed = [(-1.0, key[1:]) if key.startswith("-") else (1.0, key) for key in monitor]
    score = tuple(sign * row.get(key, math.nan) for sign, key in signed)
    # Without validation figures (empty valid split) fall back to the training loss.
    return score if all(math.isfinite(v) for v in score) else (-row["train_loss"],)


def _prepare(settings: TrainSettings) -> torch.device:
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(settings.seed)
    return select_device(settings.device)


def _log_q(item_idx: torch.Tensor, n_items: int) -> torch.Tensor:
    """Log of each item's in-batch sampling probability, estimated by its share of the training examples."""
    oov = (item_idx >= n_items) | (item_idx < 0)
    counts = torch.bincount(item_idx.masked_fill(oov, 0), minlength=n_items).float()
    # Items never seen are never sampled; clamp keeps the table finite.
    return torch.log(counts.clamp_min(1.0) / max(len(item_idx), 1))


def train_retrieval(
    train: RetrievalTensors,
    valid: RetrievalTensors,
    cfg: TwoTowerConfig,
    settings: TrainSettings,
    on_epoch: EpochCallback | None = None,
    checkpoint_path: Path | None = None,
) -> TrainResult:
    """Train the two-tower model with in-batch sampled softmax; early-stop on valid ``recall_at_50``.

    Args:
        train: Training examples.
        valid: Validation examples (may be empty: then the best epoch is the one with the lowest train loss).
        cfg: Model config.
        settings: Epochs, batch size, learning rate, patience, seed and device (``retrieval_*`` fields).
        on_epoch: Called as ``on_epoch(epoch, metrics)`` after each epoch (e.g. to log to MLflow).
        checkpoint_path: Where to checkpoint after each epoch and resume from (see :func:`_fit`); None = never.

    Returns:
        The model with its best epoch's weights; per-epoch rows hold ``train_loss``, ``valid_loss``,
        ``recall_at_50``, ``epoch_seconds`` and ``samples_per_s``.

    Raises:
        TrainingDiverged: a training loss was NaN/inf.
    """
    device = _prepare(settings)
    model = TwoTower(cfg).to(device)
    cats = item_categories(cfg.n_items, train, valid).to(device)
    log_q = _log_q(train.item_idx, cfg.n_items).to(device) if cfg.logq else None
    tr, va = train.to(device), valid.to(device)

    def loss_of(b: RetrievalTensors) -> torch.Tensor:
        u = model.user_vectors(b.user_idx, b.segment_idx, b.history)
        v = model.item_vectors(b.item_idx, b.category_idx)
        return in_batch_softmax_loss(u, v, b.item_idx, cfg.temperature, b.weight, log_q)

    def evaluate() -> dict:
        return _evaluate_retrieval(model, va, cats, loss_of, settings.retrieval_batch_size)

    return _fit(
        model,
        name="two-tower retrieval",
        n_train=len(tr),
        step_loss=lambda idx: loss_of(tr.take(idx)),
        evaluate=evaluate,
        monitor=(f"recall_at_{RECALL_K}", "-valid_loss"),
        epochs=settings.retrieval_epochs,
        batch_size=settings.retrieval_batch_size,
        lr=settings.retrieval_lr,
        settings=settings,
        device=device,
        on_epoch=on_epoch,
        checkpoint_path=checkpoint_path,
    )


def _evaluate_retrieval(
    model: TwoTower, va: RetrievalTensors, cats: torch.Tensor, loss_of, batch: int
) -> dict:
    """Valid loss (in-batch, in order) and recall@50 of each valid positive among all items."""
    if len(va) == 0:
        return {"valid_loss": math.nan, f"recall_at_{RECALL_K}": math.nan}
    loss_sum = weight_sum = 0.0
    for idx in iter_batches(len(va), batch):
        b = va.take(idx.to(va.weight.device))
        w = float(b.weight.sum())
        loss_sum, weight_sum = loss_sum + float(loss_of(b)) * w, weight_sum + w
    items = model.item_vectors(torch.arange(len(cats), device=cats.device), cats)
    k = min(RECALL_K, len(cats) - 1)
    hits = 0
    for idx in iter_batches(len(va), _EVAL_CHUNK):
        b = va.take(idx.to(cats.device))
        scores = model.user_vectors(b.user_idx, b.segment_idx, b.history) @ items.T
        scores[:, 0] = -math.inf  # the OOV row is never a recommendation
        top = scores.topk(k, dim=1).indices
        hits += int((top == b.item_idx[:, None]).any(dim=1).sum())
    return {"valid_loss": loss_sum / max(weight_sum, 1e-12), f"recall_at_{RECALL_K}": hits / len(va)}


def train_ranking(
    train: RankingTensors,
    valid: RankingTensors,
    cfg: DeepFMConfig,
    settings: TrainSettings,
    on_epoch: EpochCallback | None = None,
    checkpoint_path: Path | None = None,
) -> TrainResult:
    """Train DeepFM with binary cross-entropy; early-stop on valid ``auc``.

    Args:
        train: Training examples.
        valid: Validation examples (may be empty: then the best epoch is the one with the lowest train loss).
        cfg: Model config.
        settings: Epochs, batch size, learning rate, patience, seed and device (``ranking_*`` fields).
        on_epoch: Called as ``on_epoch(epoch, metrics)`` after each epoch.
        checkpoint_path: Where to checkpoint after each epoch and resume from (see :func:`_fit`); None = never.

    Returns:
        The model with its best epoch's weights; per-epoch rows hold ``train_loss``, ``logloss``, ``auc``,
        ``epoch_seconds`` and ``samples_per_s``.

    Raises:
        TrainingDiverged: a training loss was NaN/inf.
    """
    device = _prepare(settings)
    return _fit_binary(
        DeepFM(cfg).to(device),
        train,
        valid,
        name="DeepFM ranking",
        epochs=settings.ranking_epochs,
        settings=settings,
        device=device,
        on_epoch=on_epoch,
        checkpoint_path=checkpoint_path,
    )


def train_logistic_baseline(
    train: RankingTensors, valid: RankingTensors, field_dims: tuple[int, ...], settings: TrainSettings
) -> TrainResult:
    """Logistic regression over the same one-hot fields and examples as DeepFM: the AUC it must beat.

    Same batch size, learning rate, seed and early stopping as the ranker (``ranking_*`` fields), so the
    two AUCs differ by the model only.

    Returns:
        The fitted baseline; ``metrics["auc"]`` is its best validation AUC.
    """
    device = _prepare(settings)
    return _fit_binary(
        LogisticRegression(field_dims).to(device),
        train,
        valid,
        name="logistic regression baseline",
        epochs=settings.ranking_epochs,
        settings=settings,
        device=device,
        on_epoch=None,
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
) -> TrainResult:
    """Binary cross-entropy over ``x -> logit``; valid ``logloss`` and ``auc`` per epoch."""
    tr, va = train.to(device), valid.to(device)

    def step_loss(idx: torch.Tensor) -> torch.Tensor:
        b = tr.take(idx)
        return F.binary_cross_entropy_with_logits(model(b.x).float(), b.label)

    def evaluate() -> dict:
        if len(va) == 0:
            return {"logloss": math.nan, "auc": math.nan}
        logits = torch.cat([model(va.x[i : i + _EVAL_CHUNK]).float() for i in range(0, len(va), _EVAL_CHUNK)])
        logloss = float(F.binary_cross_entropy_with_logits(logits, va.label))
        return {"logloss": logloss, "auc": roc_auc(va.label.cpu().numpy(), logits.cpu().numpy())}

    return _fit(
        model,
        name=name,
        n_train=len(tr),
        step_loss=step_loss,
        evaluate=evaluate,
        monitor=("auc", "-logloss"),
        epochs=epochs,
        batch_size=settings.ranking_batch_size,
        lr=settings.ranking_lr,
        settings=settings,
        device=device,
        on_epoch=on_epoch,
        checkpoint_path=checkpoint_path,
    )


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney) formula; ties get their average rank.

    Returns NaN when only one class is present.

    Example:
        >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        0.75
    """
    y = np.asarray(labels) > 0.5
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = np.unique(
        np.asarray(scores, dtype=np.float64), return_inverse=True, return_counts=True
    )
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    rank_sum = float(avg_rank[inverse][y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
