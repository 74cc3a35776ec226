"""The two training stages: lake examples in, one MLflow run and one registered `challenger` version out.

Under several training processes (``world``, see ``nightrec.training.distributed``) every process loads the
examples and trains; only rank 0 talks to MLflow (run, metrics, registration) and writes checkpoints, and
the others wait for it at the end of the stage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import torch

from nightrec import registry
from nightrec.features.events import Cutoffs
from nightrec.io import lake, vocab_identity
from nightrec.models.configs import RANKER_FIELDS, DeepFMConfig, TwoTowerConfig
from nightrec.settings import Settings
from nightrec.training import (
    checkpoint,
    datasets,
    item_popularity,
    item_side,
    loop,
    ranker_examples,
    warm,
)
from nightrec.training.datasets import RankingTensors, RetrievalTensors, Sample
from nightrec.training.process_group import World
from schemas.results import CHALLENGER, RANKING, RETRIEVAL, ModelTrained
from schemas.tables import RANKING_EXAMPLES, RETRIEVAL_EXAMPLES

BLEND_WEIGHTS = tuple(i / 10 for i in range(11))
_PROGRESS = logging.getLogger("nightrec.progress")  # the lines the CLI shows under the stage
BLEND_POSITIVES = 5000  # about 1M ranker rows at 200 candidates: seconds on 2 cores


def _warm_source(
    settings: Settings, ds: date, model_name: str, cfg, world: World
) -> tuple[torch.nn.Module | None, str | None]:
    """The model tonight's fit starts from, and its version (``nightrec.training.warm``); (None, None) = fresh.

    Rank 0 reads the registry and hands the model to the others: every process must start from the same.
    """
    found, version = None, None
    if world.is_main and settings.train.warm_start:
        version = registry.latest_trained_before(model_name, ds.isoformat())
    if version is not None:
        model = registry.load_version(model_name, version)
        try:
            vocab_identity.check_model(model, settings.lake, ds, f"{model_name} version {version}")
        except vocab_identity.VocabularyMismatch as e:
            _PROGRESS.info("%s: training from scratch, not from version %s: %s", model_name, version, e)
        else:
            if warm.same_architecture(getattr(model, "config", None), cfg):
                found = (model, version)
                _PROGRESS.info("%s: starting from version %s (warm start)", model_name, version)
            else:
                _PROGRESS.info("%s: version %s has another architecture; from scratch", model_name, version)
    return world.broadcast(found) or (None, None)


def _warm_settings(t, model: str):
    """The training settings of a warm-started fit of ``model`` (``retrieval`` or ``ranking``):
    ``warm_epochs`` and the warm budget (``warm_max_examples``), each only ever lower than a cold fit's."""
    budget = min((b for b in (t.max_examples, t.warm_max_examples) if b is not None), default=None)
    epochs = min(t.warm_epochs, getattr(t, f"{model}_epochs"))
    return t.model_copy(update={f"{model}_epochs": epochs, "max_examples": budget})


