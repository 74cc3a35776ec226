"""prefect.yaml is what operators deploy: every entrypoint must load, and the UI form must stay typed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import load_flow_from_entrypoint
from pydantic import ValidationError

from schemas.params import STAGES, NightlyParams

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def deployments() -> dict[str, dict]:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d for d in spec["deployments"]}


def test_nightly_deployment_is_scheduled_at_two_utc_one_at_a_time(deployments):
    nightly = deployments["nightly"]
    (schedule,) = nightly["schedules"]
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert (cron.cron, cron.timezone) == ("0 2 * * *", "UTC")
    assert nightly["concurrency_limit"] == 1
    assert nightly["work_pool"]["name"]


def test_every_entrypoint_loads_a_flow_with_a_typed_params_form(deployments, monkeypatch):
    monkeypatch.chdir(ROOT)
    for name, dep in deployments.items():
        flow = load_flow_from_entrypoint(dep["entrypoint"])
        schema = flow.parameters.model_dump()
        if name == "ab-report":  # not a night: its own form
            form = schema["definitions"]["AbReportParams"]["properties"]
            assert {"experiment", "events", "exposures", "horizon_hours"} == set(form)
            assert all(field.get("description") for field in form.values()), f"{name}: undocumented field"
            continue
        assert schema["properties"]["params"]["$ref"].endswith("/NightlyParams"), name
        form = schema["definitions"]["NightlyParams"]["properties"]
        assert {"run_date", "data", "force", "top_k", "stages"} <= set(form), name
        assert all(field.get("description") for field in form.values()), f"{name}: undocumented field"
        # The UI offers the stage names as choices, in DAG order.
        assert form["stages"]["items"]["enum"] == list(STAGES)
        # Optional knobs are offered as their value type (no "None" switch) and start empty.
        assert not [f for f, spec in form.items() if "anyOf" in spec or spec.get("default", 0) is None], name
        assert None not in schema["properties"]["params"]["default"].values(), name
        assert form["top_k"]["type"] == "integer" and form["top_k"]["maximum"] == 1000


def test_a_value_out_of_bounds_is_refused_with_its_bound_as_the_server_refuses_it(monkeypatch):
    from prefect.utilities.schema_tools.validation import ValidationError as SchemaError
    from prefect.utilities.schema_tools.validation import validate

    from flows.nightly import nightly

    schema = nightly.parameters.model_dump()
    with pytest.raises(SchemaError, match="5000 is greater than the maximum of 1000"):
        validate({"params": {"top_k": 5000}}, schema, raise_on_error=True)
    validate({"params": {"top_k": 30, "run_date": "2026-11-22"}}, schema, raise_on_error=True)
    # What the modular chain passes on (a stage's resolved parameters) fits the same form.
    resolved = NightlyParams(run_date="2026-11-22", top_k=30).model_dump(mode="json")
    assert "data" not in resolved
    validate({"params": resolved}, schema, raise_on_error=True)


def test_params_reject_what_the_server_would_reject():
    assert NightlyParams(run_date="2026-11-22", stages=["precompute", "publish"]).run_date.day == 22
    with pytest.raises(ValidationError, match="stages"):
        NightlyParams(stages=["train"])
    with pytest.raises(ValidationError, match="top_k"):
        NightlyParams(top_k=0)
    with pytest.raises(ValidationError, match="run_date"):
        NightlyParams(run_date="22/11/2026")


def test_modular_chain_runs_every_stage_once_in_dag_order_on_its_pool(deployments):
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    names = [s.replace("_", "-") for s in STAGES]
    assert set(names) <= set(deployments)
    pools = {"spark": set(), "gpu": set(), "batch": set()}
    for previous, name in zip(names, names[1:], strict=False):
        (trigger,) = deployments[name]["triggers"]
        parsed = DeploymentEventTrigger(**{k: v for k, v in trigger.items() if k != "type"})
        assert parsed.expect == {"prefect.flow-run.Completed"}
        # Match the previous *deployment*, so stage subflows of `nightly` never start the chain.
        related = trigger["match_related"]
        assert related == {"prefect.resource.role": "deployment", "prefect.resource.name": previous}
        assert trigger["parameters"] == {
            "params": "{{ flow_run.parameters['params'] }}",
            "triggered_by": "{{ flow_run.id | string }}",
        }
    for name in names:
        pools[deployments[name]["work_pool"]["name"]].add(name)
    assert "triggers" not in deployments[names[0]]
    assert pools == {
        "spark": {"validate-raw", "build-features", "validate-features"},
        "gpu": {"train-retrieval", "train-ranking"},
        "batch": {"evaluate-and-promote", "precompute", "validate-recs", "publish"},
    }


def test_the_chain_triggers_parameters_render_as_the_server_renders_them(deployments):
    # The server wraps a one-expression template in `| tojson`: `{{ flow_run.id }}` (a UUID) failed to render
    # and the chain stopped after its first stage ("Unable to create flow run from deployment: InvalidJinja").
    from uuid import uuid4

    from prefect.server.events.actions import RunDeployment
    from prefect.server.schemas.core import FlowRun
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    previous = FlowRun(
        id=uuid4(), flow_id=uuid4(), parameters={"params": {"run_date": "2026-11-22", "data": "/d"}}
    )
    (trigger,) = deployments["validate-features"]["triggers"]
    parameters = dict(trigger["parameters"])
    RunDeployment._upgrade_v1_templates(parameters)
    context = HydrationContext(raise_on_error=True, render_jinja=True, jinja_context={"flow_run": previous})
    rendered = hydrate(parameters, context)
    assert rendered == {"params": previous.parameters["params"], "triggered_by": str(previous.id)}
    NightlyParams(**rendered["params"])
