"""The DynamoDB adapter for replication and reconciliation. Django-free.

- `ItemTable`: raw items of any of the replicated tables, for the replicator (read the
  current item, put a replica conditional on what was read);
- `ReconcileStore`: the reconcile table's records (conflicts, compensations, P&L
  adjustments), written once under deterministic ids;
- `load_history(config)`: every region's tables, for check_history.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from reconcile_panel.history import History
from reconcile_panel.limits import position_limits
from reconcile_panel.provision import reconcile_table_name
from reconcile_panel.replication import version_attribute
from trading import aws
from trading.config import ExchangeConfig
from trading.store import batch_get_items, batch_put_items, from_attrs, is_conditional_failure, put_new_counted, scan_items, table_names, to_attrs


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

    def put_over(self, item: dict[str, Any], existing: dict[str, Any] | None, count: dict[str, Any] | None = None) -> bool:
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

    def put_once(self, item: dict[str, Any], count: dict[str, Any] | None = None) -> bool:
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
        for item in ItemTable(self.region, self.table).scan_items():
            if record_type is None or item.get("recordType") == record_type:
                yield item


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
