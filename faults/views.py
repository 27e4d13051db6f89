"""The experiment panel: staff-only function views over the runner; the socket does the rest.

Starting, stopping and stop-all answer with a short notice; the new state reaches every
open page as an `experiment.state` frame on /ws/dashboard/ (trading/fragments.py).
"""

from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from faults import panel
from faults.runner import ExperimentNotFound, ExperimentRunner, TooManyExperiments, get_runner
from faults.templates import TemplateInvalid
from trading.auth import staff_page

DURATIONS = (("PT30S", "30 s"), ("PT1M", "1 min"), ("PT2M", "2 min"), ("PT5M", "5 min"))
DEFAULT_DURATION = "PT2M"
HISTORY_SHOWN = 30



staff_required = staff_page("faults/forbidden.html")


def now_ms() -> int:
    return int(time.time() * 1000)


def _runner_or_503(request: HttpRequest) -> tuple[ExperimentRunner | None, HttpResponse | None]:
    runner = get_runner()
    if runner is None:
        return None, render(request, "faults/fragments.html#notice", {"error": "The fault runner is not running in this process."}, status=503)
    return runner, None


def panel_context(runner: ExperimentRunner) -> dict[str, Any]:
    from exchange_ui.runtime import get_runtime

    runtime = get_runtime()
    history = runner.history()[:HISTORY_SHOWN]
    moment = now_ms()
    return {
        "templates": runner.templates(),
        "durations": DURATIONS,
        "default_duration": DEFAULT_DURATION,
        "experiments": [panel.experiment_context(x, moment) for x in history],
        "running_count": sum(1 for x in history if not panel.is_final(x)),
        "fault_words": panel.fault_summary(runner.plane.snapshot()),
        "regions": runtime.regions(),
        "m": runtime.last_metrics or {},
    }


@require_GET
@staff_required
def experiment_panel(request: HttpRequest) -> HttpResponse:
    runner = get_runner()
    if runner is None:
        return render(request, "faults/panel.html", {"unavailable": True}, status=503)
    return render(request, "faults/panel.html", panel_context(runner))


@require_GET
@staff_required
def panel_snapshot(request: HttpRequest) -> HttpResponse:
    """The resync after a socket gap or reconnect: every run and the live figures, out of band."""
    runner, unavailable = _runner_or_503(request)
    if unavailable:
        return unavailable
    assert runner is not None
    return render(request, "faults/fragments.html#snapshot", panel_context(runner))


def _run_request(request: HttpRequest, template_id: str) -> dict[str, Any]:
    duration = request.POST.get("duration") or request.GET.get("duration") or DEFAULT_DURATION
    wanted = {"template": template_id, "duration": duration}
    if (request.POST.get("idempotency") or request.GET.get("idempotency")) == "off":
        wanted["idempotency"] = "off"
    return wanted


@require_GET
@staff_required
def preview(request: HttpRequest, template_id: str) -> HttpResponse:
    runner, unavailable = _runner_or_503(request)
    if unavailable:
        return unavailable
    assert runner is not None
    wanted = _run_request(request, template_id)
    try:
        radius = runner.preview(wanted)
    except TemplateInvalid as invalid:
        return render(request, "faults/fragments.html#preview", {"tid": template_id, "errors": invalid.errors}, status=400)
    return render(
        request,
        "faults/fragments.html#preview",
        {"tid": template_id, "radius": radius, "duration": wanted["duration"], "idempotency_off": wanted.get("idempotency") == "off"},
    )


@require_POST
@staff_required
def start(request: HttpRequest, template_id: str) -> HttpResponse:
    runner, unavailable = _runner_or_503(request)
    if unavailable:
        return unavailable
    assert runner is not None
    try:
        started = runner.submit(_run_request(request, template_id))
    except TemplateInvalid as invalid:
        return render(request, "faults/fragments.html#preview", {"tid": template_id, "errors": invalid.errors}, status=400)
    except TooManyExperiments as full:
        return render(request, "faults/fragments.html#too-many", {"tid": template_id, "full": full}, status=409)
    return render(request, "faults/fragments.html#started", {"tid": template_id, "x": started})


@require_POST
@staff_required
def stop(request: HttpRequest, experiment_id: str) -> HttpResponse:
    runner, unavailable = _runner_or_503(request)
    if unavailable:
        return unavailable
    assert runner is not None
    try:
        stopped = runner.stop(experiment_id)
    except ExperimentNotFound:
        return render(request, "faults/fragments.html#notice", {"error": f"No experiment {experiment_id[:40]}."}, status=404)
    return render(request, "faults/fragments.html#experiment", {**panel.experiment_context(stopped, now_ms()), "oob": False})


@require_POST
@staff_required
def stop_all(request: HttpRequest) -> HttpResponse:
    runner, unavailable = _runner_or_503(request)
    if unavailable:
        return unavailable
    assert runner is not None
    stopped = runner.stop_all()
    return render(request, "faults/fragments.html#stop-all-result", {"stopped": stopped})
