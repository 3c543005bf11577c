"""Decoding the variable-length client requests (placeOrder), following ib_async's client.py.

``placeOrder`` has optional blocks (combo legs, delta-neutral, scale, hedge, algo params), so
the fields after the fixed head are walked in order, exactly as ``Client.placeOrder`` writes
them at server version 178.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.errors import InvalidMessageError


@dataclass(frozen=True)
class PlaceOrderRequest:
    order_id: int
    contract: list[str]  # conId, symbol, secType, expiry, strike, right, multiplier, exchange,
    # primaryExchange, currency, localSymbol, tradingClass
    action: str
    total_qty: float
    order_type: str
    lmt_price: float
    aux_price: float
    tif: str
    account: str
    order_ref: str
    transmit: bool
    parent_id: int
    algo_strategy: str
    what_if: bool


def _num(text: str) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


class _Cursor:
    def __init__(self, fields: list[str], start: int) -> None:
        self.fields = fields
        self.i = start

    def take(self, n: int = 1) -> list[str]:
        if self.i + n > len(self.fields):
            raise InvalidMessageError("placeOrder", len(self.fields), "message too short")
        out = self.fields[self.i : self.i + n]
        self.i += n
        return out

    def one(self) -> str:
        return self.take(1)[0]

    def skip(self, n: int) -> None:
        self.take(n)


def parse_place_order(fields: list[str], sv: int = 178) -> PlaceOrderRequest:
    """Fields of a placeOrder (message id 3) as ib_async writes them for server version sv."""
    if len(fields) < 29:
        raise InvalidMessageError("placeOrder", len(fields), "message too short")
    c12 = fields[2:14]
    cur = _Cursor(fields, 28)  # after transmit
    parent_id = int(_num(cur.one()))
    cur.skip(6)  # blockOrder, sweepToFill, displaySize, triggerMethod, outsideRth, hidden
    if c12[2] == "BAG":
        cur.skip(8 * int(_num(cur.one())))  # combo legs
        cur.skip(int(_num(cur.one())))  # order combo legs (price each)
        cur.skip(2 * int(_num(cur.one())))  # smart combo routing params
    cur.skip(7)  # "", discretionaryAmt, goodAfterTime, goodTillDate, faGroup/Method/Percentage
    if sv < 177:
        cur.skip(1)  # faProfile
    cur.skip(20)  # modelCode ... overridePercentageConstraints
    cur.skip(2)  # volatility, volatilityType
    dn_type = cur.one()
    cur.skip(1)  # deltaNeutralAuxPrice
    if dn_type:
        cur.skip(8)
    cur.skip(6)  # continuousUpdate ... scaleSubsLevelSize
    increment = _num(cur.one())
    if 0 < increment < 1.7976931348623157e308:
        cur.skip(7)
    cur.skip(3)  # scaleTable, activeStartTime, activeStopTime
    if cur.one():  # hedgeType
        cur.skip(1)
    cur.skip(4)  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
    if cur.one() == "1":  # delta-neutral contract
        cur.skip(3)
    algo = cur.one()
    if algo:
        cur.skip(2 * int(_num(cur.one())))
    cur.skip(1)  # algoId
    what_if = cur.one() == "1"
    return PlaceOrderRequest(
        order_id=int(_num(fields[1])),
        contract=c12,
        action=fields[16].upper(),
        total_qty=_num(fields[17]),
        order_type=fields[18].upper(),
        lmt_price=_num(fields[19]),
        aux_price=_num(fields[20]),
        tif=fields[21] or "DAY",
        account=fields[23],
        order_ref=fields[26],
        transmit=fields[27] != "0",
        parent_id=parent_id,
        algo_strategy=algo,
        what_if=what_if,
    )
