"""``appliance usage``: the usage ledger's totals by day, key and model, from its file.

The same table as ``GET /admin/usage``, read from the SQLite file directly (the server
need not run). The file is ``--file``, else the config's ``state.usage_path``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

import orjson

from appliance.accounting.report import BadFilter, Filters, as_csv, as_json, as_table, report
from appliance.errors import ConfigError


def add_parser(commands: Any) -> None:
    """The ``usage`` subcommand and its flags."""
    usage = commands.add_parser("usage", help="print usage and cost by day, key and model")
    usage.add_argument("-c", "--config", type=Path, help="cluster YAML naming state.usage_path")
    usage.add_argument("-f", "--file", type=Path, help="the ledger file (beats the config's)")
    usage.add_argument("--key", help="only this key's name")
    usage.add_argument("--model", help="only this model")
    usage.add_argument("--from", dest="start", help="from this date or time (UTC)")
    usage.add_argument("--to", dest="end", help="up to this date (included) or time")
    usage.add_argument("--format", choices=["table", "csv", "json"], default="table")


def run(args: argparse.Namespace) -> int:
    """Print the report; 2 when the file or a filter cannot be used."""
    path, currency = args.file, "USD"
    if path is None or args.config is not None:
        from appliance.config import load_from_environment

        try:
            _, config = load_from_environment(config=args.config)
        except ConfigError as exc:
            print(f"appliance: invalid configuration {exc.source}", file=sys.stderr)
            for problem in exc.problems:
                print(f"  - {problem}", file=sys.stderr)
            return 2
        currency = config.billing.currency
        path = path or config.state.usage_path
        if path is None:
            print("appliance: the config sets no state.usage_path; give --file", file=sys.stderr)
            return 2
    try:
        found = report(path, Filters.parse(args.key, args.model, args.start, args.end), currency)
    except BadFilter as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, sqlite3.Error) as exc:
        print(f"appliance: cannot read the usage ledger: {exc}", file=sys.stderr)
        return 2
    if args.format == "csv":
        sys.stdout.write(as_csv(found.rows))
    elif args.format == "json":
        sys.stdout.write(orjson.dumps(as_json(found.rows, found.currency)).decode() + "\n")
    else:
        print(as_table(found.rows, found.currency))
    return 0
