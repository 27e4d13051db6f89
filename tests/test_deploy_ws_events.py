"""The WebSocket pusher: real stream records from moto in, the local frame shape out."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from deploy import ws_events
from simfill.worker import apply_message
from tests.conftest import order_payload
from trading import aws
from trading.actions import submit_order
from trading.provision import connections_table_name, ensure_connections_table
from trading.store import table_names

REGION = "us-east-1"


def lambda_stream_event(region: str, table: str) -> dict[str, Any]:
    """Read the table's stream as Lambda's poller does, and shape it as Lambda's event."""
    arn = aws.client("dynamodb", region).describe_table(TableName=table)["Table"]["LatestStreamArn"]
    streams = aws.client("dynamodbstreams", region)
    records = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        for raw in streams.get_records(ShardIterator=iterator)["Records"]:
            records.append({**raw, "eventSource": "aws:dynamodb", "eventSourceARN": arn, "awsRegion": region})
    return {"Records": records}


def test_it_turns_table_changes_into_the_local_frames(exchange: Any) -> None:
    order, _ = submit_order(exchange, "alice", order_payload(), "key-1")
    stores = exchange.stores[REGION]
    market = exchange.config.market("BTC-USD")
    apply_message(stores, {"type": "OrderAccepted", "order_id": order.order_id}, "us-east-1a", lambda: 1_800_000_000.0, lambda s: (market.tick, market.lot))
    names = table_names(exchange.config.table_prefix)

    frames = [
        *ws_events.frames_for(ws_events.records_from_event(lambda_stream_event(REGION, names["orders"]))),
        *ws_events.frames_for(ws_events.records_from_event(lambda_stream_event(REGION, names["trades"]))),
    ]

    types = [f["type"] for f in frames]
    assert types[:2] == ["order.accepted", "order.status"]
    assert set(types[2:]) <= {"trade.executed"}
    for frame in frames:
        assert set(frame) == {"type", "region", "ts", "data"}
        assert frame["region"] == REGION
        json.dumps(frame)  # plain JSON, Decimals already text
    assert frames[1]["data"]["status"] in {"FILLED", "CANCELLED"}


