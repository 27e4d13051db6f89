"""The experiment as FIS runs it: targets resolved, actions scheduled, states advanced.

Pure: the clock comes in as `now_s`, the randomness (COUNT/PERCENT selection) as a seed.
The runner ticks `advance(now_s)` with the real clock and applies the effects of the
actions that start and end; a test ticks it with any numbers it likes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Union

from faults.templates import ACCOUNT, APP_TAG, Action, Plan
from trading.markets import ExchangeConfig
from trading.names import queue_name, table_names

EXPERIMENT_STATES = ("pending", "initiating", "running", "completed", "stopping", "stopped", "failed", "cancelled")
ACTION_STATES = ("pending", "initiating", "running", "completed", "cancelled", "skipped", "stopping", "stopped", "failed")
FINAL_EXPERIMENT_STATES = frozenset({"completed", "stopped", "failed", "cancelled"})
FINAL_ACTION_STATES = frozenset({"completed", "cancelled", "skipped", "stopped", "failed"})


# --- the simulated resources ----------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    arn: str
    resource_type: str
    region: str  # "" for global resources (IAM)
    az: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    attrs: tuple[tuple[str, str], ...] = ()

    def attr(self, path: str) -> str | None:
        return dict(self.attrs).get(path)


def inventory(config: ExchangeConfig) -> tuple[Resource, ...]:
    """What the targets can select: the exchange's resources as FIS would see them."""
    tags = tuple(APP_TAG.items())
    found: list[Resource] = [
        Resource(f"arn:aws:iam::{ACCOUNT}:role/exchange-app", "aws:iam:role", "", tags=tags, attrs=(("RoleName", "exchange-app"),))
    ]
    for region in config.regions:
        for az in config.azs(region):
            found.append(
                Resource(
                    f"arn:aws:ecs:{region}:{ACCOUNT}:task/exchange-{region}/simfill-{az}",
                    "aws:ecs:task",
                    region,
                    az,
                    tags,
                    (("AvailabilityZone", az), ("availabilityZone", az), ("Group", "service:simfill")),
                )
            )
            found.append(
                Resource(
                    f"arn:aws:ec2:{region}:{ACCOUNT}:subnet/subnet-{az}",
                    "aws:ec2:subnet",
                    region,
                    az,
                    tags,
                    (("AvailabilityZone", az), ("SubnetId", f"subnet-{az}"), ("VpcId", f"vpc-{region}")),
                )
            )
        for role, table in table_names(config.table_prefix).items():
            if role != "sequences":
                found.append(
                    Resource(
                        f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{table}",
                        "aws:dynamodb:global-table",
                        region,
                        tags=tags,
                        attrs=(("TableName", table),),
                    )
                )
        for function in ("ingest", "simfill"):
            name = f"exchange-{function}-{region}"
            found.append(
                Resource(
                    f"arn:aws:lambda:{region}:{ACCOUNT}:function:{name}",
                    "aws:lambda:function",
                    region,
                    tags=tags,
                    attrs=(("FunctionName", name),),
                )
            )
        found.append(
            Resource(
                f"arn:aws:elasticache:{region}:{ACCOUNT}:replicationgroup:exchange-{region}",
                "aws:elasticache:replicationgroup",
                region,
                tags=tags,
                attrs=(("ReplicationGroupId", f"exchange-{region}"),),
            )
        )
    return tuple(found)


def resolve_targets(plan: Plan, config: ExchangeConfig, seed: int) -> dict[str, tuple[Resource, ...]]:
    """The resources each target selects, in the experiment's region; seeded for COUNT/PERCENT."""
    rng = random.Random(seed)
    resources = inventory(config)
    resolved: dict[str, tuple[Resource, ...]] = {}
    for name in sorted(plan.targets):
        target = plan.targets[name]
        matches = []
        for resource in resources:
            if resource.resource_type != target.resource_type or resource.region not in {plan.region, ""}:
                continue
            if target.resource_arns and resource.arn not in target.resource_arns:
                continue
            if target.resource_tags and not set(target.resource_tags) <= set(resource.tags):
                continue
            if any(resource.attr(path) not in values for path, values in target.filters):
                continue
            if target.parameter("cluster") and target.parameter("cluster") != f"exchange-{resource.region}":
                continue
            matches.append(resource)
        matches.sort(key=lambda r: r.arn)
        mode = target.selection_mode
        if mode.startswith("COUNT("):
            count = min(len(matches), int(mode[6:-1]))
            matches = sorted(rng.sample(matches, count), key=lambda r: r.arn)
        elif mode.startswith("PERCENT("):
            count = math.floor(len(matches) * int(mode[8:-1]) / 100)
            matches = sorted(rng.sample(matches, count), key=lambda r: r.arn)
        resolved[name] = tuple(matches)
    return resolved


