"""The DynamoDB adapter for replication and reconciliation. Django-free.

- `ItemTable`: raw items of any of the replicated tables, for the replicator (read the
  current item, put a replica conditional on what was read);
- `ReconcileStore`: the reconcile table's records (conflicts, compensations, P&L
  adjustments), written once under deterministic ids;
- `load_history(config)`: every region's tables, for check_history.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from reconcile_panel.history import History
from reconcile_panel.limits import position_limits
from reconcile_panel.provision import reconcile_table_name
from reconcile_panel.codec import RECORD_ADJUSTMENT, RECORD_COMPENSATION, RECORD_CONFLICT
from reconcile_panel.reconciler import KINDS, compensation_id, conflict_id
from reconcile_panel.replication import version_attribute
from trading import aws
from trading.config import ExchangeConfig
from trading.store import (
    INDEX_PAGES,
    RECONCILE_BY_TYPE,
    batch_get_items,
    batch_put_items,
    from_attrs,
    is_conditional_failure,
    put_new_counted,
    scan_items,
    table_names,
    to_attrs,
)

# Where a page of reconcile records ended: (pk, decidedAt) of its last record.
RecordPosition = tuple[str, int]
# Adjustments the totals read at most per request (projected: account, market, amount).
TOTALS_READ = 5000


def replicated_tables(prefix: str) -> dict[str, str]:
    """role -> table name, for the tables replicated between the regions."""
    names = table_names(prefix)
    return {"orders": names["orders"], "trades": names["trades"], "reconcile": reconcile_table_name(prefix)}


@dataclass(frozen=True)
class ItemTable:
    region: str
    table: str

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.region)

    def get(self, pk: str) -> dict[str, Any] | None:
        response = self._ddb.get_item(TableName=self.table, Key=to_attrs({"pk": pk}), ConsistentRead=True)
        attrs = response.get("Item")
        return from_attrs(attrs) if attrs else None

    def get_many(self, pks: list[str]) -> list[dict[str, Any]]:
        """The items among `pks` that exist, in the order asked."""
        return batch_get_items(self._ddb, self.table, pks)

    def put_absent_many(self, items: list[dict[str, Any]]) -> None:
        """Put items known to be absent here, in batch writes (no condition: the caller
        guarantees that nothing else writes these keys in this region)."""
        batch_put_items(self._ddb, self.table, items)

    def put_over(self, item: dict[str, Any], existing: dict[str, Any] | None, count: dict[str, Any] | list[dict[str, Any]] | None = None) -> bool:
        """Put `item`, conditional on the table still holding `existing` (as far as its
        version goes). False if a write came in between: read again and decide again.

        `count` (a TransactWriteItems Update, for an item new here) is applied in the same
        transaction as the put: a trade moves this region's position counter exactly once.
        """
        if existing is None and count is not None:
            return put_new_counted(self._ddb, self.table, item, count)
        kwargs: dict[str, Any] = {"TableName": self.table, "Item": to_attrs(item)}
        if existing is None:
            kwargs["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            name = version_attribute(existing)
            if name is None:
                kwargs["ConditionExpression"] = "attribute_exists(pk)"
            else:
                kwargs["ConditionExpression"] = "#v = :v"
                kwargs["ExpressionAttributeNames"] = {"#v": name}
                kwargs["ExpressionAttributeValues"] = to_attrs({":v": existing[name]})
        try:
            self._ddb.put_item(**kwargs)
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise
        return True

    def scan_items(self) -> Iterator[dict[str, Any]]:
        return scan_items(self._ddb, self.table, "", ConsistentRead=True)


@dataclass(frozen=True)
class ReconcileStore:
    region: str
    table: str

    @classmethod
    def for_region(cls, region: str, prefix: str) -> ReconcileStore:
        return cls(region, reconcile_table_name(prefix))

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.region)

    def put_once(self, item: dict[str, Any], count: dict[str, Any] | list[dict[str, Any]] | None = None) -> bool:
        """Write a decision record under its deterministic id; False if it is already there.

        `count` (a TransactWriteItems Update) moves a position counter in the same transaction.
        """
        if count is not None:
            return put_new_counted(self._ddb, self.table, item, count)
        try:
            self._ddb.put_item(TableName=self.table, Item=to_attrs(item), ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise
        return True

    def scan_all(self, record_type: str | None = None) -> Iterator[dict[str, Any]]:
        """Every record (check_history, the worker's start): the pages read a page instead."""
        for item in ItemTable(self.region, self.table).scan_items():
            if record_type is None or item.get("recordType") == record_type:
                yield item

    def newest(
        self,
        record_type: str,
        limit: int,
        after: RecordPosition | None = None,
        equal: Mapping[str, str] | None = None,
        listing: Mapping[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], RecordPosition | None]:
        """A page of one kind of record, newest first (the by-type index): at most `limit`,
        over at most INDEX_PAGES Query pages of `limit`, so a page is a bounded read however
        many records there are. `equal` keeps records whose attribute equals the value,
        `listing` those whose list attribute holds it (a filter can make a page short).
        `after` and the second value: where a page ended (pk, decidedAt); None at the end."""
        names: dict[str, str] = {"#t": "recordType"}
        values: dict[str, Any] = {":t": record_type}
        terms = []
        for n, (attribute, value) in enumerate(sorted((equal or {}).items())):
            names[f"#e{n}"], values[f":e{n}"] = attribute, value
            terms.append(f"#e{n} = :e{n}")
        for n, (attribute, value) in enumerate(sorted((listing or {}).items())):
            names[f"#l{n}"], values[f":l{n}"] = attribute, value
            terms.append(f"contains(#l{n}, :l{n})")
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": RECONCILE_BY_TYPE.name,
            "KeyConditionExpression": "#t = :t",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": to_attrs(values),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if terms:
            request["FilterExpression"] = " AND ".join(terms)
        if after is not None:
            request["ExclusiveStartKey"] = to_attrs({"pk": after[0], "recordType": record_type, "decidedAt": after[1]})
        found: list[dict[str, Any]] = []
        last: dict[str, Any] | None = None
        for _ in range(INDEX_PAGES):
            page = self._ddb.query(**request)
            found.extend(from_attrs(attrs) for attrs in page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if last is None or len(found) >= limit:
                break
            request["ExclusiveStartKey"] = last
        if len(found) > limit:
            found = found[:limit]
            return found, (str(found[-1]["pk"]), int(found[-1]["decidedAt"]))
        if last is None:
            return found, None
        key = from_attrs(last)
        return found, (str(key["pk"]), int(key["decidedAt"]))

    def get_many(self, pks: list[str]) -> list[dict[str, Any]]:
        """The records among `pks` that exist (BatchGetItem, 100 keys a call)."""
        return ItemTable(self.region, self.table).get_many(pks) if pks else []

    def of_orders(self, order_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The conflicts decided about these orders (their ids derive from kind and order)."""
        return self.get_many([f"{RECORD_CONFLICT}#{conflict_id(kind, order_id)}" for order_id in dict.fromkeys(order_ids) for kind in KINDS])

    def compensations_of(self, conflicts: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The compensations of these conflicts (their ids derive from conflict and trade)."""
        return self.get_many(
            [
                f"{RECORD_COMPENSATION}#{compensation_id(str(c['conflictId']), str(trade_id))}"
                for c in conflicts
                for trade_id in c.get("compensatedTradeIds", [])
            ]
        )

    def adjustment_totals(self, account: str | None = None, most: int = TOTALS_READ) -> tuple[dict[tuple[str, str], Decimal], bool]:
        """Each (account, market)'s summed P&L adjustments, from a projected read of at most
        `most` adjustments, newest first; the flag is False when more were left unread."""
        totals: dict[tuple[str, str], Decimal] = defaultdict(lambda: Decimal("0"))
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": RECONCILE_BY_TYPE.name,
            "KeyConditionExpression": "#t = :t",
            "ProjectionExpression": "#a, #s, #m",
            "ExpressionAttributeNames": {"#t": "recordType", "#a": "account", "#s": "symbol", "#m": "amount"},
            "ExpressionAttributeValues": to_attrs({":t": RECORD_ADJUSTMENT}),
            "ScanIndexForward": False,
            "Limit": min(most, 1000),
        }
        if account:
            request["FilterExpression"] = "#a = :a"
            request["ExpressionAttributeValues"].update(to_attrs({":a": account}))
        read = 0
        while True:
            page = self._ddb.query(**request)
            for attrs in page.get("Items", []):
                item = from_attrs(attrs)
                totals[(str(item["account"]), str(item["symbol"]))] += Decimal(item["amount"])
            read += int(page.get("ScannedCount", 0))
            if "LastEvaluatedKey" not in page:
                return dict(totals), True
            if read >= most:
                return dict(totals), False
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def load_tables(config: ExchangeConfig) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    tables: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for region in config.regions:
        tables[region] = {}
        for role, name in replicated_tables(config.table_prefix).items():
            tables[region][role] = {str(item["pk"]): item for item in ItemTable(region, name).scan_items()}
    return tables


def load_history(config: ExchangeConfig) -> History:
    """Everything every region recorded, for `reconcile_panel.history.check`."""
    return History(
        regions=tuple(config.regions),
        tables=load_tables(config),
        reference_prices={m.symbol: m.reference_price for m in config.markets},
        limits=position_limits(config),
    )
