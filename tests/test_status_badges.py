"""The status badge of an order row: what a trader reads for each status, per engine."""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string
from django.test import override_settings

from tests.conftest import make_config


def badge(**order: Any) -> str:
    row = {"order_id": "O1", "region": "us-east-1", "qty": "1.0000", "filled_qty": "0.0000", "note": "", **order}
    return render_to_string("trading/fragments.html#status-badge", {"o": row})


def test_it_says_awaiting_simulated_fill_under_simfill() -> None:
    with override_settings(EXCHANGE=make_config()):
        assert "Awaiting simulated fill" in badge(status="ACCEPTED")


def test_it_says_awaiting_match_then_resting_under_the_matcher() -> None:
    with override_settings(EXCHANGE=make_config(engine="matcher")):
        assert "Awaiting match" in badge(status="ACCEPTED")
        resting = badge(status="OPEN")
        assert ">Resting<" in resting and "resting in the us-east-1 book" in resting
        part = badge(status="OPEN", filled_qty="0.2500")
        assert "Resting · part-filled 0.2500/1.0000" in part
        assert "Filled" in badge(status="FILLED", filled_qty="1.0000")
