"""FIS templates: the built-ins, the validator's refusals, the export real FIS accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.validate import validate_parameters
from django.core.management import CommandError, call_command
from hypothesis import given, settings
from hypothesis import strategies as st

from faults.experiment import DEFAULT_ALARMS
from faults.templates import (
    FIDELITY_LEVELS,
    NotExportable,
    TemplateInvalid,
    builtin_template,
    builtin_templates,
    export_template,
    format_duration,
    parse_duration,
    validate_template,
    with_duration,
)
from tests.conftest import make_config

CONFIG = make_config()
ALARMS = [a.name for a in DEFAULT_ALARMS]
ROLE = "arn:aws:iam::123456789012:role/fis-experiments"
ALARM = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:exchange-accept-p99-high"

# The CreateExperimentTemplate request as documented (AWS FIS API reference).
DOCUMENTED_FIELDS = {
    "clientToken", "description", "stopConditions", "targets", "actions", "roleArn", "tags",
    "logConfiguration", "experimentOptions", "experimentReportConfiguration",
}
DOCUMENTED_TARGET_FIELDS = {"resourceType", "resourceArns", "resourceTags", "filters", "selectionMode", "parameters"}
DOCUMENTED_ACTION_FIELDS = {"actionId", "description", "parameters", "targets", "startAfter"}


def wait_template(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "region": "us-east-1",
        "description": "just wait",
        "actions": {"wait": {"actionId": "aws:fis:wait", "parameters": {"duration": "PT1M"}}},
        "stopConditions": [{"source": "none"}],
    }
    body.update(overrides)
    return body


def refused(body: Any) -> dict[str, list[str]]:
    with pytest.raises(TemplateInvalid) as caught:
        validate_template(body, CONFIG, ALARMS)
    return caught.value.errors


def create_request_shape() -> Any:
    return botocore.session.get_session().get_service_model("fis").operation_model("CreateExperimentTemplate").input_shape


def test_it_offers_one_valid_template_per_scenario() -> None:
    templates = builtin_templates(CONFIG)
    assert {t.scenario for t in templates} == {
        "az-loss", "region-outage", "partition", "throttling", "cpu-spike", "latency", "redis-failover",
    }
    assert len({t.id for t in templates}) == len(templates)
    for template in templates:
        assert template.fidelity.level in FIDELITY_LEVELS
        assert template.fidelity.note and template.fidelity.real_aws_method
        plan = validate_template(template.body, CONFIG, ALARMS)
        assert plan.region == "us-east-1"


def test_it_badges_the_scenarios_real_fis_cannot_run_as_such() -> None:
    assert builtin_template(CONFIG, "dynamodb-throttle").fidelity.level == "simulated-only"  # type: ignore[union-attr]
    outage = builtin_template(CONFIG, "region-outage")
    assert outage is not None and outage.fidelity.level == "approximate"
    assert "aws:network:disrupt-connectivity" in outage.fidelity.real_aws_method


def test_it_leaves_out_the_partition_when_there_is_one_region() -> None:
    ids = {t.id for t in builtin_templates(make_config(regions=("us-east-1",)))}
    assert "partition" not in ids and "az-loss" in ids


def test_it_exports_templates_in_the_documented_create_request_shape() -> None:
    shape = create_request_shape()
    exported_ids = []
    for template in builtin_templates(CONFIG):
        try:
            exported = export_template(template, ROLE, [ALARM])
        except NotExportable:
            assert template.fidelity.level == "simulated-only"
            continue
        exported_ids.append(template.id)
        assert set(exported) <= DOCUMENTED_FIELDS
        assert {"description", "actions", "stopConditions", "roleArn"} <= set(exported)
        assert "region" not in exported
        for target in exported.get("targets", {}).values():
            assert set(target) <= DOCUMENTED_TARGET_FIELDS
        for action in exported["actions"].values():
            assert set(action) <= DOCUMENTED_ACTION_FIELDS
        assert exported["stopConditions"] == [{"source": "aws:cloudwatch:alarm", "value": ALARM}]
        assert exported["roleArn"] == ROLE
        # botocore's own model of the API accepts it (clientToken is filled by the SDK/CLI).
        validate_parameters({**exported, "clientToken": "t"}, shape)
        json.dumps(exported)
    assert set(exported_ids) == {"az-loss", "region-outage", "partition", "cpu-spike", "latency", "redis-failover"}


def test_it_exports_no_stop_condition_as_source_none() -> None:
    exported = export_template(builtin_template(CONFIG, "az-loss"), ROLE, [])  # type: ignore[arg-type]
    assert exported["stopConditions"] == [{"source": "none"}]
    assert exported["tags"]["exchange:template"] == "az-loss"


def test_it_refuses_to_export_a_simulated_only_throttle_or_a_bad_role() -> None:
    with pytest.raises(NotExportable, match="ec2 and kinesis"):
        export_template(builtin_template(CONFIG, "dynamodb-throttle"), ROLE)  # type: ignore[arg-type]
    with pytest.raises(NotExportable, match="roleArn"):
        export_template(builtin_template(CONFIG, "az-loss"), "not-a-role")  # type: ignore[arg-type]


def test_it_refuses_unknown_actions_with_the_field_named() -> None:
    errors = refused(wait_template(actions={"boom": {"actionId": "aws:ec2:terminate-instances"}}))
    assert "actions.boom.actionId" in errors
    assert "aws:ecs:stop-task" in errors["actions.boom.actionId"][0]


def test_it_refuses_bad_durations_and_unknown_parameters() -> None:
    errors = refused(
        wait_template(actions={"wait": {"actionId": "aws:fis:wait", "parameters": {"duration": "2 minutes", "colour": "red"}}})
    )
    assert "actions.wait.parameters.duration" in errors
    assert "actions.wait.parameters.colour" in errors


def test_it_refuses_a_target_of_the_wrong_type_or_missing() -> None:
    body = builtin_template(CONFIG, "az-loss").body  # type: ignore[union-attr]
    broken = json.loads(json.dumps(body))
    broken["actions"]["stop-az-tasks"]["targets"] = {"Tasks": "az-subnets"}
    broken["actions"]["isolate-az"]["targets"] = {"Subnets": "nowhere"}
    errors = refused(broken)
    assert "acts on aws:ecs:task" in errors["actions.stop-az-tasks.targets.Tasks"][0]
    assert "names no target" in errors["actions.isolate-az.targets.Subnets"][0]


def test_it_refuses_cycles_unknown_alarms_bad_selection_and_foreign_regions() -> None:
    errors = refused(
        {
            "region": "ap-south-1",
            "description": "bad",
            "targets": {
                "tasks": {
                    "resourceType": "aws:ecs:task",
                    "resourceTags": {"exchange:app": "exchange"},
                    "selectionMode": "SOME",
                    "filters": [{"path": "Colour", "values": ["blue"]}],
                }
            },
            "actions": {
                "a": {"actionId": "aws:ecs:stop-task", "targets": {"Tasks": "tasks"}, "startAfter": ["b"]},
                "b": {"actionId": "aws:fis:wait", "parameters": {"duration": "PT1M"}, "startAfter": ["a"]},
            },
            "stopConditions": [{"source": "aws:cloudwatch:alarm", "value": "arn:aws:cloudwatch:us-east-1:1:alarm:nope"}],
            "surprise": True,
        }
    )
    assert "region" in errors
    assert "targets.tasks.selectionMode" in errors
    assert "targets.tasks.filters[0].path" in errors
    assert any("cycle" in m for k, ms in errors.items() if k.endswith("startAfter") for m in ms)
    assert "stopConditions[0].value" in errors
    assert "surprise" in errors


def test_it_refuses_a_non_object_and_scopes_it_does_not_model() -> None:
    assert "template" in refused(["not", "a", "template"])
    body = json.loads(json.dumps(builtin_template(CONFIG, "region-outage").body))  # type: ignore[union-attr]
    body["actions"]["isolate-region"]["parameters"]["scope"] = "s3"
    assert "scope 'all'" in refused(body)["actions.isolate-region.parameters.scope"][0]


def test_it_refuses_a_partition_with_its_own_region() -> None:
    body = json.loads(json.dumps(builtin_template(CONFIG, "partition").body))  # type: ignore[union-attr]
    body["actions"]["block-cross-region"]["parameters"]["region"] = "us-east-1"
    assert "another region" in refused(body)["actions.block-cross-region.parameters.region"][0]


def test_it_replaces_every_duration_with_one_knob() -> None:
    body = with_duration(builtin_template(CONFIG, "region-outage").body, "PT20S")  # type: ignore[union-attr]
    plan = validate_template(body, CONFIG, ALARMS)
    assert {a.duration_s for a in plan.actions.values()} == {20}


@given(st.integers(min_value=1, max_value=12 * 3600))
def test_it_round_trips_durations(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(JSONISH)
def test_it_answers_any_json_with_field_errors_never_a_crash(body: Any) -> None:
    try:
        validate_template(body, CONFIG, ALARMS)
    except TemplateInvalid as invalid:
        assert invalid.errors and all(isinstance(m, list) and m for m in invalid.errors.values())


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([t.id for t in builtin_templates(CONFIG)]),
    st.sampled_from(["actions", "targets", "stopConditions", "description"]),
    JSONISH,
)
def test_it_answers_a_mangled_builtin_with_field_errors(template_id: str, key: str, junk: Any) -> None:
    body = dict(builtin_template(CONFIG, template_id).body)  # type: ignore[union-attr]
    body[key] = junk
    try:
        validate_template(body, CONFIG, ALARMS)
    except TemplateInvalid as invalid:
        assert invalid.errors


def test_it_writes_the_exportable_templates_with_the_management_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIS_ROLE_ARN", ROLE)
    monkeypatch.setenv("FIS_STOP_ALARM_ARN", ALARM)
    out = tmp_path / "fis"
    call_command("export_fis_templates", str(out))
    written = sorted(p.name for p in out.iterdir())
    assert "az-loss.json" in written and "dynamodb-throttle.json" not in written
    exported = json.loads((out / "az-loss.json").read_text())
    assert exported["roleArn"] == ROLE
    assert exported["stopConditions"] == [{"source": "aws:cloudwatch:alarm", "value": ALARM}]


def test_it_asks_for_a_role_when_none_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIS_ROLE_ARN", raising=False)
    with pytest.raises(CommandError, match="role"):
        call_command("export_fis_templates", str(tmp_path), "--role-arn", "")


@pytest.mark.usefixtures("aws_resources")
def test_it_creates_the_exported_templates_in_an_fis_api() -> None:
    from trading import aws

    fis = aws.client("fis", "us-east-1")
    for template in builtin_templates(CONFIG):
        if template.fidelity.level == "simulated-only":
            continue
        created = fis.create_experiment_template(**export_template(template, ROLE, [ALARM]))
        fetched = fis.get_experiment_template(id=created["experimentTemplate"]["id"])["experimentTemplate"]
        assert set(fetched["actions"]) == set(template.body["actions"])
