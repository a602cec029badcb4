"""ExecutionReport bodies for simulated fills, FIX.4.4 and FIX.4.2.

Bodies are pre-encoded ``tag=value<SOH>`` strings so the LP simulator can
stream them through ``Session.send_batch`` without building message objects.
Decimal values are written from their exact string form.

FIX.4.4: ExecType 150 = F (trade), G (trade correct), H (trade cancel).
FIX.4.2: ExecTransType 20 = 0 new, 2 correct, 1 cancel; ExecType 150 carries
the order state (1 partial fill, 2 fill).  Forwards carry SettlType 6 and
their SettlDate.
"""

from __future__ import annotations

from datetime import date

from fixsim.scenario import SimFill

_TRANS_TYPE_42 = {"F": "0", "G": "2", "H": "1"}


def wire_settl_type(settl_type: str) -> str:
    """Tenors (W1, M1, M3) go out as 6 (FUTURE) with the SettlDate: the
    standard FIX.4.2/4.4 dictionaries have no tenor values for tag 63."""
    return settl_type if len(settl_type) == 1 else "6"


_ts_cache: dict[tuple[int, int, int, int, int, int], str] = {}
_date_cache: dict[date, str] = {}
_order_cache: dict[tuple[str, ...], str] = {}
_CACHE_LIMIT = 8192


def _ts(fill: SimFill) -> str:
    t = fill.transact_time
    key = (t.year, t.month, t.day, t.hour, t.minute, t.second)
    prefix = _ts_cache.get(key)
    if prefix is None:
        if len(_ts_cache) > _CACHE_LIMIT:
            _ts_cache.clear()
        prefix = _ts_cache[key] = f"{t:%Y%m%d-%H:%M:%S}."
    return f"{prefix}{t.microsecond // 1000:03d}"


def _date(d: date) -> str:
    text = _date_cache.get(d)
    if text is None:
        if len(_date_cache) > _CACHE_LIMIT:
            _date_cache.clear()
        text = _date_cache[d] = f"{d:%Y%m%d}"
    return text


def _order_part(fill: SimFill, fix44: bool) -> str:
    """Order-level fields, the same for every fill of an order: cached."""
    key = (fill.order_id, fill.cl_ord_id, fill.account, fill.symbol, fill.side,
           str(fill.order_qty), fill.currency, "4" if fix44 else "2")
    part = _order_cache.get(key)
    if part is None:
        if len(_order_cache) > _CACHE_LIMIT:
            _order_cache.clear()
        product = "460=4\x01" if fix44 else ""
        part = _order_cache[key] = (
            f"37={fill.order_id}\x0111={fill.cl_ord_id}\x011={fill.account}\x01"
            f"55={fill.symbol}\x01{product}54={fill.side}\x0138={fill.order_qty}\x01"
            f"15={fill.currency}\x01")
    return part


def er_body(fill: SimFill, begin_string: str = "FIX.4.4") -> str:
    """The body of an ExecutionReport (35=8) for one fill."""
    fix44 = begin_string >= "FIX.4.4"
    ref = f"19={fill.exec_ref_id}\x01" if fill.exec_ref_id else ""
    if fix44:
        kind = f"150={fill.exec_type}\x01"
    else:
        kind = f"20={_TRANS_TYPE_42[fill.exec_type]}\x01150={'2' if fill.leaves_qty == 0 else '1'}\x01"
    forward = ""
    if fill.spot_rate is not None:
        forward = f"194={fill.spot_rate}\x01"
    if fill.forward_points is not None:
        forward += f"195={fill.forward_points}\x01"
    return (f"{_order_part(fill, fix44)}17={fill.exec_id}\x01{ref}{kind}39={fill.ord_status}\x01"
            f"32={fill.last_qty}\x0131={fill.last_px}\x01151={fill.leaves_qty}\x01"
            f"14={fill.cum_qty}\x016={fill.avg_px}\x0175={_date(fill.trade_date)}\x01"
            f"60={_ts(fill)}\x0163={wire_settl_type(fill.settl_type)}\x01"
            f"64={_date(fill.settl_date)}\x01{forward}")


def md_body(symbol: str, bid: object, offer: object, size: object = 1_000_000) -> str:
    """The body of a MarketDataSnapshotFullRefresh (35=W): one bid, one offer."""
    return (f"55={symbol}\x01268=2\x01269=0\x01270={bid}\x01271={size}\x01"
            f"269=1\x01270={offer}\x01271={size}\x01")
