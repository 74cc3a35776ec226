"""Training: loading examples, behaviour after training, determinism, early stopping, NaN guard."""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import UTC, date, datetime

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient

from nightrec import registry
from nightrec.errors import StageInputMissing
from nightrec.io import lake
from nightrec.models.configs import AGE_BUCKETS, DeepFMConfig, TwoTowerConfig
from nightrec.settings import TrainSettings
from nightrec.training import datasets, loop
from nightrec.training.datasets import RankingTensors, RetrievalTensors
from nightrec.training.item_popularity import DailyPopularity, ItemState
from schemas.results import CHALLENGER

DS = date(2026, 11, 20)
N_ITEMS, N_USERS, N_CATS = 61, 60, 4  # items 1..60 in categories 1..3; index 0 is OOV everywhere


def _item_cat(items: np.ndarray) -> np.ndarray:
    return np.where(items > 0, items % 3 + 1, 0)


def _retrieval(n: int, seed: int, hist_len: int = 5) -> RetrievalTensors:
    """Each user only engages with items of one category: (user % 3) + 1."""
    g = np.random.default_rng(seed)
    users = g.integers(1, N_USERS, n)
    pref = users % 3 + 1
    pool = {c: np.flatnonzero(_item_cat(np.arange(N_ITEMS)) == c) for c in (1, 2, 3)}
    pick = np.stack([pool[c][g.integers(0, 20, 1 + hist_len)] for c in pref])
    items, hist = pick[:, 0], pick[:, 1:]
    hist[g.random(hist.shape) < 0.3] = 0  # some padding
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    return RetrievalTensors(t(users), t(np.ones(n)), t(hist), t(items), t(_item_cat(items)), torch.ones(n))


def _ranking(n: int, seed: int) -> RankingTensors:
    """Engaged iff the item's category matches the user's segment (5% label noise)."""
    g = np.random.default_rng(seed)
    users, items = g.integers(1, N_USERS, n), g.integers(1, N_ITEMS, n)
    seg, cat = users % 3 + 1, _item_cat(items)
    noise = [g.integers(0, 11, n), g.integers(0, 32, n), g.integers(0, 32, n), g.integers(0, 12, n)]
    x = np.stack([users, seg, items, cat, *noise], axis=1)
    y = (seg == cat) ^ (g.random(n) < 0.05)
    return RankingTensors(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.float32)))


TT = TwoTowerConfig(
    n_users=N_USERS, n_items=N_ITEMS, n_categories=N_CATS, n_segments=2, dim=16, history_len=5
)
FM = DeepFMConfig(field_dims=(N_USERS, N_CATS, N_ITEMS, N_CATS, 11, 32, 32, 12), embed_dim=8, hidden=(32,))
FAST = TrainSettings(
    device="cpu",
    retrieval_epochs=3,
    retrieval_batch_size=256,
    retrieval_lr=0.01,
    ranking_epochs=3,
    ranking_batch_size=256,
    ranking_lr=0.01,
    patience=1,
)


@pytest.fixture(scope="module")
def retrieval_result() -> loop.TrainResult:
    s = FAST.model_copy(update={"retrieval_epochs": 6, "retrieval_batch_size": 128})
    return loop.train_retrieval(_retrieval(3000, 0), _retrieval(500, 1), TT, s)


# --- behaviour ---------------------------------------------------------------------------------------------


def test_users_of_one_category_get_that_categorys_items_ranked_higher(retrieval_result):
    model = retrieval_result.model
    fresh = _retrieval(200, 5)  # unseen (user, history) pairs, as at scoring time
    items = torch.arange(1, N_ITEMS)
    cats = torch.from_numpy(_item_cat(items.numpy()))
    with torch.no_grad():
        scores = (
            model.user_vectors(fresh.user_idx, fresh.segment_idx, fresh.history)
            @ model.item_vectors(items, cats).T
        )
    in_cat = cats[None, :] == (fresh.user_idx % 3 + 1)[:, None]
    mean_in = (scores * in_cat).sum(1) / in_cat.sum(1)
    mean_out = (scores * ~in_cat).sum(1) / (~in_cat).sum(1)
    assert (mean_in > mean_out).float().mean() > 0.95
    top10_in_cat = torch.gather(in_cat, 1, scores.topk(10, dim=1).indices).float().mean()
    assert top10_in_cat > 0.9


