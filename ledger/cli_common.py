"""What every ``provledger`` command shares: the exit codes, the help layout, the chain
source options and record ids.

The contract (README "CLI contract"):

- exit 0: success;
- exit 1: a verification failed, or the chain refused what was asked (a rule);
- exit 2: usage, or input that cannot be read (a missing or malformed file, an unknown or
  ambiguous record id, a node that cannot be reached or answers with an error);
- exit 130: interrupted (Ctrl-C).

Errors are one line on stderr, ``error: ...``. A chain is read from ``--db PATH``,
``--node URL`` (default ``$PROVLEDGER_NODE``) or ``--bundle FILE``; a record is named by
its id or by a unique prefix of at least 8 hex characters.
"""

from __future__ import annotations

import inspect
import json
import re
import sqlite3
from collections.abc import Callable
from typing import Any

import click

from .errors import InputError, LedgerError, PeerError, RuleError, VerificationError

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "MIN_PREFIX",
    "Command",
    "Group",
    "check_prefix",
    "emit",
    "exit_code",
    "full_id",
    "node_option",
    "pick_source",
    "resolve_id",
    "source_options",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MIN_PREFIX = 8  # hex characters of a record id prefix
_HEX = re.compile(r"[0-9a-f]+")


def exit_code(e: LedgerError) -> int:
    """1 for a failed verification or a refusal by the chain's rules (a node says so with
    HTTP 422), 2 for everything else: the input could not be read or used."""
    if isinstance(e, VerificationError | RuleError):
        return EXIT_FAILED
    if isinstance(e, PeerError) and e.details.get("status") == 422:
        return EXIT_FAILED
    return EXIT_USAGE


def _split_example(text: str | None) -> tuple[str | None, str | None]:
    """(description, example block) of a docstring whose last block is ``Example(s):``."""
    if not text:
        return text, None
    text = inspect.cleandoc(text)
    at = text.rfind("\b\nExample")
    if at < 0:
        at = text.rfind("\n\nExample")
    if at < 0:
        return text, None
    return text[:at].rstrip(), text[at:].lstrip("\n")


class Command(click.Command):
    """A command whose help ends with its example: the docstring's last block
    (``Example:`` or ``Examples:``) is printed after the options."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if self.epilog is None:
            self.help, self.epilog = _split_example(self.help)


class Group(click.Group):
    """A group of Commands that turns errors into the exit codes above, one line each."""

    command_class = Command
    group_class = type  # subgroups are Groups too

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if self.epilog is None:
            self.help, self.epilog = _split_example(self.help)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LedgerError as e:
            click.echo(f"error: {e.message}", err=True)
            ctx.exit(exit_code(e))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except sqlite3.DatabaseError as e:  # a file that is not a readable SQLite database
            click.echo(f"error: the database cannot be read: {e}", err=True)
            ctx.exit(EXIT_USAGE)
        except OSError as e:  # a file that cannot be read or written
            where = f": {e.filename}" if e.filename else ""
            click.echo(f"error: {e.strerror or e}{where}", err=True)
            ctx.exit(EXIT_USAGE)


def emit(data: Any, as_json: bool, human: str | None = None) -> None:
    """Print ``data`` as JSON (``--json``, or when there is no human form), else ``human``."""
    if as_json or human is None:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(human)


# --- where a chain is read from ---------------------------------------------------------------
def node_option(default: str | None = None, help: str = "Node URL.") -> Callable[..., Any]:
    """``--node URL``, defaulting to ``$PROVLEDGER_NODE`` (then to ``default``)."""
    more = f" [default: $PROVLEDGER_NODE, else {default}]" if default else " [default: $PROVLEDGER_NODE]"
    return click.option("--node", "node", envvar="PROVLEDGER_NODE", default=default, metavar="URL",
                        help=help + more)


def source_options(*, bundle: bool = True, node_help: str = "Read the chain from a node: its final blocks are fetched.") -> Callable[..., Any]:
    """``--db PATH``, ``--node URL`` and (unless ``bundle=False``) ``--bundle FILE``."""

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        if bundle:
            f = click.option("--bundle", "bundle", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                             help="Read the chain from an exported audit bundle.")(f)
        f = node_option(help=node_help)(f)
        return click.option("--db", "db", type=click.Path(dir_okay=False), default=None, metavar="PATH",
                            help="Read the chain from a node's database file.")(f)

    return deco


def pick_source(db: str | None, node: str | None, bundle: str | None = None, *,
                with_bundle: bool = True) -> tuple[str | None, str | None, str | None]:
    """The one source given: ``$PROVLEDGER_NODE`` counts only when neither ``--db`` nor
    ``--bundle`` is given. Raises InputError (exit 2) for none or several."""
    ctx = click.get_current_context(silent=True)
    from_env = ctx is not None and ctx.get_parameter_source("node") in (
        click.core.ParameterSource.ENVIRONMENT, click.core.ParameterSource.DEFAULT)
    if from_env and (db is not None or bundle is not None):
        node = None
    given = [x for x in (db, node, bundle) if x is not None]
    if len(given) != 1:
        names = "--db PATH, --node URL or --bundle FILE" if with_bundle else "--db PATH or --node URL"
        raise InputError(f"give exactly one of {names} (or set PROVLEDGER_NODE)", code="bad_argument")
    return db, node, bundle


# --- record ids -------------------------------------------------------------------------------
def check_prefix(text: str, what: str) -> None:
    """Refuse (exit 2) what is neither a record id nor a prefix of 8 or more hex characters."""
    if not (MIN_PREFIX <= len(text) <= 64 and _HEX.fullmatch(text)):
        raise InputError(f"{what} must be a record id or a prefix of at least {MIN_PREFIX} lowercase hex "
                         f"characters, got {text!r}", code="bad_record_id")


def _one(text: str, found: list[str]) -> str:
    if not found:
        raise InputError(f"no committed record with id {text}" + ("…" if len(text) < 64 else ""), code="not_found")
    if len(found) > 1:
        raise InputError(f"record id prefix {text} is ambiguous: give more characters", code="ambiguous_id")
    return found[0]


def store_ids(store: Any, prefix: str) -> list[str]:
    """Up to two committed record ids starting with ``prefix`` (an index range scan:
    every id with the prefix sorts in [prefix, prefix + "g"))."""
    rows = store.reader.execute("SELECT id FROM records WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                                (prefix, prefix + "g")).fetchall()
    return [r[0] for r in rows]


def resolve_id(source: Any, text: str, what: str = "RECORD_ID") -> str:
    """The full id of the committed record named by ``text`` (an id or a unique prefix of
    at least 8 hex characters) in ``source``: a ``ledger.store.Store`` or a ChainReader."""
    check_prefix(text, what)
    if len(text) == 64:
        return text
    from .reader import StoreReader
    from .records import RECORD_TYPES

    store = source.store if isinstance(source, StoreReader) else source
    if hasattr(store, "reader"):
        return _one(text, store_ids(store, text))
    found: list[str] = []
    for rtype in RECORD_TYPES:
        found += [rid for _i, rid, _e in source.records_of_type(rtype) if rid.startswith(text)]
        if len(found) > 1:
            break
    return _one(text, found)


def full_id(text: str, what: str = "RECORD_ID") -> str:
    """``text`` when it is a full record id; a node is asked by full id only (it has no
    prefix lookup), so a prefix is refused here with what to do instead (exit 2)."""
    check_prefix(text, what)
    if len(text) != 64:
        raise InputError(f"{what} {text}: a node is asked by the full record id (64 hex characters); "
                         "a prefix works with --db and --bundle", code="prefix_needs_local_chain")
    return text
