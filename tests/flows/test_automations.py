"""prefect.yaml's automations are applied through Prefect's client: idempotently, and checked before sending."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import AutomationCore
from pydantic import ValidationError

from flows.automations import ZOMBIE_AUTOMATION, apply_automations, automation, find_automations


def test_applying_twice_keeps_one_automation_per_name_and_updates_it_in_place(prefect_harness):
    first = apply_automations()
    spec = automation(ZOMBIE_AUTOMATION)
    spec["trigger"]["within"] = 900
    second = apply_automations(specs=[spec])
    assert second[ZOMBIE_AUTOMATION] == first[ZOMBIE_AUTOMATION]
    (on_server,) = find_automations(None, ZOMBIE_AUTOMATION)
    assert on_server.trigger.within == timedelta(seconds=900)
    assert [a.type for a in on_server.actions] == ["change-flow-run-state"]


def test_a_duplicate_left_by_the_prefect_cli_is_removed(prefect_harness):
    apply_automations()
    with get_client(sync_client=True) as client:  # what `prefect automation create -f` run again leaves
        client.create_automation(AutomationCore.model_validate(automation(ZOMBIE_AUTOMATION)))
    assert len(find_automations(None, ZOMBIE_AUTOMATION)) == 2
    apply_automations()
    assert len(find_automations(None, ZOMBIE_AUTOMATION)) == 1


def test_a_typo_in_a_spec_fails_with_its_field_before_anything_is_sent(prefect_harness):
    spec = automation(ZOMBIE_AUTOMATION)
    spec["name"] = "nightrec-typo"
    spec["trigger"]["posture"] = "Proactiv"
    with pytest.raises(ValidationError, match="posture"):
        apply_automations(specs=[spec])
    assert find_automations(None, "nightrec-typo") == []
