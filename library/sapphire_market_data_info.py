#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_market_data_info
short_description: Check that market data is fresh - the newest trade per symbol is within its threshold
description:
  - Reads the newest row of the C(trades) table per symbol and reports one check per symbol, ok
    when it is younger than O(max_age) (or the symbol's entry in O(max_age_overrides)), fail when
    older or absent. Ages are computed by the database clock, so a skewed controller clock does
    not matter.
  - With O(symbols) empty, the symbols are those traded within O(lookback); no trade at all in
    that window fails.
  - An unreachable PostgreSQL or a missing C(trades) table is a failing check, never a module failure.
version_added: "1.0.0"
author: sapphire-ops
options:
  symbols:
    description: Symbols that must have fresh trades; empty means every symbol seen within O(lookback).
    type: list
    elements: str
    default: []
  max_age:
    description: Seconds after which a symbol's newest trade is stale.
    type: float
    default: 300
  max_age_overrides:
    description: Per-symbol thresholds in seconds (for example a thinly traded pair).
    type: dict
    default: {}
  lookback:
    description: Seconds of history searched for symbols when O(symbols) is empty.
    type: float
    default: 86400
extends_documentation_fragment:
  - sapphire.health
  - sapphire.postgres
  - sapphire.timeout
requirements:
  - psycopg >= 3
"""

EXAMPLES = r"""
- name: Check that every traded symbol had a trade in the last five minutes
  sapphire_market_data_info:
    postgres_port: 15432
    postgres_password: "{{ postgres_password }}"
    max_age: 300
    max_age_overrides:
      DOGE/USDT: 900
"""

RETURN = r"""
healthy:
  description: True when every symbol is fresh.
  returned: always
  type: bool
target:
  description: The server that was read.
  returned: always
  type: str
checks:
  description: postgres_reachable, then market_data:<symbol> per symbol.
  returned: always
  type: list
  elements: dict
problems:
  description: Sentences an operator can act on.
  returned: always
  type: list
  elements: str
symbols:
  description: Per symbol the newest trade time and its age in seconds (null when none).
  returned: always
  type: dict
  sample: {BTC/USDT: {newest: "2026-11-21 10:00:00+00", age_seconds: 3.2}}
"""

from typing import Any

from ansible.module_utils.sapphire_connections import (
    POSTGRES_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    postgres_connect,
    run_health_module,
)
from ansible.module_utils.sapphire_trading import MARKET_DATA_SPEC, validate_max_age_overrides
from ansible.module_utils.sapphire_trading import market_data_collect as collect


def main() -> None:
    def run(params: dict[str, Any]) -> dict[str, Any]:
        validate_max_age_overrides(params["max_age_overrides"])
        return collect(params, postgres_connect)

    run_health_module(argument_spec(POSTGRES_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC, MARKET_DATA_SPEC), run,
                      needs=("psycopg",), ports=("postgres_port",), positive=("connect_timeout", "max_age", "lookback"))


if __name__ == "__main__":
    main()
