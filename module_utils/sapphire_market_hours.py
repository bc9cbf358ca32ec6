# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Market-hours windows: parsed ({days, start, end, timezone}, IANA zones, overnight windows) and matched to a clock.

Standard library only: the trading gate (sapphire_gate) decides with it, and the controller's input check
(filter_plugins/release_inputs.py) loads this file by path to refuse a bad agents_gate_market_hours, naming the
variable, before a playbook writes anything.
"""

from __future__ import annotations

import datetime
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def parse_market_hours(windows: list[dict[str, Any]] | None, option: str = "market_hours") -> list[dict[str, Any]]:
    """The windows as {days, start, end, timezone} with minutes since midnight; ValueError naming the bad field.

    A window is {days: [mon, ...], start: "HH:MM", end: "HH:MM", timezone: "America/New_York"} (timezone default
    UTC, days default every day). An end before the start runs overnight into the next day."""
    parsed = []
    for index, window in enumerate(windows or []):
        where = f"{option}[{index}]"
        if not isinstance(window, dict):
            raise ValueError(f"{where} must be a dict with days, start, end and timezone, got {window!r}")
        unknown = sorted(set(window) - {"days", "start", "end", "timezone"})
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)} (days, start, end, timezone)")
        days = window.get("days", list(DAYS))
        if isinstance(days, str) or not isinstance(days, list) or not days \
                or any(str(day).lower() not in DAYS for day in days):
            raise ValueError(f"{where}.days must be a list of {', '.join(DAYS)}, got {days!r}")
        bounds = []
        for key in ("start", "end"):
            match = CLOCK.match(str(window.get(key, "")))
            if not match:
                raise ValueError(f"{where}.{key} must be a time HH:MM (24 h), got {window.get(key)!r}")
            bounds.append(int(match.group(1)) * 60 + int(match.group(2)))
        if bounds[0] == bounds[1]:
            raise ValueError(f"{where}: start and end are both {window['start']}; a window must have a length")
        zone = str(window.get("timezone", "UTC"))
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{where}.timezone {zone!r} is not a known time zone (e.g. UTC, America/New_York)") \
                from exc
        days = [str(day).lower() for day in days]
        named = "every day" if set(days) == set(DAYS) else "/".join(days)
        parsed.append({"days": days, "start": bounds[0], "end": bounds[1], "timezone": zone,
                       "text": f"{named} {window['start']}-{window['end']} {zone}"})
    return parsed


def market_window(windows: list[dict[str, Any]], now: datetime.datetime) -> str:
    """The text of the parsed window `now` (aware) falls in, or ''. An overnight window belongs to its start day."""
    for window in windows:
        local = now.astimezone(ZoneInfo(window["timezone"]))
        minute = local.hour * 60 + local.minute
        today, yesterday = DAYS[local.weekday()], DAYS[(local.weekday() - 1) % 7]
        if window["start"] < window["end"]:
            inside = today in window["days"] and window["start"] <= minute < window["end"]
        else:
            inside = (today in window["days"] and minute >= window["start"]) or \
                     (yesterday in window["days"] and minute < window["end"])
        if inside:
            return window["text"]
    return ""
