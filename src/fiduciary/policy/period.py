"""Periods of time as privacy law writes them: "1 month", "45 days", "15 business days".

A policy states deadlines and retention in the units the law uses. Months are calendar
months (GDPR Art. 12 counts "one month" from the day of receipt), business days skip
Saturdays and Sundays (CCPA), and ``session`` means "until the browser closes".
ISO 8601 durations (``P30D``, ``P1Y6M``) are accepted too.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

Unit = Literal["hour", "day", "business_day", "week", "month", "year", "session"]

_UNIT_WORDS: dict[str, Unit] = {
    "hour": "hour",
    "hours": "hour",
    "day": "day",
    "days": "day",
    "calendar day": "day",
    "calendar days": "day",
    "business day": "business_day",
    "business days": "business_day",
    "working day": "business_day",
    "working days": "business_day",
    "week": "week",
    "weeks": "week",
    "month": "month",
    "months": "month",
    "year": "year",
    "years": "year",
}
_PLAIN = re.compile(r"^\s*(\d+)\s+([a-z ]+?)\s*$")
_ISO = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?)?$")

# Average lengths, only for ordering periods ("is the new retention longer?").
_APPROX_DAYS: dict[Unit, float] = {
    "hour": 1 / 24,
    "day": 1,
    "business_day": 7 / 5,
    "week": 7,
    "month": 30.44,
    "year": 365.25,
    "session": 0,
}


class PeriodError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Period:
    """An amount of one unit. Composite ISO durations are kept as parts."""

    parts: tuple[tuple[int, Unit], ...]

    @classmethod
    def parse(cls, value: Any) -> Period:
        if isinstance(value, Period):
            return value
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise PeriodError(
                f"expected a period such as '30 days', '1 month', '15 business days' or 'P30D', got {value!r}"
            )
        if isinstance(value, int):
            raise PeriodError(f"a period needs a unit: write '{value} days', not {value}")
        text = value.strip()
        if text.lower() == "session":
            return cls(((0, "session"),))
        m = _PLAIN.match(text.lower())
        if m:
            unit = _UNIT_WORDS.get(m.group(2))
            if unit is None:
                raise PeriodError(
                    f"unknown unit {m.group(2)!r} in period {value!r}; use hours, days, "
                    "business days, weeks, months or years"
                )
            return cls(((int(m.group(1)), unit),))
        m = _ISO.match(text.upper())
        if m and any(m.groups()):
            units: tuple[Unit, ...] = ("year", "month", "week", "day", "hour")
            parts = tuple((int(g), u) for g, u in zip(m.groups(), units, strict=True) if g)
            return cls(parts)
        raise PeriodError(
            f"cannot read period {value!r}; write e.g. '30 days', '1 month', "
            "'15 business days', '72 hours', 'session' or an ISO 8601 duration like 'P30D'"
        )

    @property
    def is_session(self) -> bool:
        return self.parts == ((0, "session"),)

    def approx_days(self) -> float:
        return sum(n * _APPROX_DAYS[u] for n, u in self.parts)

    def add_to(self, start: datetime | date) -> datetime | date:
        """The moment this period after ``start`` ends (calendar-aware)."""
        if self.is_session:
            raise PeriodError("a session period has no fixed end")
        result = start
        for n, unit in self.parts:
            if unit == "hour":
                result = result + timedelta(hours=n)
            elif unit == "day":
                result = result + timedelta(days=n)
            elif unit == "week":
                result = result + timedelta(weeks=n)
            elif unit == "business_day":
                result = _add_business_days(result, n)
            elif unit == "month":
                result = _add_months(result, n)
            elif unit == "year":
                result = _add_months(result, 12 * n)
        return result

    def __str__(self) -> str:
        if self.is_session:
            return "session"
        words = []
        for n, unit in self.parts:
            name = unit.replace("_", " ")
            words.append(f"{n} {name}{'' if n == 1 else 's'}")
        return " ".join(words)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
            json_schema_input_schema=core_schema.str_schema(),
        )

    @classmethod
    def _validate(cls, value: Any) -> Period:
        try:
            return cls.parse(value)
        except PeriodError as exc:
            raise ValueError(str(exc)) from None


def _add_months(start: datetime | date, months: int) -> datetime | date:
    month0 = start.month - 1 + months
    year = start.year + month0 // 12
    month = month0 % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


def _add_business_days(start: datetime | date, days: int) -> datetime | date:
    result = start
    added = 0
    while added < days:
        result = result + timedelta(days=1)
        if result.weekday() < 5:
            added += 1
    return result