def test_retrieval_history_and_metrics(retrieval_result):
    r = retrieval_result
    assert [row["epoch"] for row in r.history] == list(range(1, len(r.history) + 1))
    assert {"train_loss", "valid_loss", "recall_at_50", "epoch_seconds", "samples_per_s"} <= set(r.history[0])
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert r.metrics["recall_at_50"] == r.history[r.best_epoch - 1]["recall_at_50"]
    assert r.metrics["epochs_run"] == len(r.history)
    assert not r.model.training and next(r.model.parameters()).device.type == "cpu"


def test_ranking_separates_matching_categories():
    seen = []
    r = loop.train_ranking(
        _ranking(6000, 0), _ranking(1000, 1), FM, FAST, on_epoch=lambda e, m: seen.append(e)
    )
    assert r.metrics["auc"] > 0.9
    assert r.metrics["logloss"] < math.log(2)
    assert seen == [row["epoch"] for row in r.history]


def test_roc_auc_against_hand_computed_values():
    assert loop.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert loop.roc_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    assert loop.roc_auc(np.array([0, 1]), np.array([0.9, 0.1])) == pytest.approx(0.0)
    assert math.isnan(loop.roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


# --- determinism, early stopping, divergence ---------------------------------------------------------------


def test_same_seed_gives_the_same_losses_on_cpu():
    s = FAST.model_copy(update={"retrieval_epochs": 2})
    a = loop.train_retrieval(_retrieval(1000, 0), _retrieval(200, 1), TT, s)
    b = loop.train_retrieval(_retrieval(1000, 0), _retrieval(200, 1), TT, s)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert [h["recall_at_50"] for h in a.history] == [h["recall_at_50"] for h in b.history]
    c = loop.train_retrieval(_retrieval(1000, 0), _retrieval(200, 1), TT, s.model_copy(update={"seed": 8}))
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in c.history]


def test_early_stopping_keeps_the_best_epochs_weights():
    model = torch.nn.Linear(2, 1)
    snapshots: list[torch.Tensor] = []
    quality = iter([0.5, 0.7, 0.6, 0.4, 0.3, 0.2])

    def evaluate() -> dict:
        snapshots.append(model.weight.detach().clone())
        return {"m": next(quality)}

    x = torch.randn(16, 2)
    r = loop._fit(
        model,
        name="toy",
        n_train=16,
        step_loss=lambda idx: model(x[idx]).pow(2).mean(),
        evaluate=evaluate,
        monitor=("m",),
        epochs=6,
        batch_size=4,
        lr=0.1,
        settings=TrainSettings(patience=1, device="cpu"),
        device=torch.device("cpu"),
        on_epoch=None,
    )
    assert r.best_epoch == 2 and len(r.history) == 4  # epochs 3 and 4 did not improve: patience 1 exhausted
    torch.testing.assert_close(model.weight, snapshots[1])


def test_nan_loss_raises_naming_model_epoch_step_and_last_finite_loss():
    train = _retrieval(1000, 0)
    train.weight[700] = float("nan")
    with pytest.raises(loop.TrainingDiverged) as info:
        loop.train_retrieval(train, _retrieval(100, 1), TT, FAST)
    err = info.value
    assert re.search(r"two-tower retrieval training diverged at epoch 1, step \d+", str(err))
    assert err.epoch == 1 and err.step >= 1
    if err.step > 1:
        assert math.isfinite(err.last_finite_loss) and f"{err.last_finite_loss:.6g}" in str(err)


def test_nan_label_stops_ranking_training():
    train = _ranking(1000, 0)
    train.label[3] = float("nan")
    with pytest.raises(loop.TrainingDiverged, match="DeepFM ranking training diverged at epoch 1, step"):
        loop.train_ranking(train, _ranking(100, 1), FM, FAST)


def test_empty_training_split_is_refused():
    empty = _retrieval(10, 0).take(torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="nothing to train"):
        loop.train_retrieval(empty, empty, TT, FAST)


def test_select_device():
    assert loop.select_device("cpu").type == "cpu"
    assert loop.select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# --- loading from the lake ---------------------------------------------------------------------------------