def _quotas(available: dict[str, int], budget: int | None) -> dict[str, int | None]:
    """Each split's share of ``budget`` rows, in proportion to its size (None = every row of each)."""
    total = sum(available.values())
    if budget is None or total <= budget:
        return dict.fromkeys(available)
    return {name: -(-budget * n // total) for name, n in available.items()}


def _checkpoint(settings: Settings, model_name: str, ds: date, *parts: object) -> Path:
    """Where this night's training of ``model_name`` checkpoints, keyed by everything that shapes it.

    The code version is part of the key: a fix deployed between the kill and the re-run may change what
    the weights mean, so it trains afresh.
    """
    t = settings.train
    root = Path(t.checkpoint_dir) if t.checkpoint_dir else settings.home / "checkpoints"
    key = checkpoint.fingerprint(registry.code_version(), *parts)
    return checkpoint.checkpoint_path(root, model_name, ds, key)


def _adopt(ckpt: Path, run_id: str | None) -> None:
    """Record ``run_id`` as the training behind ``ckpt``; end a previous owner left RUNNING by a kill.

    A SIGKILLed process cannot end its MLflow run, so the run that resumes its checkpoint does (KILLED).
    No run id (ranks other than 0 have no run): nothing to record.
    """
    if run_id is None:
        return
    owner = ckpt.with_name(ckpt.name + ".run")
    if owner.exists():  # a previous run of this training did not finish: it failed, or was killed
        registry.end_orphan_run(owner.read_text().strip(), resumed_by=run_id)
    owner.parent.mkdir(parents=True, exist_ok=True)
    owner.write_text(run_id)


def _release(*ckpts: Path) -> None:
    """Delete the checkpoints once the model is registered: a re-run of this night trains afresh."""
    for path in ckpts:
        checkpoint.remove(path)
        path.with_name(path.name + ".run").unlink(missing_ok=True)


@contextmanager
def _main_run(world: World, model_name: str, tags: dict[str, str]) -> Iterator[str | None]:
    """The training's MLflow run on rank 0 (yields its id); nothing on the other ranks (they train only)."""
    if not world.is_main:
        yield None
        return
    with registry.training_run(model_name, tags=tags) as run_id:
        yield run_id


def _configure_mlflow(settings: Settings, world: World) -> None:
    if world.is_main:
        registry.connect(settings)


def _log_training_run(world: World, result: loop.TrainResult, **kwargs) -> registry.ModelRef | None:
    """``registry.log_training_run`` on rank 0 (the registered version); None on the other ranks."""
    return registry.log_training_run(result, **kwargs) if world.is_main else None


def _finish(
    world: World, ref: registry.ModelRef | None, result: loop.TrainResult, *ckpts: Path
) -> ModelTrained:
    """Rank 0 deletes the checkpoints; every rank returns rank 0's model reference and metrics.

    The broadcast is also the barrier: no rank leaves the stage before the model is registered.
    """
    out = None
    if world.is_main:
        _release(*ckpts)
        out = ModelTrained(**asdict(ref), metrics=result.metrics)
    return world.broadcast(out)


def _inputs(settings: Settings, table: str, ds: date) -> tuple[dict[str, str], dict[str, str]]:
    path = lake.require_partition(settings.lake, table, ds)
    marker = lake.read_marker(path) or {}
    sources = {split: str(path / f"split={split}") for split in ("train", "valid")}
    return sources, {"features": str(marker.get("fingerprint")), "ds": ds.isoformat()}


def train_retrieval(
    settings: Settings, ds: date, tags: dict[str, str], world: World | None = None
) -> ModelTrained:
    """Train the two-tower model on ``ds``'s examples; log, register and alias it `challenger`.

    With ``world`` of several processes each calls this; every one returns rank 0's model reference.
    """
    world = world or World()
    t = settings.train
    _configure_mlflow(settings, world)
    sizes = datasets.vocab_sizes(settings.lake, ds)
    trained_on = vocab_identity.digest(settings.lake, ds)  # what its indices mean, checked wherever it scores
    h, with_day = settings.features.history_len, t.retrieval_item_state
    side = item_side.load_item_side(settings.lake, ds, sizes["item_id"])
    cfg = TwoTowerConfig.from_vocab(
        sizes,
        dim=t.retrieval_dim,
        history_len=h,
        temperature=t.retrieval_temperature,
        n_tags=side.n_tags,
        user_encoder=t.retrieval_user_encoder,
        loss=t.retrieval_loss,
        item_state=t.retrieval_item_state,
    )
    init, warm_from = _warm_source(settings, ds, RETRIEVAL, cfg, world)
    if init is not None:
        t = _warm_settings(t, "retrieval")
    load = partial(datasets.load_retrieval_examples, settings.lake, ds, history_len=h, with_day=with_day)
    count = partial(datasets.count_rows, settings.lake, RETRIEVAL_EXAMPLES.name, ds)
    available = {split: count(split) for split in ("train", "valid", "holdout")}
    train = load("train", sample=Sample(t.max_examples, t.seed, available["train"]))
    valid = load("valid", sample=Sample(t.max_valid_examples, t.seed + 1, available["valid"]))
    state = _item_state(settings, ds, train, sizes["item_id"]) if t.retrieval_item_state else None
    cut = Cutoffs.of_night(settings.lake, ds, settings.features)
    sources, fingerprints = _inputs(settings, RETRIEVAL_EXAMPLES.name, ds)
    run_tags = {"nightrec.stage": "train_retrieval", "nightrec.ds": ds.isoformat(), **tags}
    params = {
        **cfg.to_dict(),
        **_train_params(t, "retrieval"),
        "warm_from": warm_from or "",
        "n_train": len(train),
        "n_valid": len(valid),
        "n_train_available": available["train"],
        "n_valid_available": available["valid"],
    }
    ckpt = _checkpoint(settings, RETRIEVAL, ds, fingerprints, params)
    twin_ckpt = ckpt.with_name(f"{ckpt.stem}-serving.pt")
    with _main_run(world, RETRIEVAL, run_tags) as run_id:
        _adopt(ckpt, run_id)
        # Validated as of the validation window's start, evaluated (the holdout) as of its start.
        result = loop.train_retrieval(
            train,
            valid,
            cfg,
            t,
            checkpoint_path=ckpt,
            world=world,
            item_side=side,
            item_state=state,
            state_days=(cut.valid_start, cut.eval_start),
            init=init,
        )
        result.model.vocab_digest = trained_on
        twin = None
        if t.retrieval_refit:
            # Every window up to the run date, sampled to the same budget in proportion to each.
            quota = _quotas(available, t.max_examples)
            parts = [load(name, sample=Sample(quota[name], t.seed + 2, n)) for name, n in available.items()]
            full = datasets.RetrievalTensors.concat(parts)
            twin = _serving_twin(full, cfg, t, result, twin_ckpt, world, side, state, ds, init)
            twin.vocab_digest = trained_on
            result.metrics |= {"serving_refit_rows": len(full)}
        result.metrics |= {"n_train": len(train), "n_train_available": available["train"]}
        example = train.packed_users()[:5].numpy()
        columns = ["user_idx", "segment_idx", *(f"history_{i}" for i in range(example.shape[1] - 2))]
        ref = _log_training_run(
            world,
            result,
            model_name=RETRIEVAL,
            params=params,
            dataset_sources=sources,
            fingerprints=fingerprints,
            tags=run_tags,
            input_example=example,
            input_columns=columns,
        )
        if ref is not None and twin is not None:
            twin_version = registry.log_serving_twin(twin, RETRIEVAL, ref.version, example, columns)
            ref = replace(ref, serving_version=twin_version)
    return _finish(world, ref, result, ckpt, twin_ckpt)


def _serving_twin(
    full, cfg, t, result: loop.TrainResult, ckpt: Path, world: World, side, state, ds: date, init=None
) -> torch.nn.Module:
    """The two-tower that serves: the evaluated model's recipe, refit on every window up to the run date.

    The evaluated model never trains on its validation and holdout windows (they choose its epochs and
    measure it); on a sparse log those are the last weeks, whose trending items it would otherwise never
    see. The twin trains on all of them for the epochs early stopping chose, with the same seed.
    """
    empty = full.take(torch.zeros(0, dtype=torch.long))
    refit = t.model_copy(update={"retrieval_epochs": max(result.best_epoch, 1)})
    return loop.train_retrieval(
        full,
        empty,
        cfg,
        refit,
        checkpoint_path=ckpt,
        world=world,
        item_side=side,
        item_state=state,
        state_days=(ds, ds),  # it serves lists made on the run date
        init=init,  # the evaluated model's starting point, when it was warm-started
    ).model


def _item_state(
    settings: Settings, ds: date, train: RetrievalTensors, n_items: int
) -> item_popularity.ItemState:
    """Popularity and age of every item on every day from the first training example's to the run date."""
    first = item_popularity.date_of(int(train.day.min())) if len(train) else ds
    return item_popularity.item_state(
        settings.lake, ds, first, ds, settings.features.popularity_days, n_items
    )


def train_ranking(
    settings: Settings, ds: date, tags: dict[str, str], world: World | None = None
) -> ModelTrained:
    """Train DeepFM on ``ds``'s labelled examples; log, register and alias it `challenger`.

    The ranker learns from the validation window only, split in time: its last ``ranking_valid_days`` early-stop
    it and choose the blend weight. That window is the most recent before the holdout, and the one the
    two-tower did not fit, so its retrieval ranks are out-of-sample, as they are at serving time (on the
    demo data: held-out NDCG@10 0.17 against 0.12 when trained on the train window, where the ranks are
    in-sample and the ranker learns to over-trust them). Its derived inputs come from the retrieval
    `challenger` (the two-tower trained just before, the model it is promoted and served with).
    With ``world`` of several processes each calls this, and rank 0 hands the others that two-tower.
    """
    world = world or World()
    t = settings.train
    _configure_mlflow(settings, world)
    cfg = DeepFMConfig.from_vocab(datasets.vocab_sizes(settings.lake, ds), embed_dim=t.ranking_dim)
    init, warm_from = _warm_source(settings, ds, RANKING, cfg, world)
    if init is not None:
        t = _warm_settings(t, "ranking")
        settings = settings.model_copy(update={"train": t})
    data = _ranking_data(settings, ds, world)
    sources, fingerprints = _inputs(settings, RANKING_EXAMPLES.name, ds)
    run_tags = {"nightrec.stage": "train_ranking", "nightrec.ds": ds.isoformat(), **tags}
    params = {
        **cfg.to_dict(),
        **_train_params(t, "ranking"),
        "warm_from": warm_from or "",
        "n_train": len(data.train),
        "n_valid": len(data.valid),
        "n_train_positives_available": data.positives_available,
        "retrieval_version": data.retrieval_version,
        "examples_from": data.examples_from,
        "valid_from": data.split_day,
    }
    ckpt = _checkpoint(settings, RANKING, ds, fingerprints, params)
    refit_ckpt = ckpt.with_name(f"{ckpt.stem}-refit.pt")
    with _main_run(world, RANKING, run_tags) as run_id:
        _adopt(ckpt, run_id)
        result = _fit_ranker(settings, data, cfg, world, ckpt, refit_ckpt, init)
        result.metrics |= {
            "n_train": len(data.train),
            "n_train_positives_available": data.positives_available,
        }
        result.model.vocab_digest = vocab_identity.digest(settings.lake, ds)
        ref = _log_training_run(
            world,
            result,
            model_name=RANKING,
            params=params,
            dataset_sources=sources,
            fingerprints=fingerprints,
            tags=run_tags,
            input_example=data.train.x[:5].numpy(),
            input_columns=list(RANKER_FIELDS[: data.train.x.shape[1]]),
        )
    return _finish(world, ref, result, ckpt, refit_ckpt)


@dataclass
class _RankingData:
    """What the ranker trains on: examples with their derived fields, and what derived them."""

    sizes: dict[str, int]
    train: RankingTensors
    valid: RankingTensors
    valid_positives: RankingTensors  # before the candidates' negatives and derived fields (blend weight)
    item_fields: torch.Tensor
    retrieval: torch.nn.Module | None  # the retrieval challenger the derived fields come from
    retrieval_version: str | None
    popularity: item_popularity.DailyPopularity | None  # by day, when ranking_point_in_time_popularity
    generator: torch.Generator  # one stream, drawn in a fixed order: train, valid, then the blend weight
    examples_from: date
    split_day: date
    positives_available: int  # the training window's positives before the budget's sample


def _ranking_data(settings: Settings, ds: date, world: World) -> _RankingData:
    """The validation window's positives, split in time, with negatives drawn from the retrieval candidates."""
    t = settings.train
    sizes = datasets.vocab_sizes(settings.lake, ds)
    h = settings.features.history_len
    cut = Cutoffs.of_night(settings.lake, ds, settings.features)
    tail = min(t.ranking_valid_days, max(settings.features.valid_days // 2, 1))
    split_day = cut.eval_start - timedelta(days=tail)
    pit = t.ranking_point_in_time_popularity
    # Positives only: their negatives are drawn from the retrieval candidates below. The lake's negatives
    # (impressions) are shown by the user's taste, so they teach that popularity does not matter, while
    # among the candidates it does. Each positive becomes 1 + negatives examples: the budget counts those.
    per_positive = 1 + t.ranking_candidate_negatives
    load = partial(datasets.load_ranking_examples, settings.lake, ds, history_len=h, with_day=pit)
    windows = {"valid": (None, split_day)}
    if t.ranking_examples_from == "train_and_valid":
        windows = {"train": (None, None), **windows}  # time order: the train window first
    count = partial(datasets.count_rows, settings.lake, RANKING_EXAMPLES.name, ds)
    available = {
        name: count(name, datasets.ranking_filter(*bounds, positives_only=True))
        for name, bounds in windows.items()
    }
    quota = _quotas(available, t.max_examples // per_positive if t.max_examples else None)
    parts = [
        load(
            name,
            start=start,
            stop=stop,
            positives_only=True,
            sample=Sample(quota[name], t.seed, available[name]),
        )
        for name, (start, stop) in windows.items()
    ]
    train = RankingTensors.concat(parts) if len(parts) > 1 else parts[0]
    valid_budget = t.max_valid_examples // per_positive if t.max_valid_examples else None
    valid = load("valid", start=split_day, positives_only=True, sample=Sample(valid_budget, t.seed + 1))
    item_fields = datasets.load_item_fields(settings.lake, ds, sizes["item_id"])
    found = world.broadcast(registry.load_model(RETRIEVAL, CHALLENGER) if world.is_main else None)
    retrieval, retrieval_version = (found[0], found[1]) if found else (None, None)
    vocab_identity.check_model(retrieval, settings.lake, ds, f"{RETRIEVAL} version {retrieval_version}")
    gen = torch.Generator().manual_seed(t.seed)
    popularity = None
    if pit and len(train) + len(valid):
        days = torch.cat([train.day, valid.day])
        first, last = (item_popularity.date_of(int(f(days))) for f in (torch.min, torch.max))
        popularity = item_popularity.daily_popularity(
            settings.lake, ds, first, last, settings.features.popularity_days, sizes["item_id"]
        )
    derive = partial(
        ranker_examples.with_ranker_fields,
        retrieval=retrieval,
        item_fields=item_fields,
        n_candidates=settings.scoring.n_candidates,
        negatives_per_positive=t.ranking_candidate_negatives,
        generator=gen,
        popularity=popularity,
    )
    return _RankingData(
        sizes=sizes,
        train=derive(train),
        valid=derive(valid),
        valid_positives=valid,
        item_fields=item_fields,
        retrieval=retrieval,
        retrieval_version=retrieval_version,
        popularity=popularity,
        generator=gen,
        examples_from=cut.valid_start,
        split_day=split_day,
        positives_available=sum(available.values()),
    )


def _fit_ranker(
    settings: Settings,
    data: _RankingData,
    cfg: DeepFMConfig,
    world: World,
    ckpt: Path,
    refit_ckpt: Path,
    init: torch.nn.Module | None = None,
) -> loop.TrainResult:
    """Train DeepFM, the logistic bar it must clear, choose its blend weight, then refit on the whole window."""
    t = settings.train
    train, valid = data.train, data.valid
    result = loop.train_ranking(train, valid, cfg, t, checkpoint_path=ckpt, world=world, init=init)
    # The bar DeepFM must clear: a logistic regression on the same fields, examples and validation days.
    baseline = loop.train_logistic_baseline(train, valid, cfg.field_dims, t, world=world)
    # Chosen on the validation window (never the holdout), then carried by the model to the scorer.
    weight, figures = ranker_examples.choose_blend_weight(
        result.model,
        data.retrieval,
        data.valid_positives,
        data.item_fields,
        n_candidates=settings.scoring.n_candidates,
        weights=BLEND_WEIGHTS,
        max_positives=BLEND_POSITIVES,
        generator=data.generator,
        popularity=data.popularity,
    )
    if len(valid):
        # Refit on the whole window for the chosen number of epochs: its last days are the closest to
        # the days served (trending items), and worth more than keeping them out.
        refit = t.model_copy(update={"ranking_epochs": result.best_epoch})
        full = RankingTensors(torch.cat([train.x, valid.x]), torch.cat([train.label, valid.label]))
        empty = full.take(torch.zeros(0, dtype=torch.long))
        result.model = loop.train_ranking(
            full, empty, cfg, refit, checkpoint_path=refit_ckpt, world=world, init=init
        ).model
    result.model.blend_weight = weight
    result.metrics |= {"blend_weight": weight, "lr_auc": baseline.metrics["auc"]} | {
        f"valid_ndcg_at_10_w{w:.1f}": v for w, v in figures.items()
    }
    return result


def _train_params(t, prefix: str) -> dict:
    """The training settings of one model under names both models share (``epochs``, ``lr``, ``dim``...), so
    MLflow's compare view lines the two-tower and DeepFM runs up column by column."""
    common = {"model": prefix, "seed": t.seed, "device": t.device, "patience": t.patience}
    common |= {"max_examples": t.max_examples, "max_valid_examples": t.max_valid_examples}
    common |= {"warm_max_examples": t.warm_max_examples}
    common |= {"max_minutes": t.max_minutes}
    own = {k.removeprefix(f"{prefix}_"): v for k, v in t.model_dump().items() if k.startswith(f"{prefix}_")}
    return common | own
