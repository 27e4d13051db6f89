"""Frames built from cached event texts are byte for byte what json.dumps writes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from trading.consumers import EncodedEvents

scalar = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
event = st.dictionaries(st.text(max_size=6), value, max_size=5)


@given(events=st.lists(event, max_size=6), seq=st.integers(0, 10**9), resync=st.booleans())
def test_a_batch_frame_is_what_json_dumps_writes(events: list[dict[str, Any]], seq: int, resync: bool) -> None:
    encoded = EncodedEvents(size=3)
    for _ in range(2):  # the second time from the cache (or past its end: it holds three)
        assert encoded.batch(events, seq, resync) == json.dumps({"type": "batch", "seq": seq, "resync": resync, "events": events})


@given(e=event, seq=st.integers(0, 10**9))
def test_a_single_event_frame_is_what_json_dumps_writes(e: dict[str, Any], seq: int) -> None:
    encoded = EncodedEvents()
    assert encoded.with_seq(e, seq) == json.dumps({**e, "seq": seq})
    assert encoded.with_seq(e, seq + 1) == json.dumps({**e, "seq": seq + 1})


def test_it_encodes_an_event_once_and_never_confuses_two() -> None:
    encoded = EncodedEvents(size=2)
    a, b, c = {"type": "a"}, {"type": "b"}, {"type": "c"}
    first = encoded.text(a)
    assert encoded.text(a) is first  # the cached string itself
    assert [encoded.text(x) for x in (b, c)] == ['{"type": "b"}', '{"type": "c"}']
    assert len(encoded._texts) == 2  # bounded: a fell out
    assert encoded.text(a) == first and encoded.text(a) is not first
    twin = {"type": "a"}
    assert encoded.text(twin) == first  # equal content, its own entry
