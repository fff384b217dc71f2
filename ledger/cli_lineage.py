"""``provledger lineage``, ``attribution`` and ``export bundle|prov`` (registered by ``ledger.cli``).

Each reads a chain from exactly one of ``--db PATH`` (a node's SQLite file), ``--node URL``
(every final block fetched over HTTP; default ``$PROVLEDGER_NODE``) or ``--bundle FILE``
(an exported audit bundle), and computes the answer here. A record is named by its id or
a unique prefix of at least 8 hex characters (a node asked with ``--remote`` needs the
full id). ``lineage`` and ``attribution`` with ``--node URL --remote`` ask
the node for its answer instead (``GET /v1/lineage``, ``GET /v1/attribution``): the same
JSON, without fetching the chain, but taken on trust.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .cli_common import Group, full_id, pick_source, resolve_id, source_options
from .errors import InputError
from .reader import ChainReader

__all__ = ["attribution_table", "coalition_note", "open_reader", "register"]


def open_reader(db: str | None, node: str | None, bundle: str | None) -> tuple[ChainReader, Callable[[], None]]:
    """A reader over exactly one source, and the function that closes it."""
    db, node, bundle = pick_source(db, node, bundle)
    if db is not None:
        from .reader import StoreReader
        from .store import Store

        if not Path(db).is_file():
            raise InputError(f"no such database file: {db}", code="no_database")
        store = Store(db)
        return StoreReader(store), store.close
    if node is not None:
        from .reader import fetch_node

        return fetch_node(node), lambda: None
    from .reader import MemoryReader

    return MemoryReader.from_bundle(bundle), lambda: None  # type: ignore[arg-type]


def attribution_table(result: dict[str, Any]) -> Any:
    """A rich Table of an attribution result (``ledger.attribution.attribute``)."""
    from rich.table import Table

    pools = result["pools"]
    table = Table(title=f"{result['model_name']} round {result['round']} · {result['method']} · {result['total_units']} units",
                  caption="pools (effective): " + ", ".join(f"{p} {pools[p]['effective']}" for p in pools)
                  + f" · policy from {result['policy']['source'][:16]}")
    for col, just in (("name", "left"), ("org", "left"), ("key", "left"), ("fraction", "right"),
                      ("units", "right"), ("records", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for line in result["lines"]:
        table.add_row(line["name"] or "?", line["org"] or "?", line["key"][:12] + "…", line["fraction"],
                      str(line["units"]), str(line["record_count"]))
    return table


def coalition_note(result: dict[str, Any]) -> str | None:
    """One line when a sampled Shapley estimate lacked coalition values, else None."""
    c = result.get("coalitions", {})
    if not c.get("missing_count"):
        return None
    return (f"note: {c['missing_count']} coalition(s) not recorded; "
            f"{c['used_permutations']} of {c['permutations']} permutations used (see --json)")


def _computed_by_node(node: str | None, local: tuple[str | None, ...], path: str, **params: Any) -> Any:
    """``GET path`` on the node (``--remote``): its own answer, recomputed nowhere here."""
    if any(x is not None for x in local):
        node = None
    if node is None:
        raise InputError("--remote reads from --node URL only (the node computes the answer)", code="bad_argument")
    from .client import Client

    with Client(node) as client:
        return client.get(path, **{k: v for k, v in params.items() if v is not None})


_REMOTE_HELP = ("With --node: let the node compute the answer (GET /v1/...) instead of recomputing it "
                "here from the node's blocks. Faster on a long chain, but trusts the node.")


_source_options = source_options()


def _with_reader(db: str | None, node: str | None, bundle: str | None, ref: str,
                 work: Callable[[ChainReader, str], Any]) -> Any:
    """``work(reader, record_id)`` over the one source given, ``ref`` (a record id, a
    prefix of one, or ``dataset:NAME``) resolved to a full id in it."""
    reader, close = open_reader(db, node, bundle)
    try:
        return work(reader, _resolve_ref(reader, ref))
    finally:
        close()


def _resolve_ref(reader: ChainReader, ref: str) -> str:
    return ref if ref.startswith("dataset:") else resolve_id(reader, ref)


def _remote_ref(ref: str) -> str:
    return ref if ref.startswith("dataset:") else full_id(ref)


def register(cli: click.Group) -> None:
    """Add the lineage, attribution and export commands to ``cli``."""

    @cli.command()
    @click.argument("record_id")
    @_source_options
    @click.option("--json", "as_json", is_flag=True, help="Print the graph as JSON.")
    @click.option("--dot", "as_dot", is_flag=True,
                  help="Print the graph in Graphviz DOT; drawing it needs Graphviz's `dot` program, "
                       "which provledger does not install (e.g. apt install graphviz).")
    @click.option("--remote", is_flag=True, help=_REMOTE_HELP)
    def lineage(record_id: str, db: str | None, node: str | None, bundle: str | None, as_json: bool, as_dot: bool,
                remote: bool) -> None:
        """Show where a model version came from, or which models used a dataset.

        RECORD_ID is a model.update record (its lineage back to datasets, annotations,
        signers and organisations) or a dataset record or dataset:NAME (every model that
        used the dataset): a record id or a unique prefix of at least 8 hex characters.
        A tree by default; --dot | dot -Tsvg draws it (needs Graphviz).

        \b
        Examples:
          provledger lineage 3f2a9c01 --db .provledger/ledger.db
          provledger lineage dataset:scans --bundle chain.bundle --dot | dot -Tsvg > scans.svg
          provledger lineage 3f2a...e9 --node http://127.0.0.1:8000 --remote
        """
        from .lineage import lineage as build
        from .lineage import to_dot, to_tree

        if as_json and as_dot:
            raise InputError("give at most one of --json and --dot", code="bad_argument")
        if remote:
            from urllib.parse import quote

            graph = _computed_by_node(node, (db, bundle), f"/v1/lineage/{quote(_remote_ref(record_id), safe=':')}")
        else:
            graph = _with_reader(db, node, bundle, record_id, build)
        if as_json:
            click.echo(json.dumps(graph, indent=2))
        elif as_dot:
            click.echo(to_dot(graph), nl=False)
        else:
            from rich.console import Console

            Console().print(to_tree(graph))

    @cli.command()
    @click.argument("model_record_id")
    @click.option("--total", "total", required=True, type=click.IntRange(min=0), help="Units to share out (an integer).")
    @click.option("--method", type=click.Choice(["proportional", "shapley", "leave-one-out"]), default="proportional",
                  show_default=True, help="How the data pool is split among datasets.")
    @click.option("--metric", default=None, help="Evaluation metric for shapley / leave-one-out (default: the most recorded).")
    @_source_options
    @click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
    @click.option("--remote", is_flag=True, help=_REMOTE_HELP)
    def attribution(model_record_id: str, total: int, method: str, metric: str | None, db: str | None,
                    node: str | None, bundle: str | None, as_json: bool, remote: bool) -> None:
        """Share TOTAL units of a model version's benefit among its contributors.

        MODEL_RECORD_ID is a model.update record id or a unique prefix of at least 8 hex
        characters. Deterministic and exact: the data, annotation and training pools of
        the policy in force at the model, exact fractions, integer units by largest
        remainder, ties broken by public key. Every line is justified by record ids (see
        --json).

        \b
        Examples:
          provledger attribution 3f2a...e9 --total 1000 --db .provledger/ledger.db
          provledger attribution 3f2a...e9 --total 1000 --method shapley --bundle chain.bundle --json
          provledger attribution 3f2a...e9 --total 1000 --node http://127.0.0.1:8000 --remote
        """
        from .attribution import attribute

        if remote:
            from urllib.parse import quote

            result = _computed_by_node(node, (db, bundle), f"/v1/attribution/{quote(full_id(model_record_id), safe='')}",
                                       total=total, method=method, metric=metric)
        else:
            result = _with_reader(db, node, bundle, model_record_id,
                                  lambda r, rid: attribute(r, rid, total, method, metric=metric))
        if as_json:
            click.echo(json.dumps(result, indent=2))
            return
        from rich.console import Console

        Console().print(attribution_table(result))
        note = coalition_note(result)
        if note:
            click.echo(note)

    @cli.group(cls=Group)
    def export() -> None:
        """Export a chain: an audit bundle, or W3C PROV-JSON of a lineage.

        \b
        Example:
          provledger export bundle --db .provledger/ledger.db --out chain.bundle
        """

    @export.command("bundle")
    @source_options(bundle=False)
    @click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Bundle file to write.")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
    def export_bundle(db: str | None, node: str | None, out: str, as_json: bool) -> None:
        """Write the genesis, every final block, its certificate and records to one file.

        The bundle (format provledger-bundle/v1, JSON Lines) verifies offline with
        `provledger audit FILE` and reads with --bundle. Refuses to overwrite a file.

        \b
        Example:
          provledger export bundle --node http://127.0.0.1:8000 --out chain.bundle
        """
        from .bundle import export_bundle as write_db
        from .bundle import export_node_bundle

        db, node, _ = pick_source(db, node, None, with_bundle=False)
        if Path(out).exists():
            raise InputError(f"{out} already exists; refusing to overwrite", code="file_exists")
        if db is not None:
            from .store import Store

            if not Path(db).is_file():
                raise InputError(f"no such database file: {db}", code="no_database")
            with Store(db) as store:
                summary = write_db(store, out)
        else:
            summary = export_node_bundle(node, out)  # type: ignore[arg-type]
        if as_json:
            click.echo(json.dumps(summary, indent=2))
        else:
            click.echo(f"wrote {summary['blocks']} blocks, {summary['records']} records of chain "
                       f"{summary['chain_id'][:16]}… to {summary['file']}")

    @export.command("prov")
    @click.argument("record_id")
    @_source_options
    @click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Write here instead of stdout.")
    def export_prov(record_id: str, db: str | None, node: str | None, bundle: str | None, out: str | None) -> None:
        """Write the W3C PROV-JSON of a model's or a dataset's lineage.

        RECORD_ID as for `provledger lineage`. Standard output unless --out is given.

        \b
        Example:
          provledger export prov 3f2a...e9 --db .provledger/ledger.db --out model.prov.json
        """
        from .prov import prov_document

        doc = _with_reader(db, node, bundle, record_id, prov_document)
        text = json.dumps(doc, indent=2) + "\n"
        if out:
            Path(out).write_text(text)
        else:
            click.echo(text, nl=False)
