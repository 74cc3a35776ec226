"""The one home of MLflow: configuration, runs, logging, the registry, aliases and loading models.

Nothing else in ``nightrec`` imports ``mlflow``: stages call these functions (``tests/unit/test_layers.py``).
One run per trained model; model versions with aliases (``challenger``, ``champion``) and tags; the policy
versions the gate registers.

Models are logged with ``serialization_format="pickle"`` so the loaded object is our ``nn.Module`` with its
``user_vectors``/``item_vectors`` methods (the default pt2 format returns a bare GraphModule). Pickle refers
to the classes by import path, so the loading process needs a compatible ``nightrec`` installed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
import pandas as pd
import torch
from filelock import FileLock
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import LoggedModelInput, Metric
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.telemetry import set_telemetry_client
from mlflow.types import Schema, TensorSpec
from torch import nn

from nightrec.host import process_alive
from nightrec.settings import Settings
from schemas.results import CHALLENGER

_CURVES = (("train_loss", "train loss"), ("valid_loss", "valid loss"), ("logloss", "valid logloss"))
_QUALITY = ("recall_at_50", "auc")
# Result metrics that describe the run, not an epoch: logged under their own names. ``lr_auc`` is the logistic
# regression baseline's AUC, kept beside DeepFM's ``auc``.
_RUN_LEVEL = ("best_epoch", "epochs_run", "lr_auc")


class TrainResult(Protocol):
    """What a training loop returns (``nightrec.training.epochs.TrainResult``), as logged here."""

    model: nn.Module
    history: list[dict]
    best_epoch: int
    metrics: dict


@dataclass(frozen=True)
class ModelRef:
    """A registered model version and the run that produced it."""

    name: str
    version: str
    run_id: str
    serving_version: str | None = (
        None  # its serving twin (retrieval refit on every window), where one was made
    )


def configure_mlflow(tracking_uri: str, artifact_root: str | None, experiment: str) -> str:
    """Point MLflow at a tracking store and an experiment whose artifacts live under ``artifact_root``.

    Without an explicit artifact location a sqlite store puts artifacts in ``./mlruns`` of whatever the
    current directory is, so the experiment is created with one.

    Returns:
        The experiment id.
    """
    # mlflow starts its telemetry client at import; with the variable set, re-initialising drops it.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    set_telemetry_client()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with _sqlite_first_use_lock(tracking_uri):
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None and artifact_root is not None:
            _refuse_a_moved_home(tracking_uri, found.artifact_location, artifact_root, experiment)
        exp_id = (
            found.experiment_id
            if found
            else mlflow.create_experiment(experiment, artifact_location=artifact_root)
        )
    mlflow.set_experiment(experiment_id=exp_id)
    _experiment["id"] = exp_id
    _describe_experiment(exp_id)
    return exp_id


_experiment: dict[str, str] = {}  # the id configure_mlflow set active (the parent runs are created in it)


EXPERIMENT_NOTE = (
    "Nightly recommendation training (nightrec). One parent run per run date (`night-<date>`) holds that "
    "night's runs: the data gates, the two-tower and DeepFM trainings, and the evaluation that decides which "
    "policy goes live. Compare nights in the runs table; the registered models carry their date, held-out "
    "metric and decision."
)


def _describe_experiment(exp_id: str) -> None:
    """Tag the experiment as model training (MLflow 3 would otherwise offer its GenAI views) and describe it."""
    client = MlflowClient()
    have = client.get_experiment(exp_id).tags
    wanted = {"mlflow.experimentKind": "custom_model_development", "mlflow.note.content": EXPERIMENT_NOTE}
    for key, value in wanted.items():
        if key not in have:
            client.set_experiment_tag(exp_id, key, value)


def connect(settings: Settings) -> str:
    """:func:`configure_mlflow` with the store, artifact root and experiment of ``settings``; the experiment id."""
    return configure_mlflow(
        settings.mlflow_tracking_uri, settings.mlflow_artifact_root, settings.mlflow_experiment
    )


def _local(uri: str) -> Path | None:
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path)).resolve()
    return Path(uri).resolve() if "://" not in uri else None


def _refuse_a_moved_home(tracking_uri: str, stored: str, configured: str, experiment: str) -> None:
    """A SQLite store copied with its home (``cp -a``) still names the old home's artifact folder: every run
    of the copy would write its models there, and read them from there. Refuse, saying which folders."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    home = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve().parent
    old, new = _local(stored), _local(configured)
    if old is None or new is None or old == new:
        return
    if new.is_relative_to(home) and not old.is_relative_to(home):
        raise RuntimeError(
            f"the MLflow store {tracking_uri} keeps experiment {experiment!r}'s artifacts in {old}, outside its "
            f"home {home} (was the home copied or moved?). Runs here would write their models into {old}. "
            f"Use the original home, set NIGHTREC_MLFLOW_ARTIFACT_ROOT={stored} to share its artifacts on "
            "purpose, or start this home with a fresh MLflow store (move mlflow.db and mlartifacts/ aside)"
        )


