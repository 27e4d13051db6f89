"""The `/ws/events/` JSON stream on AWS: an API Gateway WebSocket API and a Streams pusher.

One Lambda per region (stage `ws_<region>`) answers both:
- the WebSocket routes `$connect` (bearer token checked, the socket caps checked, the
  connection stored with who it is and where to post back), `$disconnect` (forgotten) and `$default` (a ping answers
  `{"type": "pong"}`), registered in Zappa 0.63's `zappa.websocket` route registry;
- DynamoDB Streams records from the Orders and Trades tables: each change becomes the
  same frame as locally, `{"type", "region", "ts", "data"}`, posted to every connection
  as `events.visible_to` shows it to that user (whole, anonymous, or not at all), through
  `apigatewaymanagementapi`; a
  connection that is gone (GoneException) is pruned.

`zappa.websocket` is imported by name, not with an import statement: Zappa's CLI walks
the project for `zappa.websocket` imports and would otherwise give every stage (the
ingest facade and SimFill too) a WebSocket API. The ws stages name this module
explicitly in `websocket_handler_module`.

Django is loaded only on `$connect`, to check the token against the same user table
as the JSON API; the pusher path stays Django-free.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from trading import aws, events
from trading.config import ExchangeConfig
from trading.provision import connections_table_name
from trading.store import from_attrs, order_from_item, to_attrs, trade_from_item
from trading.streams import ChangeRecord, record_from_raw

CONNECTION_TTL_S = 2 * 60 * 60  # API Gateway closes a WebSocket connection after 2 hours

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "ws-events"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Exchange"), service="ws-events")
websocket = importlib.import_module("zappa.websocket")


@dataclass(frozen=True)
class Connection:
    connection_id: str
    endpoint: str  # https://<api id>.execute-api.<region>.amazonaws.com/<stage>
    username: str
    is_staff: bool


# --- the pure part: stream records -> frames ---------------------------------------


def frames_for(records: Iterable[ChangeRecord]) -> list[events.Event]:
    """The frames the local push would send for these table changes, in stream order."""
    frames = []
    for record in records:
        item = record.new_image
        if item is None:  # a REMOVE: nothing the stream's readers are shown
            continue
        pk = str(item.get("pk", ""))
        if pk.startswith("ORDER#"):
            order = order_from_item(item)
            before = record.old_image or {}
            if record.event_name == "INSERT":
                frames.append(events.make_event(events.ORDER_ACCEPTED, record.region, events.order_data(order), order.created_ms))
            elif before.get("status") != order.status:
                frames.append(events.make_event(events.ORDER_STATUS, record.region, events.order_data(order), order.updated_ms))
        elif pk.startswith("TRADE#") and record.event_name == "INSERT":
            trade = trade_from_item(item)
            frames.append(events.make_event(events.TRADE_EXECUTED, record.region, events.trade_data(trade), trade.ts_ms))
    return frames


def records_from_event(event: dict[str, Any]) -> list[ChangeRecord]:
    out = []
    for raw in event.get("Records", []):
        # arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>
        arn = str(raw.get("eventSourceARN", ""))
        table = arn.split(":table/", 1)[-1].split("/", 1)[0]
        out.append(record_from_raw(raw, raw.get("awsRegion", ""), table))
    return out


# --- the adapters: the connections table, posting -----------------------------------


@dataclass(frozen=True)
class ConnectionStore:
    region: str
    table: str

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.region)

    def put(self, connection: Connection, now_s: float) -> None:
        item = {
            "pk": f"CONN#{connection.connection_id}",
            "connectionId": connection.connection_id,
            "endpoint": connection.endpoint,
            "username": connection.username,
            "isStaff": connection.is_staff,
            "expiresAt": int(now_s) + CONNECTION_TTL_S,
        }
        self._ddb.put_item(TableName=self.table, Item=to_attrs(item))

    def delete(self, connection_id: str) -> None:
        self._ddb.delete_item(TableName=self.table, Key=to_attrs({"pk": f"CONN#{connection_id}"}))

    def all(self) -> list[Connection]:
        found, kwargs = [], {"TableName": self.table}
        while True:
            page = self._ddb.scan(**kwargs)
            for attrs in page.get("Items", []):
                item = from_attrs(attrs)
                found.append(Connection(item["connectionId"], item["endpoint"], item["username"], bool(item["isStaff"])))
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def management_client(endpoint: str, region: str) -> Any:
    """apigatewaymanagementapi needs the API's own URL as endpoint: one cached client per URL."""
    return _management_client(endpoint, region)


