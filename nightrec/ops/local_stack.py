"""A real Prefect stack on loopback: server, work pools, `prefect deploy --all`, the automations of prefect.yaml,
one process worker per pool.

It drives the `prefect` command line in subprocesses (this package never imports Prefect), so what runs is
exactly what an operator runs by hand. Used by `nightrec serve` and by the deployment integration tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


@dataclass
class LocalStack:
    api_url: str
    ui_url: str
    env: dict[str, str]
    logs: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def prefect(self, *args: str, timeout: float = 120) -> str:
        """Run a `prefect` CLI command against this stack; raise with its output if it fails."""
        proc = subprocess.run(
            [_prefect_bin(), "--no-prompt", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"prefect {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout

    def python(self, *args: str, timeout: float = 120) -> str:
        """Run this interpreter with ``args`` in the repo, against this stack; raise with its output if it fails."""
        proc = subprocess.run(
            [sys.executable, *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"python {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout

    def run_deployment(self, name: str, params: dict, *, timeout: float = 180, **others) -> str:
        """Create a run of deployment ``name`` as the UI's Run button does (the server validates ``params``
        and the flow's ``others`` parameters against the flow's schema) and return the run's id."""
        started = time.time()
        given = [
            a for k, v in {"params": params, **others}.items() for a in ("--param", f"{k}={json.dumps(v)}")
        ]
        try:
            out = self.prefect("deployment", "run", name, *given, timeout=timeout)
        except subprocess.TimeoutExpired:
            # On SQLite, workers' polls contend for the write lock (PrefectHQ/prefect#23051); on a loaded machine
            # the create call can outlast the CLI while the server still creates the run. Find it, or say why not.
            try:
                return self.find_manual_run(name.split("/")[-1], started, timeout_s=120)
            except TimeoutError as e:
                raise RuntimeError(
                    f"`prefect deployment run {name}` got no answer in {timeout:.0f}s and {e}; "
                    f"server log {self.logs / 'server.log'}:\n{self.log_tail('server.log')}"
                ) from None
        return re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)

    def find_manual_run(self, deployment: str, since: float, timeout_s: float) -> str:
        """The newest run of ``deployment`` created by hand (not by its schedule) after ``since``.

        Raises TimeoutError, with what the server last answered, if none appears within ``timeout_s``.
        """
        # A run made by hand is expected to start when it is made. The window matters: the scheduler keeps up
        # to 100 future cron runs, which would fill any page sorted by expected start before this one.
        window = {
            "after_": datetime.fromtimestamp(since - 60, UTC).isoformat(),
            "before_": datetime.fromtimestamp(since + timeout_s + 600, UTC).isoformat(),
        }
        body = json.dumps(
            {
                "deployments": {"name": {"any_": [deployment]}},
                "flow_runs": {"expected_start_time": window},
                "sort": "EXPECTED_START_TIME_DESC",
                "limit": 50,
            }
        ).encode()
        deadline = time.monotonic() + timeout_s
        last = "nothing (no request finished)"
        while time.monotonic() < deadline:
            request = urllib.request.Request(
                f"{self.api_url}/flow_runs/filter", body, {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as r:
                    runs = json.load(r)
            except urllib.error.HTTPError as e:
                runs, last = [], f"HTTP {e.code} {e.read()[:500]!r}"
            except OSError as e:  # refused, reset or timed out: the server may be busy, so ask again
                runs, last = [], f"{type(e).__name__}: {e}"
            else:
                last = f"{len(runs)} run(s) in the window: " + "; ".join(
                    f"{r['name']} auto_scheduled={r['auto_scheduled']} created={r['created']}"
                    for r in runs[:5]
                )
            for run in runs:
                if not run["auto_scheduled"] and _epoch(run["created"]) >= since - 1:
                    return run["id"]
            time.sleep(3)
        made_after = datetime.fromtimestamp(since, UTC).isoformat()
        raise TimeoutError(
            f"no run of deployment {deployment!r} made by hand after {made_after} appeared in {timeout_s:.0f}s; "
            f"the server last answered: {last}"
        )

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / name
        return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path} missing)"

    def start_worker(self, pool: str, name: str, *, env: dict[str, str] | None = None) -> None:
        """Start a process worker for ``pool`` (stopped with the stack); ``env`` adds to the stack's."""
        self.processes.append(
            _spawn(
                [_prefect_bin(), "worker", "start", "--pool", pool, "--type", "process", "--name", name],
                {**self.env, **(env or {})},
                self.logs / f"worker-{name}.log",
            )
        )

    def start_api(self, port: int) -> str:
        """Start `nightrec api` on 127.0.0.1:``port`` beside the server (stopped with the stack); its URL."""
        if not _port_free(port):
            raise RuntimeError(f"port {port} on 127.0.0.1 is already in use; pick --api-port")
        self.processes.append(
            _spawn(
                [sys.executable, "-m", "nightrec.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
                self.env,
                self.logs / "api.log",
            )
        )
        return f"http://127.0.0.1:{port}"

    def start_pages(self, port: int) -> str:
        """Start `nightrec pages` (Data Docs and night reports) on 127.0.0.1:``port``; its URL."""
        return self._start(
            "pages", port, [sys.executable, "-m", "nightrec.cli", "pages", "--port", str(port)], "/"
        )

    def start_mlflow_ui(self, port: int, tracking_uri: str, artifact_root: str) -> str:
        """Start the MLflow UI over the home's tracking store on 127.0.0.1:``port``; its URL."""
        cmd = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", tracking_uri, "--default-artifact-root", artifact_root, "--workers", "1",
        ]  # fmt: skip
        return self._start("mlflow-ui", port, cmd, "/health")

    def _start(self, name: str, port: int, cmd: list[str], health: str, timeout_s: float = 90) -> str:
        if not _port_free(port):
            raise RuntimeError(f"port {port} on 127.0.0.1 is already in use: {name} cannot start there")
        proc = _spawn(cmd, self.env, self.logs / f"{name}.log")
        self.processes.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start-up: {self.log_tail(f'{name}.log', 1500)}")
            try:
                with urllib.request.urlopen(url + health, timeout=2):
                    return url
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise RuntimeError(
            f"{name} did not answer on {url} within {timeout_s:.0f}s; see {self.logs / name}.log"
        )


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _prefect_bin() -> str:
    beside = Path(sys.executable).with_name("prefect")
    return str(beside) if beside.exists() else "prefect"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # Like the server itself: connections lingering in TIME_WAIT do not make the port busy, a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def work_pools(prefect_yaml: Path = REPO / "prefect.yaml") -> list[str]:
    """The work pools the deployments of prefect.yaml use, in first-use order."""
    spec = yaml.safe_load(prefect_yaml.read_text())
    pools: list[str] = []
    for d in spec["deployments"]:
        name = d["work_pool"]["name"]
        if name not in pools:
            pools.append(name)
    return pools


