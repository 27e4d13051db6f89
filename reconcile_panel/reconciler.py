"""The reconciler: merged per-region histories in, one decision per conflict out.

Pure and deterministic: plain data in (every region's own copy of each order and
every region's fills), decisions out. No boto3, no clock: a decision's time is the
latest time among the facts it rests on, so a replay yields the same records, the
same ids and the same content, and the adapter's conditional puts write nothing new.
The records as table items, and the Orders and Trades items as records, are the
adapter's (`reconcile_panel.codec`); so is pausing the collector for a large run (the worker).

The rules, in the order they apply:

1. Divergent order (a client's retry with the same idempotency key accepted in two
   regions that could not see each other, so one order id has a copy per region):
   the copy that was accepted first stands, ranked by accept time (ms), then the
   market sequence number, then the region name. Sequence numbers are allocated per
   region, so across regions they only break a tie on the same millisecond. Every
   fill of every other copy is reversed (a trade cancel, FIX ExecType H).
   - duplicate_fill: two or more copies have fills;
   - cancel_fill_race: a copy was cancelled by its client (cancel accepted) while
     another copy filled. If the cancelled copy stands the fills are busted; if the
     filled copy stands, the cancel came too late and nothing is reversed, but the
     conflict is still recorded with its decision.
2. Over-limit exposure (only when a per-account position limit is configured for the
   market): the standing fills of each (account, market) are replayed in the same
   rank order (then by fill index); a fill that takes the absolute position beyond the
   limit is cut back to the limit: corrected to a smaller quantity (a trade correct,
   FIX ExecType G) or, if nothing of it fits, cancelled (ExecType H).

Every reversed quantity is a P&L adjustment for the client and its counterparty,
marked against the market's reference price r: for the account that bought q at p,
amount = q x (p - r); for the account that sold, q x (r - p). Signed Decimals, a
credit when positive; the two legs of one compensation sum to zero.

Matched trades (the matcher): a trade between two real orders is a fill of each, its
taker's as written and its maker's with the maker's account and the other side (the
adapter hands both in, same trade id). So a resting order that traded is settled by its
maker fills, and each order's conflicts are judged on all its fills. A trade is reversed
at most once: by the first decision (in order id order, rule 1 before rule 2) that
reaches it from either of its orders; rule 2 leaves out a trade rule 1 busted on its other
order, and replays what an earlier account's cut left of it. Its compensation's two legs
are then the taker's and the maker's accounts.

Only settled orders are decided: every copy has a final status and the fills seen for
it add up to its filledQty. An account's exposure is decided once all its orders in
that market are settled. Nothing here depends on arrival order: the input is sorted.
Cost: O(n log n) in the number of fills and copies.

Retirement (`retire`): the worker holds an order's copies and fills only while they can
still change a decision. An order retires when all of these hold, judged by the stream's
own clock (the newest write time the worker has read) and never by the wall clock:

- it is settled and its decisions were made (the worker has no unread change of it);
- every region's table holds it (its own copy, or a replica the worker read in that
  region's stream): every region's ingest then refuses a new copy of the id (the put is
  conditional on a new id), so no conflicting copy can be accepted anywhere any more;
- its newest fact (a copy's write, a fill) is older than the horizon.

An order that some region still lacks (a partition, however long) never retires, so a
late copy from that region is judged against everything, as if nothing had retired. In a
market with a position limit an account's orders retire as a prefix in rank order, and
what they leave for rule 2 is an `Opening` (the position their standing fills make after
every cut, their regions, their latest time), so a later cut is decided, and recorded,
exactly as over the whole history; the prefix's own decisions come with the retirement
(they depend on nothing that ranks after it) and are written before its state goes.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from decimal import Decimal
from typing import Any

FINAL = ("FILLED", "CANCELLED")
# A copy whose region's table was overwritten (last writer wins) by another region's
# final copy before its fill worker reached it: it never fills, and never stands.
SUPERSEDED = "SUPERSEDED"
CLOSED = frozenset((*FINAL, SUPERSEDED))  # the statuses of a copy that will not change any more
ZERO = Decimal("0")
UNKNOWN_RANK = 2**62

DUPLICATE_FILL = "duplicate_fill"
CANCEL_FILL_RACE = "cancel_fill_race"
OVER_LIMIT = "over_limit"
KINDS = (DUPLICATE_FILL, CANCEL_FILL_RACE, OVER_LIMIT)

TRADE_CANCEL = "H"  # FIX ExecType H: trade cancel
TRADE_CORRECT = "G"  # FIX ExecType G: trade correct
EXEC_TYPE_NAMES = {TRADE_CANCEL: "TRADE_CANCEL", TRADE_CORRECT: "TRADE_CORRECT"}

STANDING_RULE = "earliest acceptance stands: accept time, then market sequence, then region name"
LIMIT_RULE = "fills beyond the account's position limit are cut back, in acceptance order"


@dataclass(frozen=True, slots=True)
class Acceptance:
    """One region's copy of an order, as that region last wrote it."""

    order_id: str
    region: str
    client: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    seq: int
    accept_ms: int
    status: str
    filled_qty: Decimal = ZERO
    cancel_requested: bool = False
    updated_ms: int = 0

    @property
    def rank(self) -> tuple[int, int, str]:
        return (self.accept_ms, self.seq, self.region)

    @property
    def is_final(self) -> bool:
        return self.status in CLOSED


