"""Data-parallel training: two gloo processes on CPU against one process with the same global batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from nightrec.models.configs import DeepFMConfig, TwoTowerConfig
from nightrec.models.two_tower import in_batch_softmax_loss
from nightrec.settings import TrainSettings
from nightrec.training import checkpoint, datasets, loop, process_group, retrieval_loss
from nightrec.training.datasets import RankingTensors, RetrievalTensors
from nightrec.training.process_group import World

N_USERS, N_ITEMS = 60, 61  # items 1..60 in categories 1..3; index 0 is OOV


def _retrieval(n: int, seed: int) -> RetrievalTensors:
    """Each user engages with items of one category, (user % 3) + 1."""
    g = np.random.default_rng(seed)
    users = g.integers(1, N_USERS, n)
    items = 3 * g.integers(1, 20, (n, 6)) + (users % 3)[:, None]  # item % 3 == user % 3; ids 3..59
    hist = items[:, 1:]
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    return RetrievalTensors(
        t(users), t(np.ones(n)), t(hist), t(items[:, 0]), t(items[:, 0] % 3 + 1), torch.ones(n)
    )


def _ranking(n: int, seed: int) -> RankingTensors:
    """Engaged iff the item's category matches the user's segment (5% label noise)."""
    g = np.random.default_rng(seed)
    users, items = g.integers(1, N_USERS, n), g.integers(1, N_ITEMS, n)
    seg, cat = users % 3 + 1, items % 3 + 1
    x = np.stack([users, seg, items, cat, *(g.integers(0, 4, n) for _ in range(4))], axis=1)
    y = (seg == cat) ^ (g.random(n) < 0.05)
    return RankingTensors(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.float32)))


# Sparse id tables on purpose: DDP all-reduces their sparse gradients (gloo) and SparseAdam steps on them.
# No dropout: each process draws its own masks, so with dropout the two runs differ by more than rounding.
TT = TwoTowerConfig(
    n_users=N_USERS, n_items=N_ITEMS, n_categories=4, n_segments=2, dim=16, history_len=5, sparse=True
)
FM = DeepFMConfig(
    field_dims=(N_USERS, 4, N_ITEMS, 4, 4, 4, 4, 4), embed_dim=8, hidden=(32,), dropout=0.0, sparse=True
)
# The global batch (256) divides by 2 and so do the example counts: the two processes' k-th batches together
# hold exactly the rows of the one process's k-th batch, and nothing is padded.
SETTINGS = TrainSettings(
    device="cpu",
    retrieval_epochs=3,
    retrieval_batch_size=256,
    retrieval_lr=0.01,
    ranking_epochs=3,
    ranking_batch_size=256,
    ranking_lr=0.01,
    patience=3,
)
DATA = {
    "retrieval": (_retrieval(2048, 0), _retrieval(400, 1)),
    "ranking": (_ranking(2048, 0), _ranking(400, 1)),
}


def _train(world: World, out: Path, models=("ranking", "retrieval"), shared: bool = False) -> dict:
    """Train ``models`` in ``world``; checkpoints go to one path per rank (to see who writes) or, ``shared``,
    to one path for all ranks (as the stages do)."""
    ckpt = {m: out / (f"{m}.pt" if shared else f"{m}-rank{world.rank}.pt") for m in models}
    train = {
        "ranking": lambda: loop.train_ranking(
            *DATA["ranking"], FM, SETTINGS, checkpoint_path=ckpt["ranking"], world=world
        ),
        "retrieval": lambda: loop.train_retrieval(
            *DATA["retrieval"], TT, SETTINGS, checkpoint_path=ckpt["retrieval"], world=world
        ),
    }
    results = {m: train[m]() for m in models}
    return {
        m: {"state": _weights(r.model), "stamps": r.model.stamps(), "history": r.history}
        for m, r in results.items()
    }


def _weights(model) -> dict[str, torch.Tensor]:
    """The tensors of the state_dict (its ``_extra_state`` holds the model's stamps, compared on their own)."""
    return {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def _worker(rank: int, size: int, out: str, models=("ranking", "retrieval"), shared: bool = False) -> None:
    world = process_group.join(World(rank, size, rank, size), "cpu", f"file://{out}/store")
    try:
        torch.save(_train(world, Path(out), models, shared), Path(out) / f"result-rank{rank}.pt")
    finally:
        process_group.leave(world)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    two = tmp_path_factory.mktemp("two-processes")
    mp.spawn(_worker, args=(2, str(two)), nprocs=2, join=True)
    one = _train(World(), tmp_path_factory.mktemp("one-process"))
    ranks = [torch.load(two / f"result-rank{r}.pt", weights_only=False) for r in (0, 1)]
    return {"ranks": ranks, "one": one, "dir": two}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ranking", "retrieval"])
def test_two_processes_end_with_identical_parameters(runs, model):
    a, b = (r[model]["state"] for r in runs["ranks"])
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert runs["ranks"][0][model]["stamps"] == runs["ranks"][1][model]["stamps"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ranking", "retrieval"])
def test_the_distributed_loss_falls_and_both_ranks_see_the_same_figures(runs, model):
    h0, h1 = (r[model]["history"] for r in runs["ranks"])
    assert h0[-1]["train_loss"] < 0.9 * h0[0]["train_loss"]
    drop = ("epoch_seconds", "samples_per_s")
    assert [{k: v for k, v in row.items() if k not in drop} for row in h0] == [
        {k: v for k, v in row.items() if k not in drop} for row in h1
    ]  # all-reduced train loss and validation figures: the same early-stopping decision on every rank


@pytest.mark.slow
def test_only_rank_0_writes_the_checkpoint(runs):
    written = sorted(p.name for p in runs["dir"].glob("*-rank*.pt") if not p.name.startswith("result"))
    assert written == ["ranking-rank0.pt", "retrieval-rank0.pt"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ranking", "retrieval"])
def test_two_processes_match_one_process_with_the_same_global_batch(runs, model):
    """Same initial weights, the same rows in every global batch, the in-batch negatives gathered from both
    processes, gradients averaged over the halves (= the full-batch mean): the runs differ only by float
    summation order (the halves, and 1 thread per process against 2). Measured: at most 2.2e-6 on any weight
    and 2.4e-7 on any loss after 3 epochs (24 steps). Adam divides by the root of the second moment and can
    grow a rounding difference on a near-zero gradient, so the bounds leave a 50x margin: 1e-4 on weights,
    1e-5 on the figures (AUC and recall are ranks, equal here)."""
    two, one = runs["ranks"][0][model], runs["one"][model]
    for name, w in one["state"].items():
        torch.testing.assert_close(two["state"][name], w, atol=1e-4, rtol=0, msg=name)
    for row2, row1 in zip(two["history"], one["history"], strict=True):
        for key in ("train_loss", "valid_loss", "logloss", "auc", "recall_at_50"):
            if key in row1:
                assert row2[key] == pytest.approx(row1[key], abs=1e-5), (row1["epoch"], key)


@pytest.mark.slow
def test_a_killed_distributed_training_resumes_on_every_rank_from_rank_0s_checkpoint(
    runs, tmp_path, monkeypatch
):
    monkeypatch.setenv(
        checkpoint.FAULT_ENV, "train.after_epoch:1:kill"
    )  # rank 0, once its checkpoint is down
    with pytest.raises(mp.ProcessExitedException):
        mp.spawn(_worker, args=(2, str(tmp_path), ("ranking",), True), nprocs=2, join=True)
    assert checkpoint.load(tmp_path / "ranking.pt")["fit"]["epoch"] == 1
    monkeypatch.delenv(checkpoint.FAULT_ENV)
    (tmp_path / "store").unlink(missing_ok=True)  # the killed run's rendezvous file
    mp.spawn(_worker, args=(2, str(tmp_path), ("ranking",), True), nprocs=2, join=True)
    resumed = [torch.load(tmp_path / f"result-rank{r}.pt", weights_only=False)["ranking"] for r in (0, 1)]
    clean = runs["ranks"][0]["ranking"]
    for r in resumed:
        assert [row["epoch"] for row in r["history"]] == [1, 2, 3]
        for name, w in clean["state"].items():
            torch.testing.assert_close(r["state"][name], w, atol=0, rtol=0, msg=name)


# --- the pieces, in one process -----------------------------------------------------------------------------


def test_shards_of_each_batch_together_hold_the_one_process_batch():
    one = list(datasets.iter_batches(10, 4, torch.Generator().manual_seed(3)))
    shards = [list(datasets.shard_batches(10, 4, torch.Generator().manual_seed(3), r, 2)) for r in (0, 1)]
    assert [len(b) for b in shards[0]] == [len(b) for b in shards[1]] == [2, 2, 1]
    for k, batch in enumerate(one[:2]):
        assert sorted(torch.cat([shards[0][k], shards[1][k]]).tolist()) == sorted(batch.tolist())


def test_odd_counts_pad_with_the_head_of_the_permutation_so_shards_stay_equal():
    shards = [list(datasets.shard_batches(7, 6, torch.Generator().manual_seed(0), r, 3)) for r in range(3)]
    assert [[len(b) for b in s] for s in shards] == [[2, 1]] * 3
    rows = torch.cat([torch.cat(s) for s in shards]).tolist()
    assert sorted(set(rows)) == list(range(7)) and len(rows) == 9


def test_rows_of_the_in_batch_loss_add_up_to_the_one_process_loss():
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=1)
    table = torch.nn.functional.normalize(torch.randn(12, 4, generator=g), dim=1)
    idx = torch.tensor([3, 5, 3, 7, 9, 5, 2, 3])
    v = table[idx]  # rows with the same item hold the same vector
    w = torch.rand(8, generator=g) + 0.5
    log_q = torch.log(torch.rand(12, generator=g) * 0.1 + 0.01)
    full = in_batch_softmax_loss(u, v, idx, 0.1, w, log_q)
    whole = retrieval_loss.rows_in_batch_softmax_loss(u, v, idx, 0, 0.1, w, w.sum(), log_q)
    torch.testing.assert_close(whole, full)
    halves = [
        retrieval_loss.rows_in_batch_softmax_loss(u[s], v, idx, s.start, 0.1, w[s], w.sum(), log_q, scale=2)
        for s in (slice(0, 4), slice(4, 8))
    ]
    torch.testing.assert_close((halves[0] + halves[1]) / 2, full)  # what DDP's gradient average optimises


def test_one_process_world_does_no_communication():
    world = World()
    t = torch.arange(3.0)
    assert world.mean(t) is t and world.gather_rows(t) is t and world.gather_with_grad(t) is t
    assert world.sum([1.0, 2.0]) == [1.0, 2.0] and world.broadcast("x") == "x"
    step = lambda idx: idx.sum()  # noqa: E731
    assert world.wrap(torch.nn.Linear(1, 1), step) is step
    assert process_group.join(world) is world
