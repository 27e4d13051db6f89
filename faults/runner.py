"""Runs experiments: ticks the pure state machine with the real clock, applies the faults.

One background thread. Each tick advances every live experiment, applies the effects of
actions that started and removes those of actions that ended, evaluates the stop
conditions over the live metrics, and publishes `experiment.state` after each change.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from faults.experiment import (
    DEFAULT_ALARMS,
    Alarm,
    AlarmWatch,
    Change,
    Experiment,
    IdempotencyOff,
    blast_radius,
    effects_of,
    resolve_targets,
)
from faults.injection import FaultPlane
from faults.panel import fault_window
from faults.templates import TemplateInvalid, builtin_template, builtin_templates, validate_template, with_duration
from trading import events
from trading.config import ExchangeConfig

log = logging.getLogger(__name__)

# An experiment tagged exchange:idempotency=off turns the facade's idempotency off while
# it runs (the CPU-spike game day: watch the retries become duplicates).
IDEMPOTENCY_TAG = "exchange:idempotency"

Metrics = Callable[[], Mapping[str, Any]]
Publish = Callable[[str, str, dict[str, Any]], Any]


class ExperimentNotFound(KeyError):
    pass


class TooManyExperiments(Exception):
    """Starting one more would take the experiments not yet final past the cap."""

    def __init__(self, running: int, limit: int):
        self.running = running
        self.limit = limit
        super().__init__(
            f"{running} experiment(s) are already pending or running, the most this exchange runs at once "
            f"(EXCHANGE_MAX_EXPERIMENTS={limit}); stop one or wait for one to end"
        )


class ExperimentRunner:
    def __init__(
        self,
        plane: FaultPlane,
        config: ExchangeConfig,
        metrics: Metrics = lambda: {},
        alarms: Sequence[Alarm] = DEFAULT_ALARMS,
        clock: Callable[[], float] = time.time,
        tick_s: float = 0.2,
        seed: int | None = None,
        publish: Publish = events.publish,
        history_limit: int = 200,
        max_running: int | None = None,
    ):
        self.plane = plane
        self.config = config
        self.metrics = metrics
        self.alarms = {alarm.name: alarm for alarm in alarms}
        self.clock = clock
        self.tick_s = tick_s
        self.seed = config.seed if seed is None else seed
        self.publish = publish
        self.history_limit = history_limit
        self.max_running = config.max_experiments if max_running is None else max_running
        self._lock = threading.RLock()
        self._experiments: dict[str, Experiment] = {}
        self._watches: dict[str, list[AlarmWatch]] = {}
        self._radius: dict[str, dict[str, Any]] = {}
        self._fidelity: dict[str, dict[str, str] | None] = {}
        self._count = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> ExperimentRunner:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fault-runner", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop every experiment, remove every fault, end the thread."""
        self.stop_all("The fault runner shut down.")
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.plane.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the lever must keep working whatever one tick hit
                log.exception("fault runner tick failed")
            self._wake.wait(self.tick_s)
            self._wake.clear()

    # -- templates and submission ---------------------------------------------------------------

    def templates(self) -> list[dict[str, Any]]:
        found = []
        for template in builtin_templates(self.config):
            entry = template.as_dict()
            entry["blast_radius"] = blast_radius(self._validate(template.body), self.config, self.seed)
            found.append(entry)
        return found

    def _validate(self, body: Any) -> Any:
        return validate_template(body, self.config, alarm_names=list(self.alarms))

    def resolve_request(self, request: Any) -> tuple[dict[str, Any], str | None, dict[str, str] | None]:
        """(template body, built-in id, fidelity) from an FIS body or {"template": id, ...}."""
        if isinstance(request, dict) and "template" in request and "actions" not in request:
            unknown = sorted(set(request) - {"template", "region", "duration", "idempotency"})
            if unknown:
                raise TemplateInvalid(
                    {key: ["is not an option of a built-in template run (template, duration, idempotency)"] for key in unknown}
                )
            template = builtin_template(self.config, str(request["template"])) if isinstance(request["template"], str) else None
            if template is None:
                known = ", ".join(t.id for t in builtin_templates(self.config))
                raise TemplateInvalid({"template": [f"names no built-in template; known: {known}"]})
            body = dict(template.body)
            if "region" in request:
                raise TemplateInvalid({"region": ["a built-in template names its own region; post the template body to aim it elsewhere"]})
            if "duration" in request:
                try:
                    body = with_duration(body, request["duration"])
                except ValueError as error:
                    raise TemplateInvalid({"duration": [str(error)]}) from None
            if "idempotency" in request:
                if request["idempotency"] not in ("on", "off"):
                    raise TemplateInvalid({"idempotency": ['must be "on" or "off"']})
                body["tags"] = {**dict(body.get("tags") or {}), IDEMPOTENCY_TAG: request["idempotency"]}
            return body, template.id, template.fidelity.as_dict()
        return request, None, None

    def preview(self, request: Any) -> dict[str, Any]:
        body, _, _ = self.resolve_request(request)
        return blast_radius(self._validate(body), self.config, self.seed)

    def submit(self, request: Any) -> dict[str, Any]:
        """Validate and queue an experiment; raises TemplateInvalid or, when `max_running`
        experiments are not final yet, TooManyExperiments (nothing runs)."""
        body, template_id, fidelity = self.resolve_request(request)
        plan = self._validate(body)
        now = self.clock()
        with self._lock:
            live = sum(1 for e in self._experiments.values() if not e.is_final)
            if live >= self.max_running:
                raise TooManyExperiments(live, self.max_running)
            self._count += 1
            experiment_seed = self.seed * 1_000_003 + self._count
            digest = hashlib.sha256(f"{self.seed}:{self._count}:{now}".encode()).hexdigest().upper()
            experiment = Experiment(
                id=f"EXP{digest[:17]}",
                plan=plan,
                created_s=now,
                resolved=resolve_targets(plan, self.config, experiment_seed),
                template_id=template_id,
            )
            self._experiments[experiment.id] = experiment
            self._radius[experiment.id] = blast_radius(plan, self.config, experiment_seed)
            self._fidelity[experiment.id] = fidelity
            self._watches[experiment.id] = [
                AlarmWatch(self.alarms[c.alarm_name]) for c in plan.stop_conditions if c.alarm_name in self.alarms
            ]
            self._trim()
            snapshot = self._snapshot(experiment)
        self._publish(experiment, snapshot, [])
        self._wake.set()
        return snapshot

    def _trim(self) -> None:
        finished = [e for e in self._experiments.values() if e.is_final]
        while len(self._experiments) > self.history_limit and finished:
            oldest = min(finished, key=lambda e: e.created_s)
            finished.remove(oldest)
            for table in (self._experiments, self._radius, self._fidelity, self._watches):
                table.pop(oldest.id, None)  # type: ignore[attr-defined]

    # -- reading --------------------------------------------------------------------------------

    def get(self, experiment_id: str) -> dict[str, Any]:
        with self._lock:
            experiment = self._experiments.get(experiment_id)
            if experiment is None:
                raise ExperimentNotFound(experiment_id)
            return self._snapshot(experiment)

    def history(self) -> list[dict[str, Any]]:
        with self._lock:
            ordered = sorted(self._experiments.values(), key=lambda e: e.created_s, reverse=True)
            return [self._snapshot(e) for e in ordered]

    def running(self) -> list[dict[str, Any]]:
        return [e for e in self.history() if e["state"]["status"] not in {"completed", "stopped", "failed", "cancelled"}]

    def _snapshot(self, experiment: Experiment) -> dict[str, Any]:
        data = experiment.as_dict()
        data["blast_radius"] = self._radius.get(experiment.id)
        data["fidelity"] = self._fidelity.get(experiment.id)
        return data

    # -- the levers -------------------------------------------------------------------------------

    def stop(self, experiment_id: str, reason: str = "Stopped by an operator.") -> dict[str, Any]:
        with self._lock:
            experiment = self._experiments.get(experiment_id)
            if experiment is None:
                raise ExperimentNotFound(experiment_id)
            now = self.clock()
            changes = experiment.stop(now, reason)
            changes += experiment.advance(now)
            self._apply(experiment, changes, now)
            snapshot = self._snapshot(experiment)
        self._publish(experiment, snapshot, changes)
        return snapshot

    def stop_all(self, reason: str = "Stopped by an operator (stop all).") -> list[dict[str, Any]]:
        with self._lock:
            live = [e.id for e in self._experiments.values() if not e.is_final]
        stopped = [self.stop(experiment_id, reason) for experiment_id in live]
        self.plane.clear()
        return stopped

    # -- the tick ---------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance every live experiment to now; apply and remove effects; check alarms."""
        try:
            metrics = dict(self.metrics())
        except Exception:
            log.exception("the metrics source failed; stop conditions see no data this tick")
            metrics = {}
        to_publish = []
        with self._lock:
            now = self.clock()
            for experiment in list(self._experiments.values()):
                if experiment.is_final:
                    continue
                changes = experiment.advance(now)
                if experiment.status == "running":
                    for watch in self._watches.get(experiment.id, []):
                        reason = watch.observe(now, metrics)
                        if reason:
                            changes += experiment.stop(now, reason)
                            changes += experiment.advance(now)
                            break
                self._apply(experiment, changes, now)
                if changes:
                    to_publish.append((experiment, self._snapshot(experiment), changes))
        self.plane.sync()
        for experiment, snapshot, changes in to_publish:
            self._publish(experiment, snapshot, changes)

    def _apply(self, experiment: Experiment, changes: list[Change], now: float) -> None:
        """Apply effects of actions that began running; remove those of actions that left it."""
        index = 0
        while index < len(changes):
            change = changes[index]
            index += 1
            if change.subject != "action":
                continue
            key = (experiment.id, change.name)
            if change.new == "running":
                action = experiment.plan.actions[change.name]
                try:
                    effects = effects_of(action, experiment.plan, experiment.resolved, self.config)
                    self.plane.apply(key, effects)
                    if str(experiment.plan.tags.get(IDEMPOTENCY_TAG, "")).lower() == "off":
                        # Held for the whole run: removed with the experiment's other effects.
                        self.plane.apply((experiment.id, IDEMPOTENCY_TAG), [IdempotencyOff()])
                except Exception as error:
                    log.exception("applying %s of %s failed", change.name, experiment.id)
                    self.plane.remove(key)
                    more = experiment.fail(now, change.name, f"{type(error).__name__}: {error}")
                    more += experiment.advance(now)
                    changes.extend(more)
            elif change.old == "running":
                self.plane.remove(key)
        if experiment.is_final:
            self.plane.remove_where(lambda key: isinstance(key, tuple) and key[0] == experiment.id)

    def _publish(self, experiment: Experiment, snapshot: dict[str, Any], changes: list[Change]) -> None:
        self.publish(
            events.EXPERIMENT_STATE,
            experiment.plan.region,
            {
                **snapshot,
                "changes": [c.as_dict() for c in changes],
                "faults": self.plane.snapshot(),
                # When its faults held, as the charts shade it: the part of the plan a trader sees.
                "fault_window": fault_window(snapshot),
            },
        )


_runner: ExperimentRunner | None = None


def set_runner(runner: ExperimentRunner | None) -> None:
    """The runtime calls this once it has built the fault plane and the runner."""
    global _runner
    _runner = runner


def get_runner() -> ExperimentRunner | None:
    return _runner