# --- effects: what an action does to the simulated world -------------------------------


@dataclass(frozen=True)
class RegionDown:
    region: str


@dataclass(frozen=True)
class AzDown:
    az: str


@dataclass(frozen=True)
class StopTasks:
    """Instant: the AZ's worker stops; it restarts unless the AZ is held down."""

    az: str


@dataclass(frozen=True)
class Throttle:
    region: str
    service: str
    operations: frozenset[str]  # empty: every operation
    percentage: int


@dataclass(frozen=True)
class Latency:
    region: str
    delay_ms: int
    percentage: int


@dataclass(frozen=True)
class Partition:
    a: str
    b: str


@dataclass(frozen=True)
class CpuStress:
    az: str
    percent: int


@dataclass(frozen=True)
class RedisFailover:
    region: str
    az: str


@dataclass(frozen=True)
class IdempotencyOff:
    """The facade stops honouring Idempotency-Key (tag exchange:idempotency=off): a client's
    retry becomes a second order, which is what the CPU-spike game day shows in red."""

    reason: str = "exchange:idempotency=off"


Effect = Union[RegionDown, AzDown, StopTasks, Throttle, Latency, Partition, CpuStress, RedisFailover, IdempotencyOff]


def effects_of(action: Action, plan: Plan, resolved: Mapping[str, Sequence[Resource]], config: ExchangeConfig) -> tuple[Effect, ...]:
    """The local effects of one action on its resolved targets."""
    selected: list[Resource] = []
    for _, target_name in action.targets:
        selected.extend(resolved.get(target_name, ()))
    kind = action.action_id
    found: list[Effect] = []
    if kind == "aws:ecs:stop-task":
        found = [StopTasks(r.az) for r in selected]
    elif kind == "aws:network:disrupt-connectivity":
        azs = sorted({r.az for r in selected})
        found = [AzDown(az) for az in azs]
        for region in sorted({r.region for r in selected}):
            if set(config.azs(region)) <= set(azs):
                found.append(RegionDown(region))
    elif kind == "aws:network:route-table-disrupt-cross-region-connectivity":
        if selected:
            found = [Partition(*sorted((plan.region, action.parameter("region"))))]
    elif kind == "aws:dynamodb:global-table-pause-replication":
        for region in sorted({r.region for r in selected}):
            found += [Partition(*sorted((region, other))) for other in config.regions if other != region]
    elif kind == "aws:fis:inject-api-throttle-error":
        if selected:
            operations = frozenset(o.strip() for o in action.parameter("operations").split(",") if o.strip())
            found = [Throttle(plan.region, action.parameter("service"), operations, int(action.parameter("percentage")))]
    elif kind == "aws:ecs:task-cpu-stress":
        found = [CpuStress(r.az, int(action.parameter("percent", "100"))) for r in selected]
    elif kind == "aws:lambda:invocation-add-delay":
        delay = int(action.parameter("startupDelayMilliseconds", "0"))
        share = int(action.parameter("invocationPercentage", "100"))
        found = [Latency(region, delay, share) for region in sorted({r.region for r in selected})]
    elif kind == "aws:ecs:task-network-latency":
        delay = int(action.parameter("delayMilliseconds", "200")) + int(action.parameter("jitterMilliseconds", "0")) // 2
        found = [Latency(region, delay, 100) for region in sorted({r.region for r in selected})]
    elif kind == "aws:elasticache:replicationgroup-interrupt-az-power":
        for _, target_name in action.targets:
            az = plan.targets[target_name].parameter("availabilityZoneIdentifier")
            found += [RedisFailover(r.region, az) for r in resolved.get(target_name, ())]
    return tuple(dict.fromkeys(found))  # unique, in order