@dataclass(frozen=True, slots=True)
class Fill:
    trade_id: str
    order_id: str
    region: str
    client: str
    counterparty: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    seq: int
    fill_index: int
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Opening:
    """What an account's retired orders leave for rule 2 in a market with a limit: the net
    position of their standing fills after every cut, and those fills' regions and latest
    time (a later cut's conflict record names them, as it would with the fills at hand)."""

    position: Decimal = ZERO
    regions: frozenset[str] = frozenset()
    last_ts_ms: int = 0


@dataclass(frozen=True, slots=True)
class Ledger:
    """The merged history the reconciler decides over."""

    acceptances: tuple[Acceptance, ...] = ()
    fills: tuple[Fill, ...] = ()
    reference_prices: Mapping[str, Decimal] = field(default_factory=dict)
    limits: Mapping[str, Decimal] = field(default_factory=dict)  # per market; absent: no limit
    # (account, market) -> what its retired orders left; rule 2 starts each replay there.
    openings: Mapping[tuple[str, str], Opening] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Conflict:
    conflict_id: str
    kind: str
    order_id: str
    client: str
    symbol: str
    regions: tuple[str, ...]
    standing_region: str
    standing_trade_ids: tuple[str, ...]
    compensated_trade_ids: tuple[str, ...]
    acceptances: tuple[Acceptance, ...]
    rule: str
    detail: str
    decided_ms: int


@dataclass(frozen=True, slots=True)
class Compensation:
    compensation_id: str
    conflict_id: str
    trade_id: str  # the trade it reverses
    exec_type: str  # H (cancel) or G (correct)
    order_id: str
    client: str
    counterparty: str
    symbol: str
    side: str
    region: str  # where the reversed trade executed
    qty: Decimal  # the trade's original quantity
    price: Decimal
    reversed_qty: Decimal
    corrected_qty: Decimal  # what stands of the trade: 0 for a cancel
    decided_ms: int


@dataclass(frozen=True, slots=True)
class Adjustment:
    adjustment_id: str
    conflict_id: str
    compensation_id: str
    account: str
    order_id: str
    trade_id: str
    symbol: str
    side: str  # the account's side of the reversed trade
    regions: tuple[str, ...]
    qty: Decimal  # reversed quantity
    price: Decimal  # the trade's price
    reference_price: Decimal
    amount: Decimal  # signed: credit when positive
    decided_ms: int


@dataclass(frozen=True, slots=True)
class Decisions:
    conflicts: tuple[Conflict, ...] = ()
    compensations: tuple[Compensation, ...] = ()
    adjustments: tuple[Adjustment, ...] = ()

    def ids(self) -> set[str]:
        return (
            {c.conflict_id for c in self.conflicts}
            | {c.compensation_id for c in self.compensations}
            | {a.adjustment_id for a in self.adjustments}
        )

    def compensated(self) -> dict[str, Decimal]:
        """Reversed quantity per trade id."""
        out: dict[str, Decimal] = defaultdict(lambda: ZERO)
        for comp in self.compensations:
            out[comp.trade_id] += comp.reversed_qty
        return dict(out)


