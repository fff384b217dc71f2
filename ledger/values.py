"""The one strict reading of times and decimals in signed content (PROTOCOL.md 1,
docs/protocol.md 2).

A time is RFC 3339 in UTC with a ``Z`` suffix: ``YYYY-MM-DDTHH:MM:SS`` with an optional
fraction of 1 to 9 digits, ASCII digits only, nothing before or after (no trailing
newline), and a real calendar date and time of day (no month 13, no February 30, no
second 60). A decimal is ``-?(0|[1-9][0-9]{0,29})(\\.[0-9]{1,30})?`` with ASCII digits
only, read exactly as a ``Fraction``; sums against limits are made with these fractions,
so no rounding context ever applies.

``parse_time`` and ``parse_decimal`` return None for anything else; callers raise their
own error (a record field, a header field, the genesis) naming the field.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from fractions import Fraction
from functools import lru_cache

__all__ = ["decimal_str", "parse_decimal", "parse_time"]

_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?Z")
_DECIMAL = re.compile(r"(-?)(0|[1-9][0-9]{0,29})(?:\.([0-9]{1,30}))?")


def parse_time(value: object) -> datetime | None:
    """The UTC time ``value`` names (to the microsecond), or None if it is not a time in
    the form above."""
    # The longest time is 30 characters: longer strings are refused before the cache.
    return _time(value) if type(value) is str and len(value) <= 30 else None


@lru_cache(maxsize=4096)  # records of one second share their time
def _time(value: str) -> datetime | None:
    m = _TIME.fullmatch(value)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int(((m[7] or ".")[1:] + "000000")[:6])
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError:  # not a real date or time of day
        return None


def parse_decimal(value: object) -> Fraction | None:
    """The exact value of a decimal string in the form above, or None."""
    # The longest decimal is 62 characters: longer strings are refused before the cache.
    return _decimal(value) if type(value) is str and len(value) <= 62 else None


@lru_cache(maxsize=4096)  # amounts repeat (a policy's epsilon, quality scores)
def _decimal(value: str) -> Fraction | None:
    m = _DECIMAL.fullmatch(value)
    if m is None:
        return None
    sign, whole, frac = m[1], m[2], m[3] or ""
    units = int(whole + frac)
    return Fraction(-units if sign else units, 10 ** len(frac))


def decimal_str(value: Fraction) -> str:
    """``value`` as the shortest decimal string of that exact value (``"1"``, ``"0.0009"``,
    ``"-2.5"``). Raises ValueError for a fraction with no finite decimal expansion (a
    denominator with a prime factor other than 2 and 5); sums of decimals have none."""
    num, den = value.numerator, value.denominator
    places = 0
    while den % 10 == 0:
        den //= 10
        places += 1
    for p in (2, 5):
        while den % p == 0:
            den //= p
            num *= 10 // p
            places += 1
    if den != 1:
        raise ValueError(f"{value} has no finite decimal expansion")
    sign = "-" if num < 0 else ""
    digits = str(abs(num)).rjust(places + 1, "0")
    if not places:
        return sign + digits
    whole, frac = digits[:-places], digits[-places:].rstrip("0")
    return sign + whole + ("." + frac if frac else "")