def effect_as_dict(effect: Effect) -> dict[str, Any]:
    data: dict[str, Any] = {"kind": type(effect).__name__}
    for key, value in effect.__dict__.items():
        data[key] = sorted(value) if isinstance(value, frozenset) else value
    return data


# --- schedule and blast radius ----------------------------------------------------------


def schedule(plan: Plan) -> dict[str, tuple[int, int]]:
    """Each action's (start, end) offset in seconds from the experiment's start."""
    found: dict[str, tuple[int, int]] = {}

    def place(name: str, seen: frozenset[str]) -> tuple[int, int]:
        if name in found:
            return found[name]
        action = plan.actions[name]
        start = max((place(n, seen | {name})[1] for n in action.start_after if n not in seen), default=0)
        found[name] = (start, start + action.duration_s)
        return found[name]

    for name in plan.actions:
        place(name, frozenset())
    return found


def blast_radius(plan: Plan, config: ExchangeConfig, seed: int) -> dict[str, Any]:
    """What the experiment would touch: regions, AZs, workers, queues, tables, pairs."""
    resolved = resolve_targets(plan, config, seed)
    effects = [e for action in plan.actions.values() for e in effects_of(action, plan, resolved, config)]
    regions: set[str] = set()
    azs: set[str] = set()
    workers: set[str] = set()
    tables: set[str] = set()
    partitions: set[tuple[str, str]] = set()
    for effect in effects:
        if isinstance(effect, RegionDown):
            regions.add(effect.region)
            azs.update(config.azs(effect.region))
            workers.update(config.azs(effect.region))
            tables.update(_tables(config, effect.region))
        elif isinstance(effect, (AzDown, StopTasks, CpuStress)):
            azs.add(effect.az)
            workers.add(effect.az)
        elif isinstance(effect, Throttle):
            regions.add(effect.region)
            if effect.service == "dynamodb":
                tables.update(_tables(config, effect.region))
        elif isinstance(effect, Latency):
            regions.add(effect.region)
            workers.update(config.azs(effect.region))
        elif isinstance(effect, Partition):
            partitions.add((effect.a, effect.b))
            regions.update((effect.a, effect.b))
        elif isinstance(effect, RedisFailover):
            regions.add(effect.region)
            azs.add(effect.az)
    regions.update(az_region(config, az) for az in azs)
    queue_regions = {az_region(config, w) for w in workers} | {e.region for e in effects if isinstance(e, (RegionDown, Throttle))}
    queue_regions |= {e.region for e in effects if isinstance(e, Throttle) and e.service == "sqs"}
    when = schedule(plan)
    return {
        "region": plan.region,
        "regions": sorted(regions),
        "azs": sorted(azs),
        "workers": sorted(workers),
        "queues": sorted(queue_name(config.table_prefix, r) for r in queue_regions if r),
        "tables": sorted(tables),
        "partitions": [list(p) for p in sorted(partitions)],
        "targets": {name: [r.arn for r in found] for name, found in resolved.items()},
        "effects": [effect_as_dict(e) for e in dict.fromkeys(effects)],
        "schedule": {name: {"start_s": start, "end_s": end} for name, (start, end) in when.items()},
        "duration_s": max((end for _, end in when.values()), default=0),
    }


def _tables(config: ExchangeConfig, region: str) -> list[str]:
    return [f"{region}/{name}" for name in table_names(config.table_prefix).values()]


def az_region(config: ExchangeConfig, az: str) -> str:
    for region in config.regions:
        if az in config.azs(region):
            return region
    return ""


# --- the state machine ------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    subject: str  # experiment | action
    name: str
    old: str
    new: str
    reason: str
    at_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "name": self.name, "from": self.old, "to": self.new, "reason": self.reason, "at_s": self.at_s}


@dataclass
class ActionRun:
    action: Action
    status: str = "pending"
    reason: str = ""
    start_s: float | None = None
    end_s: float | None = None
    due_s: float | None = None