def _wait_healthy(api_url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"prefect server did not become healthy within {timeout_s}s; see {log}")


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    return subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


@contextmanager
def local_stack(
    home: Path,
    *,
    port: int | None = None,
    pools: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
    ui: bool = False,
    startup_timeout_s: float = 120,
) -> Iterator[LocalStack]:
    """Start server + pools + deployments + workers; stop everything on exit (also on errors).

    Args:
        home: NIGHTREC_HOME for the flows the workers run; Prefect's own home goes under it.
        port: API port (default: a free one).
        pools: Pools to start a worker for (default: every pool prefect.yaml uses; [] for none).
        extra_env: More environment for the deploy and the workers (settings such as NIGHTREC_TRAIN__...).
        ui: Serve the Prefect UI too.
    """
    home = Path(home).resolve()
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if port is not None and not _port_free(port):
        # Else the health check would pass against whatever already listens there.
        raise RuntimeError(
            f"port {port} on 127.0.0.1 is already in use (another Prefect server?); pick --port"
        )
    port = port or _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(home / "prefect-server"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        # Workers poll every 2 s so a chain of short stages does not wait 10 s between stages; not every
        # second, since each poll is a write on the server's SQLite and four pools contend for its lock.
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "prefect-server" / "results"),
        "NIGHTREC_HOME": str(home),
        "NIGHTREC_REPO": str(REPO),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **(extra_env or {}),
    }
    stack = LocalStack(api_url, f"http://127.0.0.1:{port}", env, logs)
    try:
        server_log = logs / "server.log"
        stack.processes.append(
            _spawn(
                [_prefect_bin(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env,
                server_log,
            )
        )
        _wait_healthy(api_url, stack.processes[0], server_log, startup_timeout_s)
        wanted = work_pools() if pools is None else pools
        for pool in work_pools():
            stack.prefect("work-pool", "create", pool, "--type", "process", "--overwrite")
        stack.prefect("deploy", "--all")
        # prefect.yaml's `automations:` (the zombie-run automation), applied as an operator would.
        stack.python("-m", "flows.automations", "--api-url", api_url)
        for pool in wanted:
            stack.start_worker(pool, f"{pool}-1")
        yield stack
    finally:
        # Workers first, while the server can still take their last events; then the server.
        _stop(stack.processes[1:])
        _stop(stack.processes[:1])


def _stop(processes: list[subprocess.Popen], grace_s: float = 20) -> None:
    for proc in processes:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
