"""Time ranges as pages and API take them: the presets (``24h``), and ``from``/``to`` typed as
ISO 8601 times, in nanoseconds since the epoch (the unit of every stored time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

RangePreset = Literal["5m", "15m", "1h", "6h", "24h", "7d", "30d", "all"]

#: Time range presets: query value, label, seconds (``None``: no lower bound).
RANGES: list[tuple[str, str, int | None]] = [
    ("5m", "last 5 minutes", 5 * 60),
    ("15m", "last 15 minutes", 15 * 60),
    ("1h", "last hour", 3600),
    ("6h", "last 6 hours", 6 * 3600),
    ("24h", "last 24 hours", 24 * 3600),
    ("7d", "last 7 days", 7 * 86400),
    ("30d", "last 30 days", 30 * 86400),
    ("all", "all time", None),
]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The nanoseconds a bigint column holds: from 1677 to 2262.
_NS_LIMIT = 2**63 - 1


def preset_start(preset: str, now_ns: int) -> int:
    """The start of the preset range ending at ``now_ns`` (0 for ``all``)."""
    seconds = next(s for value, _, s in RANGES if value == preset)
    return 0 if seconds is None else now_ns - seconds * 1_000_000_000


def zone_name(zone: tzinfo) -> str:
    """``Europe/Paris`` for a zone read from the database, ``UTC`` for UTC."""
    return getattr(zone, "key", None) or "UTC"


def parse_moment(field: str, text: str, zone: tzinfo) -> int:
    """Nanoseconds since the epoch of ``text`` (ISO 8601: ``2026-11-26T09:30``; in ``zone``
    unless it names its offset); ``ValueError`` naming ``field`` when it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{field}={text!r} is not a date and time: use YYYY-MM-DDTHH:MM "
            f"(in {zone_name(zone)}, or with an offset like +01:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    ns = (moment - _EPOCH) // timedelta(microseconds=1) * 1000
    if not -_NS_LIMIT <= ns <= _NS_LIMIT:
        raise ValueError(f"{field}={text!r} is out of range: pick a time between 1678 and 2261")
    return ns


def custom_range(from_: str, to: str, zone: tzinfo) -> tuple[int | None, int | None]:
    """The start and end (exclusive) in nanoseconds of ``from``/``to`` typed in ``zone``; an
    empty one leaves that side open. ``ValueError`` when one is not a time, or when ``from`` is
    not before ``to``."""
    since = parse_moment("from", from_, zone) if from_.strip() else None
    until = parse_moment("to", to, zone) if to.strip() else None
    if since is not None and until is not None and since >= until:
        raise ValueError(
            f"from={from_!r} is not before to={to!r}: the range would hold no run; "
            "pick a 'from' earlier than the 'to'"
        )
    return since, until