def _write(lake_root, table: str, parts: dict[str, pa.Table]) -> None:
    path = lake.partition_path(lake_root, table, DS)
    for sub, t in parts.items():
        (path / sub).mkdir(parents=True, exist_ok=True)
        pq.write_table(t, path / sub / "part-0.parquet")
    lake.write_marker(path, "fp")


def test_load_retrieval_examples_pads_histories_and_filters_the_split(tmp_path):
    hist = pa.array([[5, 4, 3], [], None, [9, 8, 7, 6, 2, 1]], pa.list_(pa.int32()))
    t = pa.table(
        {
            "user_idx": pa.array([1, 2, 3, 4], pa.int32()),
            "segment_idx": pa.array([1, 0, 1, 1], pa.int32()),
            "history": hist,
            "item_idx": pa.array([7, 8, 9, 10], pa.int32()),
            "category_idx": pa.array([1, 2, 1, 2], pa.int32()),
            "weight": pa.array([1.0, 2.0, 3.0, 1.0]),
        }
    )
    _write(tmp_path, "retrieval_examples", {"split=train": t, "split=valid": t.slice(0, 1)})
    tr = datasets.load_retrieval_examples(tmp_path, DS, "train", history_len=4)
    assert len(tr) == 4 and tr.history.dtype == torch.int64 and tr.weight.dtype == torch.float32
    assert tr.history.tolist() == [[5, 4, 3, 0], [0, 0, 0, 0], [0, 0, 0, 0], [9, 8, 7, 6]]
    assert tr.packed_users()[0].tolist() == [1, 1, 5, 4, 3, 0]
    va = datasets.load_retrieval_examples(tmp_path, DS.isoformat(), "valid", history_len=4)
    assert va.item_idx.tolist() == [7]
    assert len(tr.take(torch.tensor([3, 0]))) == 2


