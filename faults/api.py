"""JSON API for experiments, mounted at /api/experiments (auth=trading.auth.API_AUTH).

Every endpoint is staff-only. Bodies are parsed here rather than by a schema so that an
FIS template of any shape is answered with per-field errors, never a 500.
"""

from __future__ import annotations

from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, JsonResponse
from ninja import Router
from ninja.errors import HttpError

from exchange_ui.api_input import BodyNotJson, read_json_body
from faults.runner import ExperimentNotFound, ExperimentRunner, TooManyExperiments, get_runner
from faults.templates import TemplateInvalid
from trading.auth import require_staff

router = Router(tags=["experiments"])

def _json(data: Any, status: int = 200) -> JsonResponse:
    return JsonResponse(data, status=status, safe=False, encoder=DjangoJSONEncoder)


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return _json({"error": code, "detail": detail}, status)


def _guard(request: HttpRequest) -> tuple[ExperimentRunner | None, JsonResponse | None]:
    try:
        require_staff(request)
    except HttpError as error:
        return None, _error(error.status_code, "forbidden", str(error) or "staff only")
    runner = get_runner()
    if runner is None:
        return None, _error(503, "fault_plane_unavailable", "the fault runner is not running in this process")
    return runner, None


def _body(request: HttpRequest) -> tuple[Any, JsonResponse | None]:
    # Over the upload limit, read_json_body raises RequestDataTooBig: a 413 from exchange_ui/api.py.
    try:
        return read_json_body(request), None
    except BodyNotJson as not_json:
        return None, _json({"errors": {"body": [f"{not_json} Send an FIS experiment template or {{\"template\": id}}."]}}, 400)


@router.get("/templates", summary="The built-in FIS experiment templates")
def list_templates(request: HttpRequest) -> JsonResponse:
    runner, denied = _guard(request)
    if denied:
        return denied
    assert runner is not None
    return _json(runner.templates())


@router.get("", summary="Experiments run in this process, newest first")
def list_experiments(request: HttpRequest) -> JsonResponse:
    runner, denied = _guard(request)
    if denied:
        return denied
    assert runner is not None
    return _json(runner.history())


@router.post("", summary="Start an experiment from an FIS template body or {\"template\": id}")
def start_experiment(request: HttpRequest) -> JsonResponse:
    runner, denied = _guard(request)
    if denied:
        return denied
    assert runner is not None
    body, bad = _body(request)
    if bad:
        return bad
    try:
        return _json(runner.submit(body), 201)
    except TemplateInvalid as invalid:
        return _json({"errors": invalid.errors}, 400)
    except TooManyExperiments as full:
        return _json({"error": "too_many_experiments", "detail": str(full), "running": full.running, "limit": full.limit}, 409)


@router.post("/preview", summary="The blast radius of a template, without running it")
def preview_experiment(request: HttpRequest) -> JsonResponse:
    runner, denied = _guard(request)
    if denied:
        return denied
    assert runner is not None
    body, bad = _body(request)
    if bad:
        return bad
    try:
        return _json(runner.preview(body))
    except TemplateInvalid as invalid:
        return _json({"errors": invalid.errors}, 400)


@router.get("/faults", summary="The faults active right now")
def active_faults(request: HttpRequest) -> JsonResponse:
    runner, denied = _guard(request)
    if denied:
        return denied
    assert runner is not None
    return _json(runner.plane.snapshot())


@router.post("/stop-all", summary="Stop every running experiment and remove every fault")
def stop_all(request: HttpRequest) -> JsonResponse:
    runner, denied = _guard(request)
    if denied:
        return denied
    assert runner is not None
    return _json({"stopped": runner.stop_all()})


@router.get("/{experiment_id}", summary="An experiment's state and its actions' states")
def get_experiment(request: HttpRequest, experiment_id: str) -> JsonResponse:
    runner, denied = _guard(request)
    if denied:
        return denied
    assert runner is not None
    try:
        return _json(runner.get(experiment_id))
    except ExperimentNotFound:
        return _error(404, "not_found", f"no experiment {experiment_id[:64]!r}")


@router.post("/{experiment_id}/stop", summary="Stop an experiment")
def stop_experiment(request: HttpRequest, experiment_id: str) -> JsonResponse:
    runner, denied = _guard(request)
    if denied:
        return denied
    assert runner is not None
    try:
        return _json(runner.stop(experiment_id))
    except ExperimentNotFound:
        return _error(404, "not_found", f"no experiment {experiment_id[:64]!r}")