@contextmanager
def _sqlite_first_use_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store across processes (RELIABILITY.md scenario 17).

    MLflow creates and migrates a fresh SQLite database without any lock between processes: two nights starting
    together on a new home fail with ``duplicate column name`` or ``table ... already exists``, and both may
    try to create the experiment. The store is built (tables, migrations) on the first call under this lock.
    """
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db.parent / f".{db.name}.init.lock"), timeout=600):
        yield


# The packages whose source makes a night: a change in any of them is a new code version.
_SOURCE_PACKAGES = ("nightrec", "schemas", "flows", "tasks")


def code_version() -> str:
    """A content hash of the source this process runs: ``src-`` + 12 hex digits.

    It keys the checkpoints and the training reuse: an image or an installed copy has no ``.git``, so a git
    commit would read the same forever there (a changed model skipped as already trained), and in a checkout
    it would miss uncommitted edits and move on commits that change no code. Computed once per process.
    """
    return _source_hash()


def code_label() -> str:
    """:func:`code_version`, plus ``@<commit>`` when the source is a git checkout: for people (the manifest,
    the MLflow runs), never for keys."""
    commit = _commit()
    return f"{code_version()}@{commit[:12]}" if commit else code_version()


@functools.cache
def _commit() -> str | None:
    """The checkout's commit, read once per process like :func:`code_version` (every run is tagged with it)."""
    return _git_commit(Path(__file__).resolve().parents[1])


@functools.cache
def _source_hash() -> str:
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for package in _SOURCE_PACKAGES:
        folder = root / package
        for path in sorted(folder.rglob("*.py")) if folder.is_dir() else ():
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return f"src-{h.hexdigest()[:12]}"


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


NIGHT_KIND = "night"


def night_run(ds: str) -> str:
    """The parent run of run date ``ds`` (``night-<ds>``, tags ``nightrec.kind=night``, ``nightrec.ds``):
    every run of that date nests under it, whichever process or deployment logs it. Created on first use.
    """
    client = MlflowClient()
    where = f"tags.`nightrec.kind` = '{NIGHT_KIND}' and tags.`nightrec.ds` = '{ds}'"
    found = mlflow.search_runs(
        filter_string=where, order_by=["attributes.start_time ASC"], max_results=1, output_format="list"
    )
    if found:
        return found[0].info.run_id
    tags = {
        "nightrec.kind": NIGHT_KIND,
        "nightrec.ds": ds,
        "mlflow.note.content": f"Every run of the night of {ds}: gates, trainings, evaluation.",
        **_commit_tag(),
    }
    run = client.create_run(_experiment["id"], run_name=f"night-{ds}", tags=tags)
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


def _commit_tag() -> dict[str, str]:
    commit = _commit()
    return {"mlflow.source.git.commit": commit} if commit else {}


def _night_tags(ds: str | None) -> dict[str, str]:
    """Tags that put a run under its night and name the code it ran."""
    return ({"mlflow.parentRunId": night_run(ds), "nightrec.ds": ds} if ds else {}) | _commit_tag()