@lru_cache(maxsize=16)
def _management_client(endpoint: str, region: str) -> Any:
    import boto3

    return boto3.session.Session().client("apigatewaymanagementapi", endpoint_url=endpoint, region_name=region)


def push(
    frames: list[events.Event],
    store: ConnectionStore,
    client_for: Callable[[str], Any],
) -> dict[str, int]:
    """Post each frame to each connection allowed to see it; prune gone connections."""
    sent = pruned = 0
    if not frames:
        return {"sent": 0, "pruned": 0}
    for connection in store.all():
        viewer = events.Viewer(connection.username, connection.is_staff)
        visible = [shown for shown in (events.visible_to(f, viewer) for f in frames) if shown is not None]
        client = client_for(connection.endpoint)
        for frame in visible:
            try:
                client.post_to_connection(ConnectionId=connection.connection_id, Data=json.dumps(frame, separators=(",", ":")).encode())
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in {"GoneException", "410"}:
                    store.delete(connection.connection_id)
                    pruned += 1
                    break
                raise
            sent += 1
    return {"sent": sent, "pruned": pruned}


# --- the Lambda ---------------------------------------------------------------------


@lru_cache(maxsize=1)
def current_config() -> ExchangeConfig:
    return ExchangeConfig.from_env()


@lru_cache(maxsize=1)
def current_store() -> ConnectionStore:
    config = current_config()
    region = os.environ.get("AWS_REGION") or config.regions[0]
    return ConnectionStore(region, connections_table_name(config.table_prefix))


def over_socket_cap(open_now: list[Connection], username: str, config: ExchangeConfig) -> bool:
    """One more connection would pass the user's cap (EXCHANGE_USER_SOCKETS) or the API's (EXCHANGE_MAX_SOCKETS)."""
    return len(open_now) >= config.max_sockets or sum(1 for c in open_now if c.username == username) >= config.user_sockets


def bearer_token(event: dict[str, Any]) -> str:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return str((event.get("queryStringParameters") or {}).get("token", ""))


def user_for_token(token: str) -> tuple[str, bool] | None:
    """The JSON API's token check (Django, loaded here only)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange_ui.settings")
    django.setup()
    from trading.auth import user_for_token as django_user_for_token

    user = django_user_for_token(token)
    return (user.get_username(), bool(user.is_staff)) if user is not None else None


def on_connect(event: dict[str, Any], context: Any) -> dict[str, Any]:
    found = user_for_token(bearer_token(event))
    if found is None:
        return {"statusCode": 401}
    store = current_store()
    if over_socket_cap(store.all(), found[0], current_config()):
        return {"statusCode": 429}  # the handshake is refused: the local server's close code 4429
    context_ = event["requestContext"]
    endpoint = f"https://{context_['domainName']}/{context_['stage']}"
    store.put(Connection(context_["connectionId"], endpoint, found[0], found[1]), time.time())
    return {"statusCode": 200}


def on_disconnect(event: dict[str, Any], context: Any) -> dict[str, Any]:
    current_store().delete(event["requestContext"]["connectionId"])
    return {"statusCode": 200}


def on_message(event: dict[str, Any], context: Any) -> dict[str, Any]:
    context_ = event["requestContext"]
    endpoint = f"https://{context_['domainName']}/{context_['stage']}"
    management_client(endpoint, current_store().region).post_to_connection(
        ConnectionId=context_["connectionId"], Data=b'{"type":"pong"}'
    )
    return {"statusCode": 200}


websocket.on_connect(on_connect)
websocket.on_disconnect(on_disconnect)
websocket.on_message(on_message)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> Any:
    if websocket.is_websocket_event(event):
        websocket.validate_registry()
        route = websocket.get_handler(event["requestContext"].get("routeKey", "$default"))
        return route(event, context)
    store = current_store()
    frames = frames_for(records_from_event(event))
    result = push(frames, store, lambda endpoint: management_client(endpoint, store.region))
    metrics.add_metric(name="FramesPushed", unit=MetricUnit.Count, value=result["sent"])
    metrics.add_metric(name="ConnectionsPruned", unit=MetricUnit.Count, value=result["pruned"])
    return result
