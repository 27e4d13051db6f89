"""The experiment state machine, target resolution, effects and blast radius: pure, clock driven."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from faults.experiment import (
    FINAL_ACTION_STATES,
    Alarm,
    AlarmWatch,
    AzDown,
    Experiment,
    Partition,
    RegionDown,
    StopTasks,
    blast_radius,
    effects_of,
    resolve_targets,
    schedule,
)
from faults.templates import builtin_template, validate_template
from tests.conftest import make_config

CONFIG = make_config()


def plan_of(body: dict[str, Any]) -> Any:
    return validate_template(body, CONFIG, ["test-alarm"])


def builtin_plan(template_id: str, duration: str = "PT2M") -> Any:
    from faults.templates import with_duration

    return plan_of(with_duration(builtin_template(CONFIG, template_id).body, duration))  # type: ignore[union-attr]


def waits(*specs: tuple[str, int, list[str]]) -> dict[str, Any]:
    return {
        "region": "us-east-1",
        "description": "waits",
        "actions": {
            name: {"actionId": "aws:fis:wait", "parameters": {"duration": f"PT{seconds}S"}, "startAfter": after}
            for name, seconds, after in specs
        },
        "stopConditions": [{"source": "none"}],
    }


def experiment_of(plan: Any, seed: int = 1) -> Experiment:
    return Experiment(id="EXP1", plan=plan, created_s=100.0, resolved=resolve_targets(plan, CONFIG, seed))


def transitions(changes: list[Any], subject: str = "experiment") -> list[str]:
    return [c.new for c in changes if c.subject == subject]


def test_it_walks_the_fis_states_to_completed() -> None:
    experiment = experiment_of(plan_of(waits(("first", 10, []), ("second", 5, ["first"]))))
    changes = experiment.advance(100.0)
    assert transitions(changes) == ["initiating", "running"]
    assert experiment.actions["first"].status == "running"
    assert experiment.actions["second"].status == "pending"
    assert experiment.advance(109.9) == []
    changes = experiment.advance(110.0)
    assert [(c.name, c.new) for c in changes if c.subject == "action"] == [
        ("first", "completed"), ("second", "initiating"), ("second", "running"),
    ]
    changes = experiment.advance(115.0)
    assert transitions(changes) == ["completed"]
    assert experiment.reason == "Experiment completed."
    assert experiment.end_s == 115.0


def test_it_keeps_the_schedule_when_ticks_are_late() -> None:
    experiment = experiment_of(plan_of(waits(("a", 10, []), ("b", 10, ["a"]), ("c", 10, ["b"]))))
    experiment.advance(0.0)
    experiment.advance(25.0)  # a ended at 10, b started at 10 and ended at 20, c started at 20
    assert experiment.actions["c"].start_s == 20.0
    assert experiment.actions["c"].status == "running"
    assert schedule(experiment.plan) == {"a": (0, 10), "b": (10, 20), "c": (20, 30)}


def test_it_stops_running_actions_and_cancels_pending_ones_with_the_reason() -> None:
    experiment = experiment_of(plan_of(waits(("a", 10, []), ("b", 10, ["a"]))))
    experiment.advance(0.0)
    changes = experiment.stop(3.0, "Stopped by an operator.")
    assert transitions(changes) == ["stopping"]
    assert experiment.actions["a"].status == "stopping"
    changes = experiment.advance(3.5)
    assert transitions(changes) == ["stopped"]
    assert experiment.reason == "Stopped by an operator."
    assert experiment.actions["a"].status == "stopped"
    assert experiment.actions["b"].status == "cancelled"


def test_it_cancels_an_experiment_stopped_before_it_ran() -> None:
    experiment = experiment_of(plan_of(waits(("a", 10, []))))
    changes = experiment.stop(0.0, "changed my mind")
    assert transitions(changes) == ["cancelled"]
    assert experiment.advance(1.0) == []


def test_it_fails_when_a_target_matches_nothing() -> None:
    body = builtin_template(CONFIG, "az-loss").body  # type: ignore[union-attr]
    body = {**body, "targets": {**body["targets"], "az-tasks": {**body["targets"]["az-tasks"], "resourceTags": {"team": "nobody"}}}}
    experiment = experiment_of(plan_of(body))
    changes = experiment.advance(0.0)
    assert transitions(changes) == ["initiating", "failed"]
    assert "az-tasks matched no resources" in experiment.reason
    assert all(run.status == "cancelled" for run in experiment.actions.values())


def test_it_skips_actions_without_targets_when_told_to() -> None:
    body = builtin_template(CONFIG, "az-loss").body  # type: ignore[union-attr]
    body = {
        **body,
        "targets": {**body["targets"], "az-tasks": {**body["targets"]["az-tasks"], "resourceTags": {"team": "nobody"}}},
        "experimentOptions": {"emptyTargetResolutionMode": "skip"},
    }
    experiment = experiment_of(plan_of(body))
    experiment.advance(0.0)
    assert experiment.actions["stop-az-tasks"].status == "skipped"
    assert experiment.actions["isolate-az"].status == "running"


def test_it_fails_the_experiment_when_an_action_cannot_be_applied() -> None:
    experiment = experiment_of(plan_of(waits(("a", 10, []), ("b", 10, []), ("c", 5, ["a"]))))
    experiment.advance(0.0)
    experiment.fail(1.0, "a", "boom")
    experiment.advance(1.0)
    assert experiment.status == "failed"
    assert experiment.actions["a"].status == "failed"
    assert experiment.actions["b"].status == "stopped"
    assert experiment.actions["c"].status == "cancelled"


def test_it_completes_instant_actions_in_the_tick_they_start() -> None:
    experiment = experiment_of(builtin_plan("az-loss", "PT30S"))
    changes = experiment.advance(0.0)
    stop_task = [c.new for c in changes if c.name == "stop-az-tasks"]
    assert stop_task == ["initiating", "running", "completed"]
    assert experiment.actions["isolate-az"].status == "running"


def test_it_resolves_az_loss_to_the_az_worker_and_subnet() -> None:
    plan = builtin_plan("az-loss")
    resolved = resolve_targets(plan, CONFIG, 1)
    assert [r.az for r in resolved["az-tasks"]] == ["us-east-1a"]
    assert effects_of(plan.actions["stop-az-tasks"], plan, resolved, CONFIG) == (StopTasks("us-east-1a"),)
    assert effects_of(plan.actions["isolate-az"], plan, resolved, CONFIG) == (AzDown("us-east-1a"),)


def test_it_takes_a_region_down_when_every_subnet_is_cut() -> None:
    plan = builtin_plan("region-outage")
    resolved = resolve_targets(plan, CONFIG, 1)
    effects = effects_of(plan.actions["isolate-region"], plan, resolved, CONFIG)
    assert RegionDown("us-east-1") in effects
    assert effects_of(plan.actions["pause-replication"], plan, resolved, CONFIG) == (Partition("eu-west-1", "us-east-1"),)


def test_it_previews_the_blast_radius() -> None:
    radius = blast_radius(builtin_plan("az-loss"), CONFIG, 1)
    assert radius["regions"] == ["us-east-1"]
    assert radius["azs"] == ["us-east-1a"]
    assert radius["workers"] == ["us-east-1a"]
    assert radius["queues"] == ["exchange-orders-us-east-1.fifo"]
    assert radius["duration_s"] == 120
    partition = blast_radius(builtin_plan("partition"), CONFIG, 1)
    assert partition["partitions"] == [["eu-west-1", "us-east-1"]]
    assert partition["workers"] == []


def test_it_selects_count_targets_the_same_way_for_the_same_seed() -> None:
    body = builtin_template(CONFIG, "cpu-spike").body  # type: ignore[union-attr]
    body = {**body, "targets": {"region-tasks": {**body["targets"]["region-tasks"], "selectionMode": "COUNT(1)"}}}
    plan = plan_of(body)
    picks = {seed: resolve_targets(plan, CONFIG, seed)["region-tasks"] for seed in range(20)}
    assert all(len(p) == 1 for p in picks.values())
    assert resolve_targets(plan, CONFIG, 7)["region-tasks"] == picks[7]
    assert len({p[0].az for p in picks.values()}) == 2


def test_it_goes_into_alarm_only_after_the_breach_lasts() -> None:
    watch = AlarmWatch(Alarm("test-alarm", "time_to_accept_p99_ms", Decimal("100"), 5))
    assert watch.observe(0, {"time_to_accept_p99_ms": 500}) is None
    assert watch.observe(4, {"time_to_accept_p99_ms": 500}) is None
    assert watch.observe(4.5, {"time_to_accept_p99_ms": 50}) is None  # recovered: the clock restarts
    assert watch.observe(5, {"time_to_accept_p99_ms": 500}) is None
    reason = watch.observe(10, {"time_to_accept_p99_ms": 500})
    assert reason is not None and "test-alarm" in reason
    assert watch.observe(11, {"time_to_accept_p99_ms": None}) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 600), st.sets(st.integers(0, 7), max_size=3)), min_size=1, max_size=8), st.lists(st.floats(0.1, 90), max_size=40))
def test_it_runs_any_chain_to_completion_in_dependency_order(specs: list[tuple[int, set[int]]], steps: list[float]) -> None:
    # Only earlier actions may be waited for, so there is never a cycle.
    chain = [(f"a{i}", seconds, [f"a{j}" for j in sorted(after) if j < i]) for i, (seconds, after) in enumerate(specs)]
    experiment = experiment_of(plan_of(waits(*chain)))
    now = 0.0
    experiment.advance(now)
    for step in steps:
        now += step
        experiment.advance(now)
    experiment.advance(now + 10_000)
    assert experiment.status == "completed"
    expected = schedule(experiment.plan)
    for name, run in experiment.actions.items():
        assert run.status in FINAL_ACTION_STATES
        assert (run.start_s, run.end_s) == expected[name]
        for before in run.action.start_after:
            assert experiment.actions[before].end_s <= run.start_s  # type: ignore[operator]