@dataclass
class Experiment:
    """One run of a Plan. Mutated only through advance(), stop() and fail()."""

    id: str
    plan: Plan
    created_s: float
    resolved: Mapping[str, tuple[Resource, ...]]
    template_id: str | None = None
    status: str = "pending"
    reason: str = ""
    start_s: float | None = None
    end_s: float | None = None
    actions: dict[str, ActionRun] = field(default_factory=dict)
    _ending_as: str = "stopped"

    def __post_init__(self) -> None:
        if not self.actions:
            self.actions = {name: ActionRun(action) for name, action in self.plan.actions.items()}

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_EXPERIMENT_STATES

    def _set(self, changes: list[Change], now_s: float, status: str, reason: str) -> None:
        changes.append(Change("experiment", self.id, self.status, status, reason, now_s))
        self.status, self.reason = status, reason

    def _set_action(self, changes: list[Change], run: ActionRun, now_s: float, status: str, reason: str) -> None:
        changes.append(Change("action", run.action.name, run.status, status, reason, now_s))
        run.status, run.reason = status, reason

    def _empty_targets(self, run: ActionRun) -> list[str]:
        return [t for _, t in run.action.targets if not self.resolved.get(t)]

    def advance(self, now_s: float) -> list[Change]:
        changes: list[Change] = []
        if self.status == "pending":
            self._set(changes, now_s, "initiating", "Resolving targets.")
        if self.status == "initiating":
            empty = sorted({t for run in self.actions.values() for t in self._empty_targets(run)})
            if empty and self.plan.empty_target_mode == "fail":
                for run in self.actions.values():
                    self._set_action(changes, run, now_s, "cancelled", "Target resolution failed.")
                self._set(changes, now_s, "failed", f"Target resolution failed: {', '.join(empty)} matched no resources.")
                self.end_s = now_s
                return changes
            self.start_s = now_s
            self._set(changes, now_s, "running", "Experiment is running.")
        if self.status == "running":
            self._run_actions(changes, now_s)
            if all(run.status in FINAL_ACTION_STATES for run in self.actions.values()):
                failed = [r.action.name for r in self.actions.values() if r.status == "failed"]
                if failed:
                    self._set(changes, now_s, "failed", f"Action {failed[0]} failed.")
                else:
                    self._set(changes, now_s, "completed", "Experiment completed.")
                self.end_s = now_s
        if self.status == "stopping":
            for run in self.actions.values():
                if run.status in {"stopping", "running", "initiating"}:
                    run.end_s = now_s
                    self._set_action(changes, run, now_s, "stopped", run.reason or "Experiment stopped.")
                elif run.status == "pending":
                    self._set_action(changes, run, now_s, "cancelled", "Experiment stopped before the action started.")
            self._set(changes, now_s, self._ending_as, self.reason)
            self.end_s = now_s
        return changes

    def _run_actions(self, changes: list[Change], now_s: float) -> None:
        progressed = True
        while progressed:
            progressed = False
            for run in self.actions.values():
                if run.status == "running" and run.due_s is not None and now_s >= run.due_s:
                    run.end_s = run.due_s
                    self._set_action(changes, run, now_s, "completed", "Action completed.")
                    progressed = True
                elif run.status == "pending":
                    before = [self.actions[n] for n in run.action.start_after]
                    if any(b.status in {"failed", "cancelled", "stopped"} for b in before):
                        self._set_action(changes, run, now_s, "cancelled", "An action it starts after did not complete.")
                        progressed = True
                    elif all(b.status in {"completed", "skipped"} for b in before):
                        # Start at the logical end of what it waited for, so the schedule does not drift with ticks.
                        start = max([b.end_s for b in before if b.end_s is not None] + [now_s if self.start_s is None else self.start_s])
                        if self._empty_targets(run):
                            run.start_s = run.end_s = start
                            self._set_action(changes, run, now_s, "skipped", "No targets found.")
                        else:
                            run.start_s, run.due_s = start, start + run.action.duration_s
                            self._set_action(changes, run, now_s, "initiating", "Action is starting.")
                            self._set_action(changes, run, now_s, "running", "Action is running.")
                        progressed = True

    def stop(self, now_s: float, reason: str) -> list[Change]:
        """Stop now: pending experiments are cancelled, running ones stop their actions."""
        changes: list[Change] = []
        if self.is_final or self.status == "stopping":
            return changes
        if self.status in {"pending", "initiating"}:
            for run in self.actions.values():
                self._set_action(changes, run, now_s, "cancelled", reason)
            self._set(changes, now_s, "cancelled", reason)
            self.end_s = now_s
            return changes
        self._ending_as = "stopped"
        for run in self.actions.values():
            if run.status in {"running", "initiating"}:
                self._set_action(changes, run, now_s, "stopping", reason)
        self._set(changes, now_s, "stopping", reason)
        return changes

    def fail(self, now_s: float, action_name: str, reason: str) -> list[Change]:
        """An action could not be applied: it fails, the others stop, the experiment fails."""
        changes: list[Change] = []
        if self.is_final:
            return changes
        run = self.actions.get(action_name)
        if run is not None and run.status not in FINAL_ACTION_STATES:
            run.end_s = now_s
            self._set_action(changes, run, now_s, "failed", reason)
        for other in self.actions.values():
            if other.status in {"running", "initiating"}:
                self._set_action(changes, other, now_s, "stopping", "Another action failed.")
        self._ending_as = "failed"
        self._set(changes, now_s, "stopping", f"Action {action_name} failed: {reason}")
        return changes

    def as_dict(self, to_ms: Any = None) -> dict[str, Any]:
        def ms(value: float | None) -> int | None:
            return None if value is None else int(value * 1000)

        return {
            "id": self.id,
            "template_id": self.template_id,
            "description": self.plan.description,
            "region": self.plan.region,
            "state": {"status": self.status, "reason": self.reason},
            "creation_time": ms(self.created_s),
            "start_time": ms(self.start_s),
            "end_time": ms(self.end_s),
            "actions": {
                name: {
                    "action_id": run.action.action_id,
                    "description": run.action.description,
                    "parameters": dict(run.action.parameters),
                    "targets": dict(run.action.targets),
                    "start_after": list(run.action.start_after),
                    "duration_s": run.action.duration_s,
                    "state": {"status": run.status, "reason": run.reason},
                    "start_time": ms(run.start_s),
                    "end_time": ms(run.end_s),
                }
                for name, run in self.actions.items()
            },
            "targets": {name: [r.arn for r in found] for name, found in self.resolved.items()},
            "stop_conditions": [{"source": s.source, "value": s.value} for s in self.plan.stop_conditions],
            "tags": dict(self.plan.tags),
        }