def _direct_init(cls: type) -> None:
    """Give a frozen, slotted dataclass an __init__ that fills the slots directly.

    The generated frozen __init__ goes through `object.__setattr__` once per field; the
    slots' own setters do the same store about 3x faster, and thousands of records are
    built per run. Same parameters, defaults and annotations; the instances are the same
    (fields, equality, hash, and frozen afterwards).
    """
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: __post_init__ is not supported")
    cells: dict[str, Any] = {}
    params, body = [], []
    for f in fields(cls):
        if not f.init or f.default_factory is not MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: only plain fields")
        if f.default is MISSING:
            params.append(f.name)
        else:
            cells[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        cells[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        body.append(f"        _set_{f.name}(self, {f.name})\n")
    text = f"def _make({', '.join(cells)}):\n    def __init__(self, {', '.join(params)}):\n{''.join(body)}    return __init__\n"
    made: dict[str, Any] = {}
    exec(text, globals(), made)  # noqa: S102 (the text is built from the field names above)
    init = made["_make"](**cells)
    init.__annotations__ = dict(getattr(cls, "__init__").__annotations__)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    setattr(cls, "__init__", init)


for _record_type in (Acceptance, Fill, Opening, Conflict, Compensation, Adjustment):
    _direct_init(_record_type)

NO_OPENING = Opening()

# A record's id: its prefix, "-", and the BLAKE2b digest (10 bytes, hex) of the prefix
# and the parts it rests on, joined by U+001F.
_blake2b = hashlib.blake2b


def conflict_id(kind: str, order_id: str) -> str:
    return "CF-" + _blake2b(f"CF\x1f{kind}\x1f{order_id}".encode("utf-8"), digest_size=10).hexdigest()


def compensation_id(conflict: str, trade_id: str) -> str:
    return "TC-" + _blake2b(f"TC\x1f{conflict}\x1f{trade_id}".encode("utf-8"), digest_size=10).hexdigest()


def adjustment_id(compensation: str, account: str) -> str:
    return "PA-" + _blake2b(f"PA\x1f{compensation}\x1f{account}".encode("utf-8"), digest_size=10).hexdigest()


def pnl_amount(side: str, qty: Decimal, price: Decimal, reference: Decimal) -> Decimal:
    """What reversing `qty` at `price` is worth to the account that was on `side`."""
    return qty * (price - reference) if side == "BUY" else qty * (reference - price)


def _opposite(side: str) -> str:
    return "SELL" if side == "BUY" else "BUY"


def maker_fill(taker: Fill, maker_order: str) -> Fill:
    """A matched trade as a fill of its maker order: the maker's account, the other side,
    the same trade id, quantity, price, region, seq and time."""
    return Fill(
        trade_id=taker.trade_id,
        order_id=maker_order,
        region=taker.region,
        client=taker.counterparty,
        counterparty=taker.client,
        symbol=taker.symbol,
        side=_opposite(taker.side),
        qty=taker.qty,
        price=taker.price,
        seq=taker.seq,
        fill_index=taker.fill_index,
        ts_ms=taker.ts_ms,
    )


class _Order:
    __slots__ = ("order_id", "copies", "fills")

    def __init__(self, order_id: str):
        self.order_id = order_id
        self.copies: dict[str, Acceptance] = {}
        self.fills: dict[str, list[Fill]] = {}

    def settled(self) -> bool:
        copies, fills = self.copies, self.fills
        if not copies:
            return False
        for copy in copies.values():
            if copy.status not in CLOSED:
                return False
        for region, copy in copies.items():
            region_fills = fills.get(region)
            if region_fills is None:
                if copy.filled_qty != ZERO:
                    return False
            elif len(region_fills) == 1:
                if region_fills[0].qty != copy.filled_qty:
                    return False
            elif sum((f.qty for f in region_fills), ZERO) != copy.filled_qty:
                return False
        return all(region in copies for region in fills)  # fills of a copy never seen: not yet

    def ranked_regions(self) -> list[str]:
        copies = self.copies
        regions = set(copies)
        regions.update(self.fills)

        def key(region: str) -> tuple[int, int, int, str]:
            copy = copies.get(region)
            if copy is None:
                return (2, UNKNOWN_RANK, UNKNOWN_RANK, region)
            return (1 if copy.status == SUPERSEDED else 0, copy.accept_ms, copy.seq, region)

        return sorted(regions, key=key)


def _rank(c: Acceptance) -> tuple[int, int, str]:
    return (c.accept_ms, c.seq, c.region)


def _fill_order(f: Fill) -> tuple[int, int, str]:
    # A maker's fills come from several takers' executions: in the order the book made them.
    return (f.seq, f.fill_index, f.trade_id)


def _group(ledger: Ledger) -> dict[str, _Order]:
    orders: dict[str, _Order] = {}
    get = orders.get
    for acc in ledger.acceptances:
        order = get(acc.order_id)
        if order is None:
            order = orders[acc.order_id] = _Order(acc.order_id)
        known = order.copies.get(acc.region)
        if known is None or (known.updated_ms, known.status in CLOSED) <= (acc.updated_ms, acc.status in CLOSED):
            order.copies[acc.region] = acc
    # A trade counted once per order it fills (a matched trade fills its maker too).
    seen: set[tuple[str, str]] = set()
    for fill in ledger.fills:
        key = (fill.trade_id, fill.order_id)
        if key in seen:
            continue
        seen.add(key)
        order = get(fill.order_id)
        if order is None:
            order = orders[fill.order_id] = _Order(fill.order_id)
        region_fills = order.fills.get(fill.region)
        if region_fills is None:
            order.fills[fill.region] = [fill]
        else:
            region_fills.append(fill)
    for order in orders.values():
        for fills in order.fills.values():
            if len(fills) > 1:
                fills.sort(key=_fill_order)
    return orders


def unsettled_orders(ledger: Ledger) -> list[str]:
    return sorted(oid for oid, order in _group(ledger).items() if not order.settled())


class _Builder:
    def __init__(self, reference_prices: Mapping[str, Decimal]):
        self.reference_prices = reference_prices
        self.conflicts: list[Conflict] = []
        self.compensations: list[Compensation] = []
        self.adjustments: list[Adjustment] = []
        # trade id -> what the decisions so far reverse of it. A matched trade is a fill of
        # two orders: reversed once, by the first decision that reaches it from either side.
        self.reversed: dict[str, Decimal] = {}

    def reverse(self, conflict: Conflict, fill: Fill, reversed_qty: Decimal) -> None:
        already = self.reversed.get(fill.trade_id, ZERO)
        reversed_qty = min(reversed_qty, fill.qty - already)
        if reversed_qty <= ZERO:
            return
        self.reversed[fill.trade_id] = already + reversed_qty
        exec_type = TRADE_CANCEL if already + reversed_qty == fill.qty else TRADE_CORRECT
        cid = conflict.conflict_id
        comp_id = compensation_id(cid, fill.trade_id)
        comp = Compensation(
            compensation_id=comp_id,
            conflict_id=cid,
            trade_id=fill.trade_id,
            exec_type=exec_type,
            order_id=fill.order_id,
            client=fill.client,
            counterparty=fill.counterparty,
            symbol=fill.symbol,
            side=fill.side,
            region=fill.region,
            qty=fill.qty,
            price=fill.price,
            reversed_qty=reversed_qty,
            corrected_qty=fill.qty - already - reversed_qty,
            decided_ms=conflict.decided_ms,
        )
        self.compensations.append(comp)
        reference = self.reference_prices.get(fill.symbol, fill.price)
        for account, side in ((fill.client, fill.side), (fill.counterparty, _opposite(fill.side))):
            self.adjustments.append(
                Adjustment(
                    adjustment_id=adjustment_id(comp_id, account),
                    conflict_id=cid,
                    compensation_id=comp_id,
                    account=account,
                    order_id=fill.order_id,
                    trade_id=fill.trade_id,
                    symbol=fill.symbol,
                    side=side,
                    regions=conflict.regions,
                    qty=reversed_qty,
                    price=fill.price,
                    reference_price=reference,
                    amount=pnl_amount(side, reversed_qty, fill.price, reference),
                    decided_ms=conflict.decided_ms,
                )
            )


def _decide_divergent(order: _Order, out: _Builder) -> tuple[str, list[Fill]]:
    """Rule 1 for one settled order. Returns its standing region and standing fills."""
    ranked = order.ranked_regions()
    standing = ranked[0]
    copies, fills = order.copies, order.fills
    standing_fills = fills.get(standing, [])
    if len(ranked) < 2:
        return standing, standing_fills
    reversed_fills = [f for region in ranked[1:] for f in fills.get(region, ())]
    if not reversed_fills and len({(c.status, c.filled_qty) for c in copies.values() if c.status != SUPERSEDED}) <= 1:
        return standing, standing_fills  # the copies agree: nothing diverged
    cancelled = any(c.cancel_requested and c.status == "CANCELLED" for c in copies.values())
    with_fills = [r for r in ranked if fills.get(r)]
    kind = CANCEL_FILL_RACE if cancelled else DUPLICATE_FILL
    first = copies.get(standing) or next(iter(copies.values()))
    # A decision's time: the latest fact it rests on (every copy's writes, every fill).
    decided_ms = max(max(c.updated_ms, c.accept_ms) for c in copies.values())
    for region_fills in fills.values():
        for f in region_fills:
            if f.ts_ms > decided_ms:
                decided_ms = f.ts_ms
    cid = conflict_id(kind, order.order_id)
    detail = (
        f"order {order.order_id} accepted in {', '.join(ranked)}; fills in {', '.join(with_fills) or 'none'}; "
        f"{standing} accepted first and stands"
    )
    conflict = Conflict(
        conflict_id=cid,
        kind=kind,
        order_id=order.order_id,
        client=first.client,
        symbol=first.symbol,
        regions=tuple(sorted(ranked)),
        standing_region=standing,
        standing_trade_ids=tuple(f.trade_id for f in standing_fills),
        compensated_trade_ids=tuple(f.trade_id for f in reversed_fills),
        acceptances=tuple(copies[r] for r in ranked if r in copies),
        rule=STANDING_RULE,
        detail=detail,
        decided_ms=decided_ms,
    )
    out.conflicts.append(conflict)
    for fill in reversed_fills:
        out.reverse(conflict, fill, fill.qty)
    return standing, standing_fills


def _decide_limits(
    orders: dict[str, _Order],
    standing: dict[str, tuple[str, list[Fill]]],
    limits: Mapping[str, Decimal],
    out: _Builder,
    openings: Mapping[tuple[str, str], Opening] | None = None,
) -> None:
    """Rule 2: per (account, market), cut fills back to the position limit, replaying from
    the account's opening (what its retired orders left) if it has one."""
    openings = openings or {}
    accounts: dict[tuple[str, str], list[tuple[tuple[int, int, str], int, int, str, Fill]]] = defaultdict(list)
    unsettled_accounts: set[tuple[str, str]] = set()
    for order in orders.values():
        copies = order.copies
        if len(copies) == 1:
            copy: Acceptance | None = next(iter(copies.values()))
        else:
            copy = min(copies.values(), key=_rank) if copies else None
        if copy is not None:
            client, symbol = copy.client, copy.symbol
        else:
            some_fill = next((f for fs in order.fills.values() for f in fs), None)
            client = some_fill.client if some_fill else ""
            symbol = some_fill.symbol if some_fill else ""
        if symbol not in limits:
            continue
        stand = standing.get(order.order_id)
        if stand is None:
            unsettled_accounts.add((client, symbol))
            continue
        region, fills = stand
        if not fills:
            continue
        stand_copy = copies.get(region)
        rank = (stand_copy.accept_ms, stand_copy.seq, region) if stand_copy else (UNKNOWN_RANK, UNKNOWN_RANK, region)
        entries = accounts[(client, symbol)]
        for fill in fills:
            if out.reversed.get(fill.trade_id, ZERO) >= fill.qty:
                continue  # busted by rule 1 on its other order (a matched trade's other side)
            entries.append((rank, fill.seq, fill.fill_index, fill.trade_id, fill))
    for account in sorted(accounts):
        if account in unsettled_accounts:
            continue
        client, symbol = account
        limit = limits[symbol]
        # (rank, seq, fill index, trade id) is unique (a trade id is counted once per order): the fill is never compared.
        entries = sorted(accounts[account])
        opening = openings.get(account, NO_OPENING)
        position = opening.position
        # order id -> [(fill, reversed qty, position before, index of the fill in `entries`)]
        breaches: dict[str, list[tuple[Fill, Decimal, Decimal, int]]] = defaultdict(list)
        for index, (_, _, _, _, fill) in enumerate(entries):
            sign = 1 if fill.side == "BUY" else -1
            room = max(limit - sign * position, ZERO)  # how far this side may still go
            # What an earlier account's cut left of a matched trade (all of it otherwise).
            whole = fill.qty - out.reversed.get(fill.trade_id, ZERO)
            kept = min(whole, room)
            if kept < whole:
                breaches[fill.order_id].append((fill, whole - kept, position, index))
            position += sign * kept
        for order_id in sorted(breaches):
            cut = breaches[order_id]
            cut_ids = {fill.trade_id for fill, _, _, _ in cut}
            order = orders[order_id]
            stand_region, stand_fills = standing[order_id]
            # Only the facts up to the last cut fill: later fills cannot change this decision.
            prefix = [e[4] for e in entries[: cut[-1][3] + 1]]
            first_fill, _, before, _ = cut[0]
            conflict = Conflict(
                conflict_id=conflict_id(OVER_LIMIT, order_id),
                kind=OVER_LIMIT,
                order_id=order_id,
                client=client,
                symbol=symbol,
                regions=tuple(sorted({f.region for f in prefix} | opening.regions)),
                standing_region=stand_region,
                standing_trade_ids=tuple(f.trade_id for f in stand_fills if f.trade_id not in cut_ids),
                compensated_trade_ids=tuple(f.trade_id for f, _, _, _ in cut),
                acceptances=tuple(order.copies[r] for r in order.ranked_regions() if r in order.copies),
                rule=LIMIT_RULE,
                detail=(
                    f"{client} {symbol}: position {format(before, 'f')} plus {first_fill.side} "
                    f"{format(first_fill.qty, 'f')} exceeds the limit {format(limit, 'f')} once the regions' fills are merged"
                ),
                decided_ms=max([f.ts_ms for f in prefix] + [c.updated_ms for c in order.copies.values()] + [opening.last_ts_ms]),
            )
            out.conflicts.append(conflict)
            for fill, reversed_qty, _, _ in cut:
                out.reverse(conflict, fill, reversed_qty)


def reconcile(ledger: Ledger) -> Decisions:
    """Every conflict in the ledger and its one decision. Deterministic; O(n log n)."""
    return _reconcile(ledger)


def _reconcile(ledger: Ledger) -> Decisions:
    orders = _group(ledger)
    out = _Builder(ledger.reference_prices)
    standing: dict[str, tuple[str, list[Fill]]] = {}
    for order_id in sorted(orders):
        order = orders[order_id]
        if not order.settled():
            continue
        standing[order_id] = _decide_divergent(order, out)
    if ledger.limits:
        # Fills busted by rule 1 no longer count towards anyone's position.
        _decide_limits(orders, standing, ledger.limits, out, ledger.openings)
    return Decisions(tuple(out.conflicts), tuple(out.compensations), tuple(out.adjustments))


# --- retirement -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retirement:
    """What `retire` decided: the orders whose copies and fills may go, the new openings of
    the accounts they leave (markets with a limit), and their decisions, to be written
    (where not yet) before their state goes."""

    order_ids: tuple[str, ...] = ()
    openings: Mapping[tuple[str, str], Opening] = field(default_factory=dict)
    decisions: Decisions = field(default_factory=Decisions)
    # order id -> the signed position its standing fills add to its account's opening
    shares: Mapping[str, Decimal] = field(default_factory=dict)
    # Why the others stay, counted by the first rule each fails: pending (changed since the
    # last decision run), unsettled, recent (inside the horizon), not_everywhere (a region
    # lacks it), ranked_behind (an earlier order of its account may still fill).
    held_back: Mapping[str, int] = field(default_factory=dict)


def newest_fact_ms(order: _Order) -> int:
    newest = 0
    for copy in order.copies.values():
        newest = max(newest, copy.updated_ms, copy.accept_ms)
    for region_fills in order.fills.values():
        for fill in region_fills:
            if fill.ts_ms > newest:
                newest = fill.ts_ms
    return newest


def _account_of(order: _Order) -> tuple[str, str]:
    if order.copies:
        copy = min(order.copies.values(), key=_rank)
        return copy.client, copy.symbol
    fill = next(f for fs in order.fills.values() for f in fs)
    return fill.client, fill.symbol


def retire(
    ledger: Ledger,
    now_ms: int,
    horizon_ms: int,
    regions: Iterable[str],
    held_in: Mapping[str, Iterable[str]],
    pending: Iterable[str] = (),
) -> Retirement:
    """The orders of `ledger` that can no longer change a decision, at stream time `now_ms`
    (the rule in the module note). `held_in`: order id -> the regions whose stream showed a
    replica of it; `pending`: the orders changed since the last decision run. Pure."""
    return _retire(ledger, now_ms, horizon_ms, frozenset(regions), held_in, frozenset(pending))


def _retire(
    ledger: Ledger, now_ms: int, horizon_ms: int, regions: frozenset[str], held_in: Mapping[str, Iterable[str]], pending: frozenset[str]
) -> Retirement:
    orders = _group(ledger)
    cutoff = now_ms - horizon_ms
    quiet: set[str] = set()
    held_back: dict[str, int] = defaultdict(int)
    for order_id, order in orders.items():
        if order_id in pending:
            held_back["pending"] += 1
        elif not order.settled():
            held_back["unsettled"] += 1
        elif newest_fact_ms(order) > cutoff:
            held_back["recent"] += 1
        elif not regions <= set(order.copies).union(held_in.get(order_id, ())):
            held_back["not_everywhere"] += 1
        else:
            quiet.add(order_id)
    limits = ledger.limits
    if limits:
        # Per account in a market with a limit: only the quiet orders that rank before every
        # order still able to change (a fill yet to come enters the replay at its order's rank).
        blocking: dict[tuple[str, str], tuple[int, int, str]] = {}
        ranked: list[tuple[tuple[str, str], tuple[int, int, str], str]] = []
        for order_id, order in orders.items():
            account = _account_of(order)
            if account[1] not in limits:
                continue
            if order_id in quiet:
                stand = order.ranked_regions()[0]
                if order.fills.get(stand):
                    copy = order.copies[stand]
                    ranked.append((account, (copy.accept_ms, copy.seq, stand), order_id))
                continue
            # Its copy not seen yet: it may rank anywhere, so it holds the whole account.
            rank = min((_rank(c) for c in order.copies.values()), default=(-1, -1, ""))
            if account not in blocking or rank < blocking[account]:
                blocking[account] = rank
        for account, rank, order_id in ranked:
            if account in blocking and rank >= blocking[account]:
                quiet.discard(order_id)
                held_back["ranked_behind"] += 1
    if not quiet:
        return Retirement(held_back=dict(held_back))
    retiring = sorted(quiet)
    sub = Ledger(
        acceptances=tuple(c for o in retiring for c in orders[o].copies.values()),
        fills=tuple(f for o in retiring for fs in orders[o].fills.values() for f in fs),
        reference_prices=ledger.reference_prices,
        limits=limits,
        openings=ledger.openings,
    )
    decisions = _reconcile(sub)
    openings: dict[tuple[str, str], Opening] = {}
    shares: dict[str, Decimal] = {}
    if limits:
        reversed_qty = decisions.compensated()
        for order_id in retiring:
            order = orders[order_id]
            account = _account_of(order)
            if account[1] not in limits:
                continue
            stand_fills = order.fills.get(order.ranked_regions()[0], ())
            if not stand_fills:
                continue
            opening = openings.get(account) or ledger.openings.get(account, NO_OPENING)
            places, last = set(opening.regions), opening.last_ts_ms
            share = ZERO
            for fill in stand_fills:
                kept = fill.qty - reversed_qty.get(fill.trade_id, ZERO)
                share += kept if fill.side == "BUY" else -kept
                places.add(fill.region)
                last = max(last, fill.ts_ms)
            shares[order_id] = share
            openings[account] = Opening(opening.position + share, frozenset(places), last)
    return Retirement(tuple(retiring), openings, decisions, shares, dict(held_back))

