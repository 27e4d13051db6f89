"""AWS FIS experiment templates: the CreateExperimentTemplate shape, validated and exported.

Pure: plain data in, plain data out. The simulator understands a subset of FIS (the
actions below, with the parameters listed); anything else is refused with a message per
field, so an experiment is never half-run. `export_template` gives the JSON real FIS
accepts (`aws fis create-experiment-template --cli-input-json file://...`).

One local extension: a top-level `"region"`, the Region the experiment runs in (what
you would pass as `--region` to the FIS API). It is never exported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trading.markets import ExchangeConfig

ACCOUNT = "000000000000"  # the simulated account: moto's default is 123456789012, FIS examples use zeros
APP_TAG = {"exchange:app": "exchange"}
MAX_DURATION_S = 12 * 3600  # FIS caps every action at 12 hours

FIDELITY_LEVELS = ("faithful", "approximate", "simulated-only")


class TemplateInvalid(ValueError):
    """The template cannot run here; `errors` maps a field path to its messages."""

    def __init__(self, errors: Mapping[str, list[str]]):
        self.errors = {k: list(v) for k, v in errors.items()}
        first = next(iter(self.errors.items()), ("template", ["invalid"]))
        super().__init__(f"{first[0]}: {first[1][0]}")


class NotExportable(ValueError):
    """The template uses something real FIS does not offer (a simulated-only fault)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


# --- durations ----------------------------------------------------------------------

# re.ASCII throughout: without it \d also takes other scripts' digits ("٥"), which int() reads.
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$", re.ASCII)