# --- stop conditions -------------------------------------------------------------------


@dataclass(frozen=True)
class Alarm:
    """A local stand-in for a CloudWatch alarm: metric above threshold for `for_s` seconds."""

    name: str
    metric: str
    threshold: Decimal
    for_s: float
    description: str = ""

    def arn(self, region: str) -> str:
        return f"arn:aws:cloudwatch:{region}:{ACCOUNT}:alarm:{self.name}"


DEFAULT_ALARMS: tuple[Alarm, ...] = (
    Alarm("exchange-accept-p99-high", "time_to_accept_p99_ms", Decimal("2000"), 10, "time-to-accept p99 above 2 s for 10 s"),
    Alarm("exchange-queued-high", "queued_events", Decimal("500"), 15, "more than 500 queued events for 15 s"),
    Alarm("exchange-awaiting-fill-high", "awaiting_fill", Decimal("200"), 15, "more than 200 orders awaiting fill for 15 s"),
    Alarm("exchange-divergence-high", "tape_divergence", Decimal("50"), 30, "more than 50 divergent trades for 30 s"),
)


def metric_value(metrics: Mapping[str, Any], name: str) -> Decimal | None:
    value = metrics.get(name)
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


@dataclass
class AlarmWatch:
    """Tracks one alarm over time; `observe` says when it goes into alarm."""

    alarm: Alarm
    breach_since_s: float | None = None

    def observe(self, now_s: float, metrics: Mapping[str, Any]) -> str | None:
        value = metric_value(metrics, self.alarm.metric)
        if value is None or value <= self.alarm.threshold:
            self.breach_since_s = None
            return None
        if self.breach_since_s is None:
            self.breach_since_s = now_s
        if now_s - self.breach_since_s >= self.alarm.for_s:
            return (
                f"Stop condition {self.alarm.name} in alarm: {self.alarm.metric} = {value} "
                f"> {self.alarm.threshold} for {self.alarm.for_s:g}s"
            )
        return None