def _run_name(base: str, ds: str | None) -> str:
    """``<base>-<ds>``; a re-run of the same date gets ``#2``, ``#3``... so the runs table tells them apart."""
    if not ds:
        return base
    name = f"{base}-{ds}"
    earlier = mlflow.search_runs(
        filter_string=f"attributes.run_name LIKE '{name}%'", output_format="list", max_results=1000
    )
    return name if not earlier else f"{name} #{len(earlier) + 1}"


@contextmanager
def training_run(
    model_name: str, *, tags: dict, ds: str | None = None, log_system_metrics: bool = True
) -> Iterator[str]:
    """Open (or join) the MLflow run of one model's training; yields its run id.

    Wrap the training itself in it so that a failure (e.g. ``TrainingDiverged``) ends the run FAILED with the
    error as a tag, instead of leaving no trace or a run stuck RUNNING. Inside, :func:`log_training_run` logs
    into this run.
    """
    active = mlflow.active_run()
    if active is not None:
        yield active.info.run_id
        return
    ds = ds or tags.get("nightrec.ds")
    all_tags = {
        "nightrec.model": model_name,
        "nightrec.code_version": code_label(),
        **_night_tags(ds),
        **tags,
    }
    with mlflow.start_run(
        run_name=_run_name(model_name, ds), tags=_str(all_tags), log_system_metrics=log_system_metrics
    ) as run:
        try:
            yield run.info.run_id
        except BaseException as err:
            mlflow.set_tag("nightrec.error", f"{type(err).__name__}: {err}"[:5000])
            raise  # mlflow.start_run's context manager ends the run FAILED (KILLED on Ctrl-C)


def process_tags() -> dict[str, str]:
    """Tags naming the process that owns a run, so a later run can tell a dead owner from a live one."""
    return {"nightrec.pid": str(os.getpid()), "nightrec.host": socket.gethostname()}


def end_orphan_runs(stage: str, ds: str, resumed_by: str) -> list[str]:
    """End the ``stage`` runs of run date ``ds`` that a killed process left RUNNING, as KILLED.

    Only a run whose owner (its :func:`process_tags`) is a process of this host that is gone: in the modular
    shape an event trigger may run a stage twice at once, and the other run is alive.
    """
    runs = mlflow.search_runs(
        filter_string=f"tags.`nightrec.stage` = '{stage}' and tags.`nightrec.ds` = '{ds}' "
        "and attributes.status = 'RUNNING'",
        output_format="list",
    )
    ended = []
    for run in runs:
        tags = run.data.tags
        mine = tags.get("nightrec.host") == socket.gethostname() and tags.get("nightrec.pid", "").isdigit()
        if run.info.run_id != resumed_by and mine and not process_alive(int(tags["nightrec.pid"])):
            client = MlflowClient()
            client.set_tag(
                run.info.run_id, "nightrec.error", f"process killed; the night re-ran it as {resumed_by}"
            )
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
    return ended


def end_orphan_run(run_id: str, resumed_by: str) -> bool:
    """End a run left RUNNING by a killed process as KILLED, naming the run that resumed its training.

    Returns:
        True when the run was still RUNNING (and is now KILLED).
    """
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return False  # another store, or deleted: nothing to end
    if run.info.status != "RUNNING":
        return False
    client.set_tag(
        run_id, "nightrec.error", f"process killed; training resumed from its checkpoint by run {resumed_by}"
    )
    client.set_terminated(run_id, status="KILLED")
    return True


