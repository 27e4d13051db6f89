"""The fault plane as the pages show it outside the panel: the lever, the banner, the chart windows."""

from __future__ import annotations

from typing import Any

from django import template

from faults import panel
from faults.runner import get_runner

register = template.Library()


@register.simple_tag
def faults_now() -> dict[str, Any]:
    """{% faults_now as fx %}: running count, active faults in words, fault windows to shade."""
    runner = get_runner()
    if runner is None:
        return {"running_count": 0, "fault_words": [], "windows": [], "available": False}
    history = runner.history()
    return {
        "running_count": sum(1 for x in history if not panel.is_final(x)),
        "fault_words": panel.fault_summary(runner.plane.snapshot()),
        "windows": panel.fault_windows(history[:20]),
        "available": True,
    }
