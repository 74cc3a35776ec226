"""The two training stages: lake examples in, one MLflow run and one registered `challenger` version out."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date

import torch

from nightrec.io import lake
from nightrec.models.configs import DeepFMConfig, TwoTowerConfig
from nightrec.settings import Settings
from nightrec.training import datasets, loop, tracking
from schemas.tables import RANKING_EXAMPLES, RETRIEVAL_EXAMPLES

RETRIEVAL, RANKING = "nightrec-retrieval", "nightrec-ranking"


def _newest(t, cap: int | None):
    # Examples are written in time order per split; keep the newest rows when a cap is set.
    if cap is None or len(t) <= cap:
        return t
    return t.take(torch.arange(len(t) - cap, len(t)))


def _inputs(settings: Settings, table: str, ds: date) -> tuple[dict[str, str], dict[str, str]]:
    path = lake.require_partition(settings.lake, table, ds)
    marker = lake.read_marker(path) or {}
    sources = {split: str(path / f"split={split}") for split in ("train", "valid")}
    return sources, {"features": str(marker.get("fingerprint")), "ds": ds.isoformat()}


def train_retrieval(settings: Settings, ds: date, tags: dict[str, str]) -> dict:
    """Train the two-tower model on ``ds``'s examples; log, register and alias it `challenger`."""
    t = settings.train
    tracking.configure_mlflow(
        settings.mlflow_tracking_uri, settings.mlflow_artifact_root, settings.mlflow_experiment
    )
    sizes = datasets.vocab_sizes(settings.lake, ds)
    h = settings.features.history_len
    train = _newest(datasets.load_retrieval_examples(settings.lake, ds, "train", h), t.max_train_rows)
    valid = datasets.load_retrieval_examples(settings.lake, ds, "valid", h)
    cfg = TwoTowerConfig.from_vocab(
        sizes, dim=t.retrieval_dim, history_len=h, temperature=t.retrieval_temperature
    )
    sources, fingerprints = _inputs(settings, RETRIEVAL_EXAMPLES.name, ds)
    run_tags = {"nightrec.stage": "train_retrieval", "nightrec.ds": ds.isoformat(), **tags}
    with tracking.training_run(RETRIEVAL, tags=run_tags):
        result = loop.train_retrieval(train, valid, cfg, t)
        ref = tracking.log_training_run(
            result,
            model_name=RETRIEVAL,
            params={
                **cfg.to_dict(),
                **_train_params(t, "retrieval"),
                "n_train": len(train),
                "n_valid": len(valid),
            },
            dataset_sources=sources,
            fingerprints=fingerprints,
            tags=run_tags,
            input_example=train.packed_users()[:5].numpy(),
        )
    return asdict(ref) | {"metrics": result.metrics}


def train_ranking(settings: Settings, ds: date, tags: dict[str, str]) -> dict:
    """Train DeepFM on ``ds``'s labelled examples; log, register and alias it `challenger`."""
    t = settings.train
    tracking.configure_mlflow(
        settings.mlflow_tracking_uri, settings.mlflow_artifact_root, settings.mlflow_experiment
    )
    sizes = datasets.vocab_sizes(settings.lake, ds)
    train = _newest(datasets.load_ranking_examples(settings.lake, ds, "train"), t.max_train_rows)
    valid = datasets.load_ranking_examples(settings.lake, ds, "valid")
    cfg = DeepFMConfig.from_vocab(sizes, embed_dim=t.ranking_dim)
    sources, fingerprints = _inputs(settings, RANKING_EXAMPLES.name, ds)
    run_tags = {"nightrec.stage": "train_ranking", "nightrec.ds": ds.isoformat(), **tags}
    with tracking.training_run(RANKING, tags=run_tags):
        result = loop.train_ranking(train, valid, cfg, t)
        ref = tracking.log_training_run(
            result,
            model_name=RANKING,
            params={
                **cfg.to_dict(),
                **_train_params(t, "ranking"),
                "n_train": len(train),
                "n_valid": len(valid),
            },
            dataset_sources=sources,
            fingerprints=fingerprints,
            tags=run_tags,
            input_example=train.x[:5].numpy(),
        )
    return asdict(ref) | {"metrics": result.metrics}


def _train_params(t, prefix: str) -> dict:
    common = {"seed": t.seed, "device": t.device, "patience": t.patience}
    return common | {k: v for k, v in t.model_dump().items() if k.startswith(prefix)}