def log_training_run(
    result: TrainResult,
    *,
    model_name: str,
    params: dict,
    dataset_sources: dict[str, str],
    fingerprints: dict,
    tags: dict,
    input_example: np.ndarray,
    input_columns: list[str] | None = None,
    log_system_metrics: bool = True,
) -> ModelRef:
    """Log a trained model's run and register it; the new version gets the ``challenger`` alias.

    Logs into the active run when called inside :func:`training_run`, else starts its own.

    Args:
        result: What ``train_retrieval``/``train_ranking`` returned.
        model_name: Registered model name (``nightrec-retrieval`` or ``nightrec-ranking``).
        params: Hyperparameters (model config and train settings), logged as run params.
        dataset_sources: Dataset name (``train``, ``valid``) -> lake path, logged as run inputs.
        fingerprints: Input/parameter fingerprints, logged as ``fingerprint.<key>`` tags and dataset digests.
        tags: Extra run tags (flow run id, run date).
        input_example: A few rows of model input (int64), used for the signature and the example.
        input_columns: What each input column holds, for the signature (``user_idx``, ``history_0``...).
        log_system_metrics: Sample CPU/memory while the run is open (needs psutil).

    Returns:
        The registered version and run id.
    """
    run_tags = {**tags, **{f"fingerprint.{k}": v for k, v in fingerprints.items()}}
    with training_run(model_name, tags=run_tags, log_system_metrics=log_system_metrics) as run_id:
        mlflow.set_tags(_str(run_tags))
        mlflow.log_params(_str(params))
        _log_history(run_id, result)
        _mark_best_epoch(result)
        _log_inputs(dataset_sources, fingerprints, input_example)
        mlflow.log_figure(
            learning_curve(result.history, model_name, best_epoch=result.best_epoch), "learning_curve.png"
        )
        example = np.ascontiguousarray(input_example, dtype=np.int64)
        version = _log_model(result.model, model_name, example, columns=input_columns)
    _describe_trained_version(model_name, str(version), result, run_tags.get("nightrec.ds"), run_id)
    set_alias(model_name, CHALLENGER, version)
    return ModelRef(name=model_name, version=str(version), run_id=run_id)


def _quality(history: list[dict]) -> str | None:
    return next((k for k in _QUALITY if any(k in row for row in history)), None)


def _mark_best_epoch(result: TrainResult) -> None:
    """The best epoch on the curves: ``best_<metric>`` logged once, at that epoch's step (a dot on the
    metric's chart), beside ``best_epoch``."""
    quality = _quality(result.history)
    row = next((r for r in result.history if r["epoch"] == result.best_epoch), None)
    if quality and row and quality in row and np.isfinite(row[quality]):
        mlflow.log_metric(f"best_{quality}", float(row[quality]), step=int(result.best_epoch))


def _describe_trained_version(
    name: str, version: str, result: TrainResult, ds: str | None, run_id: str
) -> None:
    """Date, best epoch and validation figure on the version itself (the registry page shows them)."""
    quality = _quality(result.history)
    figure = result.metrics.get(quality) if quality else None
    tags = {"nightrec.ds": ds or "", "best_epoch": str(result.best_epoch)}
    if figure is not None:
        tags[f"valid_{quality}"] = f"{figure:.4f}"
    text = f"Trained for run date {ds} by run {run_id}: best epoch {result.best_epoch}"
    text += f" of {result.metrics.get('epochs_run', len(result.history))}"
    text += f", validation {quality} {figure:.4f}." if figure is not None else "."
    annotate_version(name, version, tags, text)