def test_it_pushes_to_allowed_connections_and_prunes_gone_ones(aws_resources: Any) -> None:
    ensure_connections_table(REGION, aws_resources.table_prefix)
    store = ws_events.ConnectionStore(REGION, connections_table_name(aws_resources.table_prefix))
    alice = ws_events.Connection("alice-1", "https://abc.execute-api.us-east-1.amazonaws.com/ws", "alice", False)
    bob_gone = ws_events.Connection("bob-1", "https://abc.execute-api.us-east-1.amazonaws.com/ws", "bob", False)
    for connection in (alice, bob_gone):
        store.put(connection, now_s=1_800_000_000)
    private = {"type": "order.status", "region": REGION, "ts": 1, "data": {"client": "alice", "order_id": "o1"}}
    public = {"type": "trade.executed", "region": REGION, "ts": 2, "data": {"trade_id": "t1"}}

    client = boto3.session.Session().client(
        "apigatewaymanagementapi", endpoint_url=alice.endpoint, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    stubber = Stubber(client)
    expected: dict[str, list[dict[str, Any]]] = {"alice-1": [private, public], "bob-1": [public]}
    for connection in store.all():  # the pusher walks connections in the store's order
        frames = expected[connection.connection_id]
        if connection.connection_id == "bob-1":
            stubber.add_client_error("post_to_connection", service_error_code="GoneException", http_status_code=410,
                                     expected_params={"ConnectionId": "bob-1", "Data": json.dumps(public, separators=(",", ":")).encode()})
            continue
        for frame in frames:
            stubber.add_response("post_to_connection", {}, {"ConnectionId": "alice-1", "Data": json.dumps(frame, separators=(",", ":")).encode()})

    with stubber:
        result = ws_events.push([private, public], store, lambda endpoint: client)

    stubber.assert_no_pending_responses()
    assert result == {"sent": 2, "pruned": 1}
    assert [c.connection_id for c in store.all()] == ["alice-1"]


def test_it_registers_the_websocket_routes_zappa_requires() -> None:
    websocket = ws_events.websocket
    websocket.validate_registry()
    assert websocket.get_handler("$connect") is ws_events.on_connect
    assert websocket.get_handler("$disconnect") is ws_events.on_disconnect
    assert websocket.get_handler("$default") is ws_events.on_message
    assert ws_events.bearer_token({"headers": {"Authorization": "Bearer abc"}}) == "abc"
    assert ws_events.bearer_token({"queryStringParameters": {"token": "xyz"}}) == "xyz"


class RecordingClient:
    """Stands in for apigatewaymanagementapi: what each connection was sent."""

    def __init__(self) -> None:
        self.sent: dict[str, list[dict[str, Any]]] = {}

    def post_to_connection(self, ConnectionId: str, Data: bytes) -> None:  # noqa: N803 (boto3's names)
        self.sent.setdefault(ConnectionId, []).append(json.loads(Data))


def test_it_pushes_a_trader_only_the_anonymous_tape_of_another_clients_fills(exchange: Any) -> None:
    order, _ = submit_order(exchange, "alice", order_payload(), "key-1")
    market = exchange.config.market("BTC-USD")
    apply_message(exchange.stores[REGION], {"type": "OrderAccepted", "order_id": order.order_id}, "us-east-1a", lambda: 1_800_000_000.0, lambda s: (market.tick, market.lot))
    names = table_names(exchange.config.table_prefix)
    frames = [
        *ws_events.frames_for(ws_events.records_from_event(lambda_stream_event(REGION, names["orders"]))),
        *ws_events.frames_for(ws_events.records_from_event(lambda_stream_event(REGION, names["trades"]))),
    ]
    assert any(f["type"] == "trade.executed" for f in frames)
    ensure_connections_table(REGION, exchange.config.table_prefix)
    store = ws_events.ConnectionStore(REGION, connections_table_name(exchange.config.table_prefix))
    endpoint = "https://abc.execute-api.us-east-1.amazonaws.com/ws"
    for connection_id, username, staff in (("alice-1", "alice", False), ("bob-1", "bob", False), ("ops-1", "ops", True)):
        store.put(ws_events.Connection(connection_id, endpoint, username, staff), now_s=1_800_000_000)
    client = RecordingClient()

    ws_events.push(frames, store, lambda endpoint: client)

    assert client.sent["alice-1"] == frames and client.sent["ops-1"] == frames
    bobs = client.sent["bob-1"]
    assert [f["type"] for f in bobs] == ["trade.executed" for f in frames if f["type"] == "trade.executed"]
    assert "alice" not in json.dumps(bobs) and order.order_id not in json.dumps(bobs)
    assert all({"price", "qty", "symbol", "region", "ts_ms"} <= set(f["data"]) for f in bobs)


def connect_event(connection_id: str, token: str) -> dict[str, Any]:
    return {
        "headers": {"Authorization": f"Bearer {token}"},
        "requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "connectionId": connection_id, "domainName": "abc.execute-api.us-east-1.amazonaws.com", "stage": "ws"},
    }


@pytest.mark.django_db
def test_it_refuses_a_connection_past_the_socket_caps(aws_resources: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.contrib.auth.models import User

    from trading.models import ApiToken

    ensure_connections_table(REGION, aws_resources.table_prefix)
    monkeypatch.setenv("EXCHANGE_USER_SOCKETS", "2")
    monkeypatch.setenv("EXCHANGE_MAX_SOCKETS", "3")
    monkeypatch.setenv("AWS_REGION", REGION)
    ws_events.current_config.cache_clear()
    ws_events.current_store.cache_clear()
    tokens = {name: ApiToken.issue(User.objects.create_user(name)) for name in ("alice", "bob", "carol")}
    try:
        answers = [ws_events.on_connect(connect_event(f"alice-{n}", tokens["alice"]), None)["statusCode"] for n in range(3)]
        assert answers == [200, 200, 429]
        assert ws_events.on_connect(connect_event("bob-1", tokens["bob"]), None)["statusCode"] == 200
        assert ws_events.on_connect(connect_event("carol-1", tokens["carol"]), None)["statusCode"] == 429  # three open in all
        ws_events.on_disconnect({"requestContext": {"connectionId": "alice-0"}}, None)
        assert ws_events.on_connect(connect_event("carol-1", tokens["carol"]), None)["statusCode"] == 200
    finally:
        ws_events.current_config.cache_clear()
        ws_events.current_store.cache_clear()