def test_load_ranking_examples_stacks_fields_in_contract_order_and_filters_days(tmp_path):
    cols = {f: pa.array([i + 1, i + 2], pa.int32()) for i, f in enumerate(datasets.RANKING_FIELDS)}
    t = pa.table(
        {
            "label": pa.array([1.0, 0.0], pa.float32()),
            **cols,
            "history": pa.array([[4, 3], []], pa.list_(pa.int32())),
            "ts": pa.array(
                [datetime(2026, 11, 10, 23, tzinfo=UTC), datetime(2026, 11, 11, tzinfo=UTC)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    _write(tmp_path, "ranking_examples", {"split=train": t})
    rk = datasets.load_ranking_examples(tmp_path, DS, "train")
    assert rk.x.tolist() == [[1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7]]
    assert rk.label.tolist() == [1.0, 0.0] and rk.history is None
    with_history = datasets.load_ranking_examples(tmp_path, DS, "train", history_len=3)
    assert with_history.history.tolist() == [[4, 3, 0], [0, 0, 0]]
    late = datasets.load_ranking_examples(tmp_path, DS, "train", start=date(2026, 11, 11))
    early = datasets.load_ranking_examples(tmp_path, DS, "train", stop=date(2026, 11, 11))
    assert late.label.tolist() == [0.0] and early.label.tolist() == [1.0]
    assert len(datasets.load_ranking_examples(tmp_path, DS, "valid")) == 0


def test_vocab_sizes_are_max_index_plus_one(tmp_path):
    t = pa.table(
        {
            "field": ["user_id", "user_id", "item_id", "category"],
            "value": ["a", "b", "x", "c"],
            "idx": pa.array([1, 7, 3, 2], pa.int32()),
        }
    )
    _write(tmp_path, "vocab", {".": t})
    assert datasets.vocab_sizes(tmp_path, DS) == {"user_id": 8, "item_id": 4, "category": 3, "segment": 1}


def test_missing_partition_is_refused(tmp_path):
    with pytest.raises(StageInputMissing, match="retrieval_examples"):
        datasets.load_retrieval_examples(tmp_path, DS, "train", history_len=4)


def test_batches_cover_every_row_once_in_a_seeded_order():
    a = list(datasets.iter_batches(10, 4, torch.Generator().manual_seed(1)))
    b = list(datasets.iter_batches(10, 4, torch.Generator().manual_seed(1)))
    assert [len(x) for x in a] == [4, 4, 2]
    assert sorted(torch.cat(a).tolist()) == list(range(10))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_diverged_training_registers_nothing_and_ends_its_run_failed(tmp_path, monkeypatch):
    """Scenario 14, as the training stages run it: train inside the run, log and register after."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    previous = mlflow.get_tracking_uri()
    exp = registry.configure_mlflow(f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "art").as_uri(), "t")
    try:
        train = _ranking(1000, 0)
        train.label[500] = float("inf")
        with pytest.raises(loop.TrainingDiverged):
            with registry.training_run("nightrec-ranking", tags={}, log_system_metrics=False):
                result = loop.train_ranking(train, _ranking(100, 1), FM, FAST)
                registry.log_training_run(
                    result,
                    model_name="nightrec-ranking",
                    params={},
                    dataset_sources={},
                    fingerprints={},
                    tags={},
                    input_example=train.x[:2].numpy(),
                    log_system_metrics=False,
                )
        assert MlflowClient().search_registered_models() == []
        assert registry.get_alias_version("nightrec-ranking", CHALLENGER) is None
        runs = mlflow.search_runs([exp], output_format="list")
        assert [r.info.status for r in runs] == ["FAILED"]
        assert "diverged" in runs[0].data.tags["nightrec.error"]
    finally:
        mlflow.set_tracking_uri(previous)


# --- logistic regression baseline --------------------------------------------------------------------------


def test_logistic_baseline_learns_main_effects():
    """Labels driven by the item alone: one-hot logistic regression should rank them well."""
    g = np.random.default_rng(0)

    def examples(n: int) -> RankingTensors:
        x = np.stack([g.integers(0, d, n) for d in FM.field_dims], axis=1)
        y = (x[:, 2] % 2 == 0) ^ (g.random(n) < 0.1)
        return RankingTensors(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.float32)))

    r = loop.train_logistic_baseline(examples(4000), examples(1000), FM.field_dims, FAST)
    assert 0.8 < r.metrics["auc"] <= 1.0
    assert r.metrics["logloss"] < math.log(2)


def test_deepfm_beats_the_logistic_baseline_on_an_interaction():
    """Engagement iff category == segment: no single field predicts it, so LR stays near chance."""
    train, valid = _ranking(6000, 0), _ranking(1000, 1)
    lr_auc = loop.train_logistic_baseline(train, valid, FM.field_dims, FAST).metrics["auc"]
    fm_auc = loop.train_ranking(train, valid, FM, FAST).metrics["auc"]
    assert 0.4 < lr_auc < 0.75
    assert fm_auc > lr_auc + 0.15


def _next_of_latest(n: int, seed: int, hist_len: int = 5) -> RetrievalTensors:
    """The engaged item shares the category of the user's most recent item; older items are of any category,
    and the users are random (no user id or segment tells the category). Only the order says it."""
    g = np.random.default_rng(seed)
    hist = g.integers(1, N_ITEMS, (n, hist_len))
    pool = {c: np.flatnonzero(_item_cat(np.arange(N_ITEMS)) == c) for c in (1, 2, 3)}
    items = np.array([pool[c][g.integers(0, 20)] for c in _item_cat(hist[:, 0])])
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    users = g.integers(1, N_USERS, n)
    return RetrievalTensors(t(users), t(np.ones(n)), t(hist), t(items), t(_item_cat(items)), torch.ones(n))


def _latest_category_hit_rate(model, ex: RetrievalTensors) -> float:
    items = torch.arange(1, N_ITEMS)
    with torch.no_grad():
        u = model.user_vectors(ex.user_idx, ex.segment_idx, ex.history)
        top = (u @ model.item_vectors(items, torch.from_numpy(_item_cat(items.numpy()))).T).topk(10).indices
    want = torch.from_numpy(_item_cat(ex.history[:, 0].numpy()))
    return float((torch.from_numpy(_item_cat(top.numpy() + 1)) == want[:, None]).float().mean())


def test_the_attention_encoder_with_a_full_softmax_learns_what_the_order_of_the_history_says():
    s = FAST.model_copy(update={"retrieval_epochs": 8, "retrieval_batch_size": 128, "patience": 8})
    train, valid, fresh = _next_of_latest(4000, 0), _next_of_latest(500, 1), _next_of_latest(300, 2)
    rates = {}
    for encoder in ("mean", "attention"):
        cfg = dataclasses.replace(TT, user_encoder=encoder, loss="full", dropout=0.1)
        rates[encoder] = _latest_category_hit_rate(loop.train_retrieval(train, valid, cfg, s).model, fresh)
    # A third of the top 10 is the right category by chance; the mean of five items cannot tell the latest.
    assert rates["attention"] > 0.8, rates
    assert rates["attention"] > rates["mean"] + 0.2, rates


def _trending(n_days: int = 10, hot: int = 6) -> ItemState:
    """Each day its own ``hot`` items (popularity bucket 10, the rest 0); every item known since day -100."""
    buckets = torch.zeros(n_days, N_ITEMS, dtype=torch.long)
    for d in range(n_days):
        buckets[d, 1 + (torch.arange(hot) + d * hot) % (N_ITEMS - 1)] = 10
    return ItemState(DailyPopularity(0, buckets), torch.full((N_ITEMS,), -100, dtype=torch.long))


def _engaging_what_is_hot(state: ItemState, n: int, seed: int) -> RetrievalTensors:
    g = torch.Generator().manual_seed(seed)
    days = torch.randint(0, state.popularity.buckets.shape[0], (n,), generator=g)
    hot = [
        torch.nonzero(state.popularity.buckets[d] > 0)[:, 0] for d in range(state.popularity.buckets.shape[0])
    ]
    items = torch.stack([hot[d][torch.randint(0, len(hot[d]), (1,), generator=g)][0] for d in days.tolist()])
    users = torch.randint(1, N_USERS, (n,), generator=g)
    hist = torch.randint(1, N_ITEMS, (n, 5), generator=g)
    cats = torch.from_numpy(_item_cat(items.numpy()))
    return RetrievalTensors(users, torch.ones(n, dtype=torch.long), hist, items, cats, torch.ones(n), days)


def test_item_state_lets_the_item_tower_learn_what_is_popular_on_the_day_it_scores_as_of():
    state = _trending()
    s = FAST.model_copy(update={"retrieval_epochs": 6, "retrieval_batch_size": 128, "patience": 6})
    cfg = dataclasses.replace(TT, item_state=True)
    train, valid = _engaging_what_is_hot(state, 4000, 0), _engaging_what_is_hot(state, 300, 1)
    with pytest.raises(ValueError, match="item_state needs"):
        loop.train_retrieval(train, valid, cfg, s)
    model = loop.train_retrieval(
        train, valid, cfg, s, item_state=state, state_days=(date(1970, 1, 3), date(1970, 1, 8))
    ).model
    fresh, items = _engaging_what_is_hot(state, 200, 2), torch.arange(1, N_ITEMS)
    cats = torch.from_numpy(_item_cat(items.numpy()))

    def hot_share(day: int) -> float:
        with torch.no_grad():
            u = model.user_vectors(fresh.user_idx, fresh.segment_idx, fresh.history)
            top = (u @ model.item_vectors(items, cats).T).topk(6).indices + 1
        return float((state.popularity.buckets[day][top] > 0).float().mean())

    # The returned model scores as of its serving day (day 7 since 1970-01-01): that day's hot items lead.
    assert hot_share(7) > 0.8
    model.set_item_state(*state.as_of(date(1970, 1, 5)))  # re-dated: another day's hot items lead
    assert hot_share(4) > 0.8 and hot_share(7) < 0.3


def test_the_precomputed_keys_are_the_buckets_of_each_day_and_item():
    g = torch.Generator().manual_seed(0)
    state = ItemState(
        DailyPopularity(100, torch.randint(0, 32, (20, N_ITEMS), generator=g)),
        torch.randint(60, 130, (N_ITEMS,), generator=g),
    )
    day, item = torch.randint(100, 120, (50,), generator=g), torch.randint(0, N_ITEMS, (50,), generator=g)
    pop, age = state.at(day, item)
    assert torch.equal(state.keys_at(day, item), pop * AGE_BUCKETS + age)
    assert (age == 0).any() and (age > 0).any(), "both unknown and known ages are exercised"