def annotate_version(name: str, version: str | int, tags: dict[str, str], note: str) -> None:
    """Set ``tags`` on a model version and add ``note`` as a paragraph of its description."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))
    before = client.get_model_version(name, str(version)).description or ""
    if note not in before:
        client.update_model_version(name, str(version), description=f"{before}\n\n{note}".strip())


def log_model_inputs(versions: list[tuple[str, str]]) -> None:
    """Link the active run to the registered model versions it judged (its page lists them)."""
    client = MlflowClient()
    for name, version in versions:
        mv = client.get_model_version(name, str(version))
        model_id = mv.model_id or _model_id_of_source(mv.source)
        if model_id:
            mlflow.log_input(model=LoggedModelInput(model_id))


def _model_id_of_source(source: str) -> str | None:
    # A version's source is ``models:/m-<id>`` for a logged model (the OSS registry leaves model_id empty).
    return source.removeprefix("models:/").split("/")[0] if source.startswith("models:/m-") else None


def log_dataset(
    name: str, source: str, sample: pd.DataFrame, context: str, digest: str | None = None
) -> None:
    """A dataset input of the active run: where it lives (``source``), a sample for its schema, its digest."""
    with _known_mlflow_warnings_silenced():
        mlflow.log_input(
            mlflow.data.from_pandas(sample, source=source, name=name, digest=digest), context=context
        )


SERVING_VERSION_TAG, SERVES_FOR_TAG = "nightrec.serving_version", "nightrec.serves_for"


def log_serving_twin(
    model: nn.Module,
    model_name: str,
    evaluated_version: str,
    example: np.ndarray,
    columns: list[str] | None = None,
) -> str:
    """Register ``model``, the serving twin of ``model_name`` version ``evaluated_version``, from the active run.

    The twin gets no alias: the evaluated version names it (tag ``nightrec.serving_version``) and the twin
    names the version whose figures it serves under (``nightrec.serves_for``), so the promotion gate
    measures one and precompute loads the other.
    """
    example = np.ascontiguousarray(example, dtype=np.int64)
    version = str(_log_model(model, model_name, example, name="serving_model", columns=columns))
    client = MlflowClient()
    client.set_model_version_tag(model_name, version, SERVES_FOR_TAG, str(evaluated_version))
    client.set_model_version_tag(model_name, str(evaluated_version), SERVING_VERSION_TAG, version)
    annotate_version(
        model_name,
        version,
        {},
        f"Serving twin of version {evaluated_version}: the same recipe refit on every window up to the run "
        "date; precompute serves it under that version's held-out figures.",
    )
    return version


def serving_version(model_name: str, version: str) -> str | None:
    """The serving twin registered for ``model_name`` version ``version``; None when it has none."""
    return MlflowClient().get_model_version(model_name, str(version)).tags.get(SERVING_VERSION_TAG)


def _str(d: dict) -> dict[str, str]:
    return {str(k): str(v) for k, v in d.items()}


def log_epoch(epoch: int, metrics: dict) -> None:
    """An ``on_epoch`` callback for the training loops: live per-epoch metrics in the active run.

    :func:`log_training_run` then skips the keys already logged.
    """
    finite = {k: float(v) for k, v in metrics.items() if k != "epoch" and np.isfinite(v)}
    mlflow.log_metrics(finite, step=epoch)


def _log_history(run_id: str, result: TrainResult) -> None:
    """Per-epoch metrics with ``step=epoch`` in batches (one call per metric costs ~16 ms on sqlite)."""
    already = set(MlflowClient().get_run(run_id).data.metrics)  # logged live by log_epoch
    now = int(pd.Timestamp.now().timestamp() * 1000)
    batch = [
        Metric(key=k, value=float(v), timestamp=now, step=int(row["epoch"]))
        for row in result.history
        for k, v in row.items()
        if k != "epoch" and k not in already and np.isfinite(v)
    ]
    for i in range(0, len(batch), 1000):  # MLflow's log_batch limit
        MlflowClient().log_batch(run_id, metrics=batch[i : i + 1000])
    # The best epoch's figures under best_* keys: reusing the per-epoch keys would splice a step-0 point into
    # each learning curve and make "latest value" ambiguous in the runs table.
    final = {k if k in _RUN_LEVEL else f"best_{k}": float(v) for k, v in result.metrics.items()}
    mlflow.log_metrics({k: v for k, v in final.items() if np.isfinite(v)})


@contextmanager
def _known_mlflow_warnings_silenced() -> Iterator[None]:
    with warnings.catch_warnings():
        # Ids are never missing, so the "integer columns cannot represent missing values" hint does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        # A local path matches two equivalent dataset source types; MLflow picks one and warns.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        yield


def _log_inputs(sources: dict[str, str], fingerprints: dict, input_example: np.ndarray) -> None:
    sample = pd.DataFrame(np.asarray(input_example, dtype=np.int64)).add_prefix("x")
    for name, source in sources.items():
        digest = str(fingerprints[name])[:36] if name in fingerprints else None
        with _known_mlflow_warnings_silenced():  # the dataset's schema is inferred lazily, in log_input
            ds = mlflow.data.from_pandas(sample, source=source, name=name, digest=digest)
            mlflow.log_input(ds, context="training" if name == "train" else name)


def _signature(example: np.ndarray, output: np.ndarray, columns: list[str] | None) -> ModelSignature:
    """One int64 input tensor named after its columns (``user_idx, segment_idx, history_0..history_49``) and
    one float output. One tensor, not a column per field: MLflow's PyTorch pyfunc casts a DataFrame to
    float32, which an embedding lookup refuses."""
    if not columns:
        return infer_signature(example, output)
    out_name = "user_vector" if output.ndim == 2 else "score"
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("int64"), (-1, example.shape[1]), _columns_text(columns))]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, *output.shape[1:]), out_name)]),
    )


def _columns_text(columns: list[str]) -> str:
    """Runs of ``prefix_<n>`` written as ``prefix_0..prefix_k``."""
    out: list[str] = []
    i = 0
    while i < len(columns):
        head, _, tail = columns[i].rpartition("_")
        j = i
        while tail.isdigit() and j + 1 < len(columns) and columns[j + 1] == f"{head}_{int(tail) + j + 1 - i}":
            j += 1
        out.append(columns[i] if j == i else f"{columns[i]}..{columns[j]}")
        i = j + 1
    return ", ".join(out)


def _log_model(
    model: nn.Module,
    model_name: str,
    example: np.ndarray,
    name: str = "model",
    columns: list[str] | None = None,
) -> int:
    model = model.to("cpu").eval()
    with torch.no_grad():
        output = model(torch.from_numpy(example)).float().numpy()
    with _known_mlflow_warnings_silenced():
        signature = _signature(example, output, columns)
        info = mlflow.pytorch.log_model(
            model,
            name=name,
            serialization_format="pickle",
            signature=signature,
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            registered_model_name=model_name,
        )
    return int(info.registered_model_version)


def learning_curve(history: list[dict], title: str, best_epoch: int | None = None) -> Figure:
    """Losses per epoch (left axis) and the ranking-quality metric (right axis) as a matplotlib figure."""
    # Figure() without pyplot: no global backend or figure registry, renders headless.
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    epochs = [row["epoch"] for row in history]
    for key, label in _CURVES:
        if any(key in row for row in history):
            ax.plot(epochs, [row.get(key, np.nan) for row in history], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    quality = _quality(history)
    if quality:
        ax2 = ax.twinx()
        ax2.plot(epochs, [row.get(quality, np.nan) for row in history], color="black", ls="--", label=quality)
        ax2.set_ylabel(quality)
        ax2.legend(loc="lower right")
    if best_epoch:
        ax.axvline(best_epoch, color="tab:green", ls=":", label=f"best epoch ({best_epoch})")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def _alias_version(name: str, alias: str):
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(err).lower():
            return None
        raise


def get_alias_version(name: str, alias: str) -> str | None:
    """The version the alias points at, or None when the model or the alias does not exist."""
    mv = _alias_version(name, alias)
    return str(mv.version) if mv is not None else None


def set_alias(name: str, alias: str, version: str | int) -> None:
    """Point ``name@alias`` at ``version`` (the rollback handle: setting it back is a rollback)."""
    MlflowClient().set_registered_model_alias(name, alias, str(version))


def load_model(name: str, alias: str) -> tuple[nn.Module, str, str] | None:
    """Load ``models:/name@alias`` on CPU in eval mode.

    Returns:
        ``(model, version, run_id)``, or None when the model or the alias does not exist.
    """
    mv = _alias_version(name, alias)
    if mv is None:
        return None
    return load_version(name, mv.version).eval(), str(mv.version), mv.run_id


def load_version(name: str, version: str | int) -> nn.Module:
    """Load ``models:/name/version`` on CPU (a pickled ``nn.Module``, see the module doc)."""
    return mlflow.pytorch.load_model(f"models:/{name}/{version}", map_location="cpu")


def run_of(name: str, version: str | int) -> str:
    """The run that registered ``name`` version ``version``."""
    return MlflowClient().get_model_version(name, str(version)).run_id


def version_tags(name: str, version: str | int) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(name, str(version)).tags)


def set_version_tag(name: str, version: str | int, key: str, value: str) -> None:
    MlflowClient().set_model_version_tag(name, str(version), key, value)


def versions(name: str) -> list[tuple[str, dict[str, str]]]:
    """Every version of registered model ``name`` with its tags; [] when the model does not exist."""
    try:
        found = MlflowClient().search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    return [(str(mv.version), dict(mv.tags)) for mv in found]


def latest_trained_before(name: str, ds: str) -> str | None:
    """The newest version of ``name`` evaluated for a run date before ``ds`` (ISO dates compare as text); a
    serving twin (tagged ``nightrec.serves_for``) never, nor a version without a run date."""
    found = [
        int(v)
        for v, tags in versions(name)
        if "" < tags.get("nightrec.ds", "") < ds and SERVES_FOR_TAG not in tags
    ]
    return str(max(found)) if found else None


def versions_of_run(name: str, run_id: str) -> list[tuple[str, dict[str, str]]]:
    """The versions of ``name`` that run ``run_id`` registered, with their tags."""
    found = MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return [(str(mv.version), dict(mv.tags)) for mv in found]


def register_document(
    name: str, run_id: str, document: dict, artifact_path: str, tags: dict[str, str], description: str
) -> str:
    """Register a JSON ``document`` (logged under ``artifact_path`` of run ``run_id``) as a new version of
    ``name`` (created with ``description`` on first use); returns the version."""
    client = MlflowClient()
    mlflow.log_dict(document, f"{artifact_path}/{artifact_path}.json", run_id=run_id)
    source = f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(name, source=source, run_id=run_id, tags=tags, description=description)
    return str(mv.version)


def finished_runs_tagged(tag: str, value: str) -> list[tuple[str, dict[str, float]]]:
    """``(run_id, metrics)`` of the FINISHED runs of the active experiment whose ``tag`` is ``value``, newest
    first."""
    runs = mlflow.search_runs(
        filter_string=f"tags.`{tag}` = '{value}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    return [(run.info.run_id, dict(run.data.metrics)) for run in runs]


def latest_run_tagged(tags: dict[str, str]) -> str | None:
    """The newest FINISHED run of the active experiment carrying every one of ``tags``, or None."""
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = mlflow.search_runs(
        filter_string=f"{where} and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def log_file(run_id: str, path: str, artifact_path: str | None = None) -> None:
    """Attach a file to a run, finished or not."""
    MlflowClient().log_artifact(run_id, path, artifact_path)


@contextmanager
def run(
    run_name: str, tags: dict[str, str] | None = None, *, ds: str | None = None, note: str | None = None
) -> Iterator[str]:
    """Open a run of the active experiment (ended FAILED if the block raises); yields its id. Inside,
    :func:`log` records into it. With ``ds`` it is named ``<run_name>-<ds>`` and nests under that night's
    parent run; ``note`` is its description (Markdown, shown on the run's page)."""
    all_tags = {**_night_tags(ds), **(tags or {})} | ({"mlflow.note.content": note} if note else {})
    with mlflow.start_run(run_name=_run_name(run_name, ds), tags=_str(all_tags)) as active:
        yield active.info.run_id


def log(
    *,
    params: dict | None = None,
    tags: dict | None = None,
    metrics: dict[str, float] | None = None,
    documents: dict[str, dict] | None = None,
    folders: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
    run_id: str | None = None,
) -> None:
    """Record into the active run, or into run ``run_id`` (metrics only: a finished run's figures)."""
    if run_id is not None:
        client = MlflowClient()
        for k, v in (metrics or {}).items():
            client.log_metric(run_id, k, v)
        return
    if params:
        mlflow.log_params(params)
    if tags:
        mlflow.set_tags(tags)
    if metrics:
        mlflow.log_metrics(metrics)
    for path, body in (documents or {}).items():
        mlflow.log_dict(body, path)
    for artifact_path, folder in (folders or {}).items():
        mlflow.log_artifacts(folder, artifact_path=artifact_path)
    for artifact_path, file in (files or {}).items():
        mlflow.log_artifact(file, artifact_path=artifact_path)


def evaluate_runs(tracking_uri: str, experiment: str, filter_string: str, n: int) -> list | None:
    """The newest ``n`` runs of ``experiment`` in the store at ``tracking_uri`` matching ``filter_string``
    (MLflow ``Run`` objects: ``.info``, ``.data.metrics|tags|params``); None when the experiment does not exist."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    return client.search_runs(
        [exp.experiment_id],
        filter_string=filter_string,
        order_by=["attributes.start_time DESC"],
        max_results=n,
    )