def parse_duration(text: Any) -> int:
    """Seconds in an ISO-8601 duration such as PT2M or PT1M30S; ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError("must be an ISO-8601 duration string such as PT2M")
    match = _DURATION.match(text.strip())
    if not match or text.strip() in {"P", "PT"} or text.strip().endswith("T"):
        raise ValueError(f"{text!r} is not an ISO-8601 duration such as PT2M or PT30S")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError("must be longer than zero")
    if total > MAX_DURATION_S:
        raise ValueError("must be at most PT12H")
    return total


def format_duration(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    text = "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{secs}S" if secs else "")
    return text if text != "PT" else "PT0S"


# --- what the simulator understands ---------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    kind: str  # duration | int | choice | text | csv
    required: bool = False
    low: int = 0
    high: int = 0
    choices: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class ActionKind:
    action_id: str
    resource_type: str | None
    target_key: str | None
    params: Mapping[str, ParamSpec]
    summary: str


_DURATION_PARAM = ParamSpec("duration", required=True)

ACTION_KINDS: dict[str, ActionKind] = {
    kind.action_id: kind
    for kind in (
        ActionKind("aws:fis:wait", None, None, {"duration": _DURATION_PARAM}, "wait"),
        ActionKind("aws:ecs:stop-task", "aws:ecs:task", "Tasks", {}, "stop the selected SimFill tasks (AZ workers)"),
        ActionKind(
            "aws:ecs:task-cpu-stress",
            "aws:ecs:task",
            "Tasks",
            {
                "duration": _DURATION_PARAM,
                "percent": ParamSpec("int", low=1, high=100),
                "workers": ParamSpec("int", low=0, high=1024),
                "installDependencies": ParamSpec("choice", choices=("true", "false")),
            },
            "burn the selected tasks' CPU, so their fill work slows",
        ),
        ActionKind(
            "aws:ecs:task-network-latency",
            "aws:ecs:task",
            "Tasks",
            {
                "duration": _DURATION_PARAM,
                "delayMilliseconds": ParamSpec("int", low=0, high=60000),
                "jitterMilliseconds": ParamSpec("int", low=0, high=60000),
                "sources": ParamSpec("text"),
                "installDependencies": ParamSpec("choice", choices=("true", "false")),
                "useEcsFaultInjectionEndpoints": ParamSpec("choice", choices=("true", "false")),
            },
            "add latency to the tasks' AWS calls",
        ),
        ActionKind(
            "aws:network:disrupt-connectivity",
            "aws:ec2:subnet",
            "Subnets",
            {
                "duration": _DURATION_PARAM,
                "scope": ParamSpec("choice", required=True, choices=("all",), note="the simulator models scope 'all' only"),
            },
            "cut the selected subnets off: their AZs go down (all of a Region's AZs: the Region goes down)",
        ),
        ActionKind(
            "aws:network:route-table-disrupt-cross-region-connectivity",
            "aws:ec2:subnet",
            "Subnets",
            {"duration": _DURATION_PARAM, "region": ParamSpec("text", required=True)},
            "partition the experiment Region from another Region",
        ),
        ActionKind(
            "aws:dynamodb:global-table-pause-replication",
            "aws:dynamodb:global-table",
            "Tables",
            {"duration": _DURATION_PARAM},
            "stop replication to and from the Region's tables",
        ),
        ActionKind(
            "aws:fis:inject-api-throttle-error",
            "aws:iam:role",
            "Roles",
            {
                "duration": _DURATION_PARAM,
                "service": ParamSpec("choice", required=True, choices=("dynamodb", "sqs")),
                "operations": ParamSpec("csv"),
                "percentage": ParamSpec("int", required=True, low=1, high=100),
            },
            "throttle the Region's DynamoDB (or SQS) calls at a percentage",
        ),
        ActionKind(
            "aws:lambda:invocation-add-delay",
            "aws:lambda:function",
            "Functions",
            {
                "duration": _DURATION_PARAM,
                "invocationPercentage": ParamSpec("int", low=1, high=100),
                "startupDelayMilliseconds": ParamSpec("int", required=True, low=0, high=900000),
            },
            "delay the Region's facade and workers",
        ),
        ActionKind(
            "aws:elasticache:replicationgroup-interrupt-az-power",
            "aws:elasticache:replicationgroup",
            "ReplicationGroups",
            {"duration": _DURATION_PARAM},
            "drop the Redis connections (failover) in one AZ",
        ),
    )
}

RESOURCE_FILTER_PATHS: dict[str, tuple[str, ...]] = {
    "aws:ecs:task": ("AvailabilityZone", "availabilityZone", "Group"),
    "aws:ec2:subnet": ("AvailabilityZone", "SubnetId", "VpcId"),
    "aws:dynamodb:global-table": ("TableName",),
    "aws:lambda:function": ("FunctionName",),
    "aws:elasticache:replicationgroup": ("ReplicationGroupId",),
    "aws:iam:role": ("RoleName",),
}

RESOURCE_TARGET_PARAMS: dict[str, tuple[str, ...]] = {
    "aws:ecs:task": ("cluster", "service"),
    "aws:elasticache:replicationgroup": ("availabilityZoneIdentifier",),
}

_TOP_LEVEL = {
    "description", "targets", "actions", "stopConditions", "roleArn", "tags", "clientToken",
    "logConfiguration", "experimentOptions", "experimentReportConfiguration", "region",
}
_NAME = re.compile(r"^[\w-]{1,64}$")
_SELECTION = re.compile(r"^(ALL|COUNT\((\d+)\)|PERCENT\((\d+)\))$", re.ASCII)
_ARN = re.compile(r"^arn:aws[\w-]*:([\w-]+):([\w-]*):(\d{12}|):(.+)$", re.ASCII)
_ROLE_ARN = re.compile(r"^arn:aws[\w-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$", re.ASCII)


# --- the validated plan ---------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    resource_type: str
    resource_arns: tuple[str, ...] = ()
    resource_tags: tuple[tuple[str, str], ...] = ()
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    selection_mode: str = "ALL"
    parameters: tuple[tuple[str, str], ...] = ()

    def parameter(self, name: str, default: str = "") -> str:
        return dict(self.parameters).get(name, default)


@dataclass(frozen=True)
class Action:
    name: str
    action_id: str
    description: str
    parameters: tuple[tuple[str, str], ...]
    targets: tuple[tuple[str, str], ...]  # (target key, target name)
    start_after: tuple[str, ...]
    duration_s: int  # 0: an instant action (stop-task)

    def parameter(self, name: str, default: str = "") -> str:
        return dict(self.parameters).get(name, default)


@dataclass(frozen=True)
class StopCondition:
    source: str
    value: str = ""

    @property
    def alarm_name(self) -> str:
        return self.value.rsplit(":alarm:", 1)[-1] if self.source == "aws:cloudwatch:alarm" else ""


@dataclass(frozen=True)
class Plan:
    """A template the simulator can run: every field checked, durations parsed."""

    region: str
    description: str
    targets: Mapping[str, Target]
    actions: Mapping[str, Action]
    stop_conditions: tuple[StopCondition, ...]
    tags: Mapping[str, str]
    role_arn: str
    empty_target_mode: str = "fail"
    body: Mapping[str, Any] = field(default_factory=dict)


class _Errors:
    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, path: str, message: str) -> None:
        self.by_field.setdefault(path, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.by_field)


def _string_map(value: Any, path: str, errors: _Errors) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        errors.add(path, "must be an object of strings")
        return {}
    return dict(value)


def _check_param(spec: ParamSpec, value: str, path: str, errors: _Errors, config: ExchangeConfig, region: str) -> None:
    if spec.kind == "duration":
        try:
            parse_duration(value)
        except ValueError as error:
            errors.add(path, str(error))
    elif spec.kind == "int":
        if not re.fullmatch(r"[0-9]{1,9}", value) or not spec.low <= int(value) <= spec.high:
            errors.add(path, f"must be a whole number from {spec.low} to {spec.high}")
    elif spec.kind == "choice":
        if value not in spec.choices:
            errors.add(path, spec.note or f"must be one of {', '.join(spec.choices)}")
    elif spec.kind == "csv":
        names = [part.strip() for part in value.split(",")]
        if not value.strip() or not all(re.fullmatch(r"[A-Za-z]{1,64}", n) for n in names):
            errors.add(path, "must be a comma-separated list of API operation names such as PutItem,GetItem")
    elif spec.kind == "text" and path.endswith(".region"):
        if value not in config.regions:
            errors.add(path, f"must be one of the exchange's regions: {', '.join(config.regions)}")
        elif value == region:
            errors.add(path, "must be another region than the experiment's own")


def _validate_target(name: str, raw: Any, errors: _Errors, config: ExchangeConfig, region: str) -> Target | None:
    path = f"targets.{name}"
    if not _NAME.match(name):
        errors.add(path, "target names are 1-64 letters, digits, '-' or '_'")
    if not isinstance(raw, dict):
        errors.add(path, "must be an object")
        return None
    unknown = set(raw) - {"resourceType", "resourceArns", "resourceTags", "filters", "selectionMode", "parameters"}
    for key in sorted(unknown):
        errors.add(f"{path}.{key}", "is not a field of an FIS target")
    resource_type = raw.get("resourceType")
    if resource_type not in RESOURCE_FILTER_PATHS:
        errors.add(f"{path}.resourceType", f"must be one of {', '.join(sorted(RESOURCE_FILTER_PATHS))}")
        return None
    arns = raw.get("resourceArns") or []
    tags = _string_map(raw.get("resourceTags"), f"{path}.resourceTags", errors)
    params = _string_map(raw.get("parameters"), f"{path}.parameters", errors)
    if not isinstance(arns, list) or not all(isinstance(a, str) for a in arns):
        errors.add(f"{path}.resourceArns", "must be a list of ARNs")
        arns = []
    if arns and tags:
        errors.add(path, "give resourceArns or resourceTags, not both")
    if not arns and not tags and not params:
        errors.add(path, "must identify resources: resourceArns, resourceTags or parameters")
    for index, arn in enumerate(arns):
        match = _ARN.match(arn)
        if not match:
            errors.add(f"{path}.resourceArns[{index}]", f"{arn!r} is not an ARN")
            continue
        service, arn_region = match.group(1), match.group(2)
        if service != resource_type.split(":")[1]:
            errors.add(f"{path}.resourceArns[{index}]", f"is a {service} ARN, not a {resource_type}")
        if arn_region and arn_region != region:
            errors.add(f"{path}.resourceArns[{index}]", f"is in {arn_region}; an experiment acts in its own region ({region})")
    for key in sorted(params):
        if key not in RESOURCE_TARGET_PARAMS.get(resource_type, ()):
            errors.add(f"{path}.parameters.{key}", f"is not a target parameter the simulator knows for {resource_type}")
    az_param = params.get("availabilityZoneIdentifier")
    if az_param is not None and az_param not in config.azs(region):
        errors.add(f"{path}.parameters.availabilityZoneIdentifier", f"must be one of {', '.join(config.azs(region))}")
    filters: list[tuple[str, tuple[str, ...]]] = []
    raw_filters = raw.get("filters") or []
    if not isinstance(raw_filters, list):
        errors.add(f"{path}.filters", "must be a list of {path, values}")
        raw_filters = []
    for index, item in enumerate(raw_filters):
        fpath = f"{path}.filters[{index}]"
        if not isinstance(item, dict) or set(item) - {"path", "values"}:
            errors.add(fpath, "must be an object with path and values")
            continue
        attr, values = item.get("path"), item.get("values")
        if attr not in RESOURCE_FILTER_PATHS[resource_type]:
            errors.add(f"{fpath}.path", f"the simulator filters {resource_type} on {', '.join(RESOURCE_FILTER_PATHS[resource_type])}")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            errors.add(f"{fpath}.values", "must be a non-empty list of strings")
            continue
        if isinstance(attr, str):
            filters.append((attr, tuple(values)))
    selection = raw.get("selectionMode", "ALL")
    match = _SELECTION.match(selection) if isinstance(selection, str) else None
    if not match:
        errors.add(f"{path}.selectionMode", "must be ALL, COUNT(n) or PERCENT(n)")
        selection = "ALL"
    elif match.group(2) is not None and int(match.group(2)) < 1:
        errors.add(f"{path}.selectionMode", "COUNT(n) needs n >= 1")
    elif match.group(3) is not None and not 1 <= int(match.group(3)) <= 100:
        errors.add(f"{path}.selectionMode", "PERCENT(n) needs 1 <= n <= 100")
    return Target(
        name=name,
        resource_type=resource_type,
        resource_arns=tuple(arns),
        resource_tags=tuple(sorted(tags.items())),
        filters=tuple(filters),
        selection_mode=selection,
        parameters=tuple(sorted(params.items())),
    )


def _validate_action(
    name: str, raw: Any, targets: Mapping[str, Target], errors: _Errors, config: ExchangeConfig, region: str
) -> Action | None:
    path = f"actions.{name}"
    if not _NAME.match(name):
        errors.add(path, "action names are 1-64 letters, digits, '-' or '_'")
    if not isinstance(raw, dict):
        errors.add(path, "must be an object")
        return None
    for key in sorted(set(raw) - {"actionId", "description", "parameters", "targets", "startAfter"}):
        errors.add(f"{path}.{key}", "is not a field of an FIS action")
    kind = ACTION_KINDS.get(raw.get("actionId"))  # type: ignore[arg-type]
    if kind is None:
        errors.add(f"{path}.actionId", f"the simulator runs only {', '.join(sorted(ACTION_KINDS))}")
        return None
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > 512:
        errors.add(f"{path}.description", "must be text of at most 512 characters")
        description = ""
    params = _string_map(raw.get("parameters"), f"{path}.parameters", errors)
    for key in sorted(params):
        spec = kind.params.get(key)
        if spec is None:
            known = ", ".join(kind.params) or "none"
            errors.add(f"{path}.parameters.{key}", f"{kind.action_id} takes no parameter {key!r} (it takes: {known})")
        else:
            _check_param(spec, params[key], f"{path}.parameters.{key}", errors, config, region)
    for key, spec in kind.params.items():
        if spec.required and key not in params:
            errors.add(f"{path}.parameters.{key}", "is required")
    action_targets = _string_map(raw.get("targets"), f"{path}.targets", errors)
    if kind.target_key is None and action_targets:
        errors.add(f"{path}.targets", f"{kind.action_id} takes no targets")
    if kind.target_key is not None:
        if set(action_targets) != {kind.target_key}:
            errors.add(f"{path}.targets", f"{kind.action_id} needs exactly one target, under the key {kind.target_key!r}")
        target_name = action_targets.get(kind.target_key)
        if target_name is not None:
            target = targets.get(target_name)
            if target is None:
                errors.add(f"{path}.targets.{kind.target_key}", f"names no target in targets: {target_name!r}")
            elif target.resource_type != kind.resource_type:
                errors.add(
                    f"{path}.targets.{kind.target_key}",
                    f"{kind.action_id} acts on {kind.resource_type}, target {target_name!r} is {target.resource_type}",
                )
            if kind.action_id == "aws:elasticache:replicationgroup-interrupt-az-power" and target is not None:
                if not target.parameter("availabilityZoneIdentifier"):
                    errors.add(f"targets.{target_name}.parameters.availabilityZoneIdentifier", "is required for this action")
    start_after = raw.get("startAfter") or []
    if not isinstance(start_after, list) or not all(isinstance(s, str) for s in start_after):
        errors.add(f"{path}.startAfter", "must be a list of action names")
        start_after = []
    duration = 0
    if "duration" in params:
        try:
            duration = parse_duration(params["duration"])
        except ValueError:
            pass
    return Action(
        name=name,
        action_id=kind.action_id,
        description=description,
        parameters=tuple(sorted(params.items())),
        targets=tuple(sorted(action_targets.items())),
        start_after=tuple(start_after),
        duration_s=duration,
    )


def _check_order(actions: Mapping[str, Action], errors: _Errors) -> None:
    for action in actions.values():
        for other in action.start_after:
            if other == action.name:
                errors.add(f"actions.{action.name}.startAfter", "an action cannot start after itself")
            elif other not in actions:
                errors.add(f"actions.{action.name}.startAfter", f"names no action: {other!r}")
    # A cycle would leave the experiment waiting forever.
    state: dict[str, int] = {}

    def visit(name: str) -> bool:
        if state.get(name) == 1:
            return True
        if state.get(name) == 2:
            return False
        state[name] = 1
        found = any(visit(n) for n in actions[name].start_after if n in actions and n != name)
        state[name] = 2
        return found

    for name in actions:
        if state.get(name) is None and visit(name):
            errors.add(f"actions.{name}.startAfter", "the startAfter chain has a cycle")
            return


def validate_template(body: Any, config: ExchangeConfig, alarm_names: Sequence[str] = ()) -> Plan:
    """Check a CreateExperimentTemplate body; return the Plan or raise TemplateInvalid."""
    errors = _Errors()
    if not isinstance(body, dict):
        raise TemplateInvalid({"template": ["must be a JSON object in the FIS CreateExperimentTemplate shape"]})
    for key in sorted(set(body) - _TOP_LEVEL):
        errors.add(key, "is not a field of an FIS experiment template")
    region = body.get("region", config.regions[0])
    if region not in config.regions:
        errors.add("region", f"must be one of the exchange's regions: {', '.join(config.regions)}")
        region = config.regions[0]
    description = body.get("description")
    if not isinstance(description, str) or not description.strip() or len(description) > 512:
        errors.add("description", "is required: text of at most 512 characters")
        description = ""
    raw_targets = body.get("targets") or {}
    targets: dict[str, Target] = {}
    if not isinstance(raw_targets, dict):
        errors.add("targets", "must be an object of named targets")
    else:
        for name, raw in raw_targets.items():
            target = _validate_target(str(name), raw, errors, config, region)
            if target is not None:
                targets[str(name)] = target
    raw_actions = body.get("actions")
    actions: dict[str, Action] = {}
    if not isinstance(raw_actions, dict) or not raw_actions:
        errors.add("actions", "is required: an object of named actions")
    else:
        for name, raw in raw_actions.items():
            action = _validate_action(str(name), raw, targets, errors, config, region)
            if action is not None:
                actions[str(name)] = action
        _check_order(actions, errors)
    for name in targets:
        if not any(name == t for a in actions.values() for _, t in a.targets):
            errors.add(f"targets.{name}", "no action uses this target")
    stop_conditions = _validate_stop_conditions(body.get("stopConditions"), errors, region, alarm_names)
    role_arn = body.get("roleArn", "")
    if role_arn and (not isinstance(role_arn, str) or not _ROLE_ARN.match(role_arn)):
        errors.add("roleArn", "must be an IAM role ARN such as arn:aws:iam::123456789012:role/fis-experiments")
    tags = _string_map(body.get("tags"), "tags", errors)
    options = body.get("experimentOptions") or {}
    empty_mode = "fail"
    if not isinstance(options, dict):
        errors.add("experimentOptions", "must be an object")
    else:
        for key in sorted(set(options) - {"accountTargeting", "emptyTargetResolutionMode"}):
            errors.add(f"experimentOptions.{key}", "is not an experiment option the simulator knows")
        if options.get("accountTargeting", "single-account") != "single-account":
            errors.add("experimentOptions.accountTargeting", "the simulator runs single-account experiments only")
        empty_mode = options.get("emptyTargetResolutionMode", "fail")
        if empty_mode not in {"fail", "skip"}:
            errors.add("experimentOptions.emptyTargetResolutionMode", "must be fail or skip")
    if errors:
        raise TemplateInvalid(errors.by_field)
    return Plan(
        region=str(region),
        description=str(description),
        targets=targets,
        actions=actions,
        stop_conditions=stop_conditions,
        tags=tags,
        role_arn=str(role_arn),
        empty_target_mode=str(empty_mode),
        body=body,
    )


def _validate_stop_conditions(raw: Any, errors: _Errors, region: str, alarm_names: Sequence[str]) -> tuple[StopCondition, ...]:
    if raw is None:
        return (StopCondition("none"),)
    if not isinstance(raw, list) or not raw:
        errors.add("stopConditions", "must be a non-empty list of {source, value}")
        return ()
    found = []
    for index, item in enumerate(raw):
        path = f"stopConditions[{index}]"
        if not isinstance(item, dict) or set(item) - {"source", "value"}:
            errors.add(path, "must be an object with source and value")
            continue
        source, value = item.get("source"), item.get("value", "")
        if source == "none":
            found.append(StopCondition("none"))
        elif source == "aws:cloudwatch:alarm":
            match = _ARN.match(value) if isinstance(value, str) else None
            if not match or match.group(1) != "cloudwatch" or ":alarm:" not in value:
                errors.add(f"{path}.value", "must be a CloudWatch alarm ARN (arn:aws:cloudwatch:REGION:ACCOUNT:alarm:NAME)")
                continue
            condition = StopCondition(source, value)
            if condition.alarm_name not in alarm_names:
                errors.add(
                    f"{path}.value",
                    f"the simulator watches the alarms {', '.join(alarm_names) or '(none)'}; not {condition.alarm_name!r}",
                )
                continue
            found.append(condition)
        else:
            errors.add(f"{path}.source", "must be none or aws:cloudwatch:alarm")
    return tuple(found)


# --- built-in templates ---------------------------------------------------------------


@dataclass(frozen=True)
class Fidelity:
    level: str  # faithful | approximate | simulated-only
    note: str
    real_aws_method: str

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "note": self.note, "real_aws_method": self.real_aws_method}


@dataclass(frozen=True)
class BuiltinTemplate:
    id: str
    name: str
    description: str
    scenario: str
    fidelity: Fidelity
    body: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "scenario": self.scenario,
            "fidelity": self.fidelity.as_dict(),
            "region": self.body.get("region"),
            "template": dict(self.body),
        }


def _tagged(resource_type: str, **extra: Any) -> dict[str, Any]:
    target: dict[str, Any] = {"resourceType": resource_type, "resourceTags": dict(APP_TAG), "selectionMode": "ALL"}
    target.update(extra)
    return target


def _az_filter(az: str) -> list[dict[str, Any]]:
    return [{"path": "AvailabilityZone", "values": [az]}]


def builtin_templates(config: ExchangeConfig, duration: str = "PT2M") -> tuple[BuiltinTemplate, ...]:
    """One template per scenario, aimed at the first region (and its first AZ)."""
    region = config.regions[0]
    other = config.regions[1] if len(config.regions) > 1 else None
    az = config.azs(region)[0]
    none_stop = [{"source": "none"}]
    found = [
        BuiltinTemplate(
            id="az-loss",
            name=f"AZ loss: {az}",
            description="The AZ's SimFill tasks stop and its subnets are cut off; in-flight messages reappear "
            "after the visibility timeout and the surviving AZ fills them.",
            scenario="az-loss",
            fidelity=Fidelity(
                "faithful",
                "Both actions are real FIS actions. Locally the AZ's worker stops (abandoning what it holds), stays "
                "down while the AZ is isolated and restarts when the isolation ends; ingest stops placing orders there.",
                "aws:ecs:stop-task filtered by AvailabilityZone + aws:network:disrupt-connectivity (scope all) on the "
                "AZ's subnets; see also the FIS scenario 'AZ Availability: Power Interruption'",
            ),
            body={
                "region": region,
                "description": f"AZ loss in {az}",
                "targets": {
                    "az-tasks": _tagged("aws:ecs:task", filters=_az_filter(az)),
                    "az-subnets": _tagged("aws:ec2:subnet", filters=_az_filter(az)),
                },
                "actions": {
                    "stop-az-tasks": {
                        "actionId": "aws:ecs:stop-task",
                        "description": f"stop the SimFill tasks in {az}",
                        "targets": {"Tasks": "az-tasks"},
                    },
                    "isolate-az": {
                        "actionId": "aws:network:disrupt-connectivity",
                        "description": f"cut {az} off",
                        "parameters": {"duration": duration, "scope": "all"},
                        "targets": {"Subnets": "az-subnets"},
                    },
                },
                "stopConditions": none_stop,
                "tags": {"Name": "az-loss"},
            },
        ),
        BuiltinTemplate(
            id="region-outage",
            name=f"Region outage: {region}",
            description="Every AWS call to the region fails and its health check fails, so ingest reroutes.",
            scenario="region-outage",
            fidelity=Fidelity(
                "approximate",
                "No single FIS action takes a Region down. Locally every AWS call to the Region fails "
                "(HTTP 503, retried by the SDK, then given up) and Exchange.region_up is false.",
                "aws:network:disrupt-connectivity (scope all) on every subnet in the Region + "
                "aws:dynamodb:global-table-pause-replication, with a Route 53 ARC routing control flipped "
                "to steer clients away (outside FIS)",
            ),
            body={
                "region": region,
                "description": f"Region outage in {region}",
                "targets": {
                    "region-subnets": _tagged("aws:ec2:subnet"),
                    "region-tables": _tagged("aws:dynamodb:global-table"),
                },
                "actions": {
                    "isolate-region": {
                        "actionId": "aws:network:disrupt-connectivity",
                        "description": f"cut every subnet in {region} off",
                        "parameters": {"duration": duration, "scope": "all"},
                        "targets": {"Subnets": "region-subnets"},
                    },
                    "pause-replication": {
                        "actionId": "aws:dynamodb:global-table-pause-replication",
                        "description": f"stop replication to and from {region}",
                        "parameters": {"duration": duration},
                        "targets": {"Tables": "region-tables"},
                    },
                },
                "stopConditions": none_stop,
                "tags": {"Name": "region-outage"},
            },
        ),
    ]
    if other is not None:
        found.append(
            BuiltinTemplate(
                id="partition",
                name=f"Partition: {region} / {other}",
                description="Replication between the two regions stops; each keeps matching locally. "
                "On heal the reconciler resolves what diverged.",
                scenario="partition",
                fidelity=Fidelity(
                    "faithful",
                    "Both actions are real FIS actions (the 'Cross-Region: Connectivity' scenario). Locally the "
                    "replicator sees partitioned(a, b) while either action runs.",
                    "aws:network:route-table-disrupt-cross-region-connectivity + "
                    "aws:dynamodb:global-table-pause-replication",
                ),
                body={
                    "region": region,
                    "description": f"Partition {region} from {other}",
                    "targets": {
                        "region-subnets": _tagged("aws:ec2:subnet"),
                        "region-tables": _tagged("aws:dynamodb:global-table"),
                    },
                    "actions": {
                        "block-cross-region": {
                            "actionId": "aws:network:route-table-disrupt-cross-region-connectivity",
                            "description": f"block traffic from {region} to {other}",
                            "parameters": {"duration": duration, "region": other},
                            "targets": {"Subnets": "region-subnets"},
                        },
                        "pause-replication": {
                            "actionId": "aws:dynamodb:global-table-pause-replication",
                            "description": f"stop global-table replication to and from {region}",
                            "parameters": {"duration": duration},
                            "targets": {"Tables": "region-tables"},
                        },
                    },
                    "stopConditions": none_stop,
                    "tags": {"Name": "partition"},
                },
            )
        )
    found += [
        BuiltinTemplate(
            id="dynamodb-throttle",
            name=f"DynamoDB throttling: {region}",
            description="Half of the region's DynamoDB calls are throttled; the SDK backs off and retries.",
            scenario="throttling",
            fidelity=Fidelity(
                "simulated-only",
                "Real FIS injects API throttling only for the ec2 and kinesis namespaces; here DynamoDB answers "
                "HTTP 400 ThrottlingException as it does past on-demand limits, and botocore's standard retries back off.",
                "none in FIS for DynamoDB: load-test past the table's capacity, or use "
                "aws:fis:inject-api-throttle-error for the ec2 namespace",
            ),
            body={
                "region": region,
                "description": f"Throttle DynamoDB in {region}",
                "targets": {
                    "app-role": {
                        "resourceType": "aws:iam:role",
                        "resourceArns": [f"arn:aws:iam::{ACCOUNT}:role/exchange-app"],
                        "selectionMode": "ALL",
                    }
                },
                "actions": {
                    "throttle-dynamodb": {
                        "actionId": "aws:fis:inject-api-throttle-error",
                        "description": "throttle half of the DynamoDB calls",
                        "parameters": {
                            "duration": duration,
                            "service": "dynamodb",
                            "operations": "GetItem,PutItem,UpdateItem,TransactWriteItems",
                            "percentage": "50",
                        },
                        "targets": {"Roles": "app-role"},
                    }
                },
                "stopConditions": none_stop,
                "tags": {"Name": "dynamodb-throttle"},
            },
        ),
        BuiltinTemplate(
            id="cpu-spike",
            name=f"Engine CPU spike: {region}",
            description="The region's fill tasks are CPU-starved: each fill takes longer, time-to-fill rises.",
            scenario="cpu-spike",
            fidelity=Fidelity(
                "approximate",
                "Real FIS runs stress-ng in the tasks through SSM; locally each task's own thread burns "
                "CPU (hashing) for the stress percent of a 0.5 s slice before each message; `workers` is not modelled.",
                "aws:ecs:task-cpu-stress",
            ),
            body={
                "region": region,
                "description": f"CPU stress on the fill tasks in {region}",
                "targets": {"region-tasks": _tagged("aws:ecs:task")},
                "actions": {
                    "stress-cpu": {
                        "actionId": "aws:ecs:task-cpu-stress",
                        "description": "stress the fill tasks' CPU",
                        "parameters": {"duration": duration, "percent": "90"},
                        "targets": {"Tasks": "region-tasks"},
                    }
                },
                "stopConditions": none_stop,
                "tags": {"Name": "cpu-spike"},
            },
        ),
        BuiltinTemplate(
            id="latency",
            name=f"Latency: {region}",
            description="The region's facade and workers run slower: every AWS call they make is delayed.",
            scenario="latency",
            fidelity=Fidelity(
                "approximate",
                "Locally the delay is added to each AWS call made to the Region (an order makes several), "
                "not once per Lambda invocation or per packet.",
                "aws:lambda:invocation-add-delay + aws:ecs:task-network-latency",
            ),
            body={
                "region": region,
                "description": f"Add latency in {region}",
                "targets": {
                    "region-functions": _tagged("aws:lambda:function"),
                    "region-tasks": _tagged("aws:ecs:task"),
                },
                "actions": {
                    "delay-invocations": {
                        "actionId": "aws:lambda:invocation-add-delay",
                        "description": "delay the facade and the workers",
                        "parameters": {"duration": duration, "invocationPercentage": "100", "startupDelayMilliseconds": "150"},
                        "targets": {"Functions": "region-functions"},
                    },
                    "task-network-latency": {
                        "actionId": "aws:ecs:task-network-latency",
                        "description": "slow the tasks' network",
                        "parameters": {"duration": duration, "delayMilliseconds": "50", "jitterMilliseconds": "0"},
                        "targets": {"Tasks": "region-tasks"},
                    },
                },
                "stopConditions": none_stop,
                "tags": {"Name": "latency"},
            },
        ),
        BuiltinTemplate(
            id="redis-failover",
            name=f"ElastiCache failover: {az}",
            description="The Redis primary's AZ loses power: connections drop, the live view reconnects and resyncs.",
            scenario="redis-failover",
            fidelity=Fidelity(
                "approximate",
                "Locally the channel-layer and snapshot connections are killed (CLIENT KILL) once; "
                "there is no replica promotion.",
                "aws:elasticache:replicationgroup-interrupt-az-power",
            ),
            body={
                "region": region,
                "description": f"Interrupt ElastiCache power in {az}",
                "targets": {
                    "replication-group": _tagged(
                        "aws:elasticache:replicationgroup", parameters={"availabilityZoneIdentifier": az}
                    )
                },
                "actions": {
                    "interrupt-az-power": {
                        "actionId": "aws:elasticache:replicationgroup-interrupt-az-power",
                        "description": f"interrupt power to the Redis nodes in {az}",
                        "parameters": {"duration": "PT1M" if duration == "PT2M" else duration},
                        "targets": {"ReplicationGroups": "replication-group"},
                    }
                },
                "stopConditions": none_stop,
                "tags": {"Name": "redis-failover"},
            },
        ),
    ]
    return tuple(found)


def builtin_template(config: ExchangeConfig, template_id: str) -> BuiltinTemplate | None:
    for template in builtin_templates(config):
        if template.id == template_id:
            return template
    return None


def with_duration(body: Mapping[str, Any], duration: str) -> dict[str, Any]:
    """A copy of a template body with every action's duration replaced (the UI's one knob)."""
    parse_duration(duration)
    copy = {**body, "actions": {}}
    for name, action in (body.get("actions") or {}).items():
        action = dict(action)
        params = dict(action.get("parameters") or {})
        if "duration" in params:
            params["duration"] = duration
            action["parameters"] = params
        copy["actions"][name] = action
    return copy


# --- export -----------------------------------------------------------------------------

EXPORT_FIELDS = ("description", "targets", "actions", "stopConditions", "roleArn", "tags", "experimentOptions")


def export_problems(body: Mapping[str, Any]) -> list[str]:
    """Why real FIS would refuse or mis-run this template; empty when it exports cleanly."""
    problems = []
    for name, action in (body.get("actions") or {}).items():
        params = action.get("parameters") or {}
        if action.get("actionId") == "aws:fis:inject-api-throttle-error" and params.get("service") not in {"ec2", "kinesis"}:
            problems.append(
                f"action {name}: real FIS injects API throttling only for ec2 and kinesis, "
                f"not {params.get('service')!r} (simulated-only)"
            )
    for name, target in (body.get("targets") or {}).items():
        for arn in target.get("resourceArns") or []:
            if f":{ACCOUNT}:" in arn:
                problems.append(f"target {name}: {arn} names a simulated resource; target by tags instead")
    return problems


def export_template(
    template: BuiltinTemplate | Mapping[str, Any], role_arn: str, alarm_arns: Sequence[str] = ()
) -> dict[str, Any]:
    """The CreateExperimentTemplate request for real FIS; NotExportable if it cannot be one."""
    body = template.body if isinstance(template, BuiltinTemplate) else template
    problems = export_problems(body)
    if not _ROLE_ARN.match(role_arn or ""):
        problems.append(f"roleArn {role_arn!r} is not an IAM role ARN (FIS needs a role to act with)")
    for arn in alarm_arns:
        match = _ARN.match(arn)
        if not match or match.group(1) != "cloudwatch" or ":alarm:" not in arn:
            problems.append(f"stop condition {arn!r} is not a CloudWatch alarm ARN")
    if problems:
        raise NotExportable(problems)
    exported: dict[str, Any] = {key: _plain(body[key]) for key in EXPORT_FIELDS if key in body}
    exported["roleArn"] = role_arn
    exported["stopConditions"] = (
        [{"source": "aws:cloudwatch:alarm", "value": arn} for arn in alarm_arns] if alarm_arns else [{"source": "none"}]
    )
    tags = dict(exported.get("tags") or {})
    if isinstance(template, BuiltinTemplate):
        tags.setdefault("exchange:template", template.id)
    if body.get("region"):
        tags.setdefault("exchange:region", str(body["region"]))
    exported["tags"] = tags
    return exported


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
