"""The ``provledger`` command line.

Every command's ``--help`` ends with an example; ``--json`` prints machine output; errors
are one line on stderr, and the exit codes follow one contract (``ledger.cli_common``):
0 success, 1 verification failed or refused by the chain, 2 usage or unreadable input,
130 interrupted.

This module holds the root group and the commands of keys, genesis, audit and proofs;
``ledger.cli_client`` (submit, show), ``ledger.cli_lineage`` (lineage, attribution,
export) and ``ledger.cli_governance`` (propose, approve, pop, and the consortium's views
under show) add theirs. Other packages add command families through the
``provledger.commands`` entry point group: ``node`` adds ``init`` and ``node start``
(``node.cli``), so ``ledger`` imports nothing of ``node``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from . import cli_client, cli_governance, cli_lineage
from .cli_common import Group, check_prefix, emit, full_id, pick_source, resolve_id, source_options
from .errors import InputError, PeerError, StorageError, VerificationError
from .genesis import parse_genesis
from .keys import SigningKey, is_hex
from .records import ROLES, utc_now

__all__ = ["cli", "main", "open_source"]

ENTRY_POINTS = "provledger.commands"


class Root(Group):
    """The root group: the ``provledger.commands`` entry points are loaded when the CLI
    first looks a command up, so importing this module loads no other package."""

    group_class = Group  # type: ignore[assignment]  # click types it as type[Group] | type[type]
    _families_loaded = False

    def _load_families(self) -> None:
        if not self._families_loaded:
            self._families_loaded = True
            for ep in sorted(entry_points(group=ENTRY_POINTS), key=lambda e: e.name):
                ep.load()(self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load_families()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_families()
        return super().list_commands(ctx)


@click.group(cls=Root, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="provledger")
def cli() -> None:
    """provledger: a signed, hash-chained ledger for collaborative machine learning.

    Exit codes: 0 success, 1 verification failed or refused by the chain, 2 usage or
    unreadable input, 130 interrupted. A node URL defaults to $PROVLEDGER_NODE.

    \b
    Example:
      provledger init --home ./net          # a one-validator network
      provledger node start --home ./net    # run it
      provledger audit ./net/ledger.db      # audit it offline
    """


# --- keys ----------------------------------------------------------------------------
@cli.command()
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Key file to write (mode 0600).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keygen(out: str, as_json: bool) -> None:
    """Generate an Ed25519 signing key and print its public key.

    Refuses to overwrite an existing file.

    \b
    Example:
      provledger keygen --out alice.key
    """
    key = SigningKey.generate()
    key.save(out)
    emit({"public_key": key.public, "file": out}, as_json, f"{key.public}\nsaved to {out} (mode 0600)")


@cli.command()
@click.argument("key_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def pubkey(key_file: str, as_json: bool) -> None:
    """Print the public key of a key file.

    \b
    Example:
      provledger pubkey alice.key
    """
    public = SigningKey.load(key_file).public
    emit({"public_key": public, "file": key_file}, as_json, public)


# --- genesis -------------------------------------------------------------------------
def _key_arg(value: str, what: str) -> str:
    """A public key given as hex or as a key file path."""
    if is_hex(value, 32):
        return value
    if Path(value).is_file():
        return SigningKey.load(value).public
    raise InputError(f"{what}: {value!r} is neither a public key (64 hex) nor a key file", code="bad_key")


@cli.command()
@click.option("--name", required=True, help="Name of the consortium.")
@click.option("--validator", "validators", multiple=True, required=True, metavar="NAME=KEY@URL",
              help="A validator: name, public key (hex or key file) and URL. Repeatable.")
@click.option("--org", "orgs", multiple=True, metavar="NAME=KEY[,KEY...]", help="An organisation and its admin keys. Repeatable.")
@click.option("--participant", "participants", multiple=True, metavar="KEY=NAME@ORG:ROLE[,ROLE...]",
              help="A participant registered at genesis. Repeatable.")
@click.option("--policy", default="data=0.5,annotation=0.3,training=0.2", show_default=True,
              help="Attribution pools, summing to 1.")
@click.option("--created", default=None, help="Creation time (RFC 3339 UTC); default now.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write to this file instead of stdout.")
def genesis(name: str, validators: tuple[str, ...], orgs: tuple[str, ...], participants: tuple[str, ...],
            policy: str, created: str | None, out: str | None) -> None:
    """Write a genesis document from flags and print its chain id.

    The chain id is the hash of the document: whoever trusts it trusts its validators,
    organisations, participants and attribution policy.

    \b
    Example:
      provledger genesis --name consortium-x \\
        --validator node-a=validator.key@http://127.0.0.1:8000 \\
        --org org-a=admin.key --participant alice.key=alice@org-a:contributor,annotator \\
        --out genesis.json
    """
    doc: dict[str, Any] = {"v": 2, "name": name, "created": created or utc_now(), "validators": [],
                           "organisations": [], "participants": [], "policy": {"attribution": {}}}
    for v in validators:
        vname, sep, rest = v.partition("=")
        key, sep2, url = rest.partition("@")
        if not (sep and sep2 and vname and url):
            raise InputError(f"--validator {v!r}: expected NAME=KEY@URL", code="bad_argument")
        doc["validators"].append({"name": vname, "key": _key_arg(key, "--validator"), "url": url})
    for o in orgs:
        oname, sep, keys = o.partition("=")
        if not (sep and oname and keys):
            raise InputError(f"--org {o!r}: expected NAME=KEY[,KEY...]", code="bad_argument")
        doc["organisations"].append({"name": oname, "admins": [_key_arg(k, "--org") for k in keys.split(",")]})
    for p in participants:
        key, sep, rest = p.partition("=")
        pname, sep2, rest2 = rest.partition("@")
        org, sep3, roles = rest2.partition(":")
        if not (sep and sep2 and sep3 and pname and org and roles):
            raise InputError(f"--participant {p!r}: expected KEY=NAME@ORG:ROLE[,ROLE...]", code="bad_argument")
        bad = [r for r in roles.split(",") if r not in ROLES]
        if bad:
            raise InputError(f"--participant {p!r}: unknown role {bad[0]!r}; roles are {', '.join(ROLES)}", code="bad_argument")
        doc["participants"].append({"key": _key_arg(key, "--participant"), "name": pname, "org": org, "roles": roles.split(",")})
    for part in policy.split(","):
        k, sep, v = part.partition("=")
        if not sep:
            raise InputError(f"--policy {policy!r}: expected data=D,annotation=A,training=T", code="bad_argument")
        doc["policy"]["attribution"][k.strip()] = v.strip()
    g = parse_genesis(doc)
    text = json.dumps(doc, indent=2) + "\n"
    if out:
        target = Path(out)
        if target.exists():
            raise InputError(f"{target} already exists; refusing to overwrite", code="file_exists")
        target.write_text(text)
        click.echo(f"chain id {g.chain_id}\nwritten to {out}")
    else:
        click.echo(text, nl=False)


# --- audit ---------------------------------------------------------------------------
def _node_source(url: str) -> Any:
    """An audit source over a node, once the node has answered: a URL that is not a
    node (a typo, a wrong path) is unreadable input, not a failed chain."""
    from .client import Client, HttpSource

    try:
        with Client(url) as probe:
            probe.genesis()
    except PeerError as e:
        raise InputError(f"could not read a node at {url}: {e.message}", code="node_unreadable") from e
    return HttpSource(url)


def _file_source(target: str, kind: str | None = None) -> Any:
    """An audit source over a database file or a bundle (``kind`` "db" / "bundle", or
    told apart by the file's first bytes)."""
    from .audit import DbSource
    from .bundle import BundleSource

    p = Path(target)
    if p.is_dir():
        raise InputError(f"{target} is a directory; give a database file, a bundle file or a node URL",
                         code="is_a_directory")
    if not p.is_file():
        raise InputError(f"no such file: {target}", code="no_such_file")
    with open(p, "rb") as f:
        head = f.read(16)
    is_db = head.startswith(b"SQLite format 3")
    if kind == "db" and not is_db:
        raise InputError(f"{target} is not an SQLite database file", code="not_a_database")
    return DbSource(p) if is_db and kind != "bundle" else BundleSource(p)


def open_source(target: str) -> Any:
    """An audit ChainSource for a database file, an exported bundle or a node URL."""
    if target.startswith(("http://", "https://")):
        return _node_source(target)
    return _file_source(target)


def _run_audit(source: Any, checkpoint: Any, jobs: int, *, show_progress: bool) -> Any:
    """``ledger.audit.audit`` with a progress bar on a terminal for 1,000 records or more."""
    from .audit import audit as run_audit

    _, total = source.totals()
    show = show_progress and sys.stderr.isatty() and total >= 1000
    if show:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        # On stderr (stdout stays the report); transient: erased when the audit ends, also
        # on Ctrl-C (exit 130), even one that lands while the bar is being set up.
        bar = Progress(TextColumn("auditing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=Console(stderr=True), transient=True)
        try:
            bar.start()
            task = bar.add_task("audit", total=total)
            report = run_audit(source, jobs=jobs, checkpoint=checkpoint, progress=lambda n: bar.advance(task, n))
        finally:
            bar.stop()
    else:
        report = run_audit(source, jobs=jobs, checkpoint=checkpoint)
    return report


@cli.command()
@click.argument("target", required=False)
@source_options(node_help="Audit a live node: every block is fetched and checked here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1, 64), help="Processes for signature checks.")
@click.option("--state", "state_file", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint file: verify consistency with the last audit, then save this one.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def audit(target: str | None, db: str | None, node: str | None, bundle: str | None, as_json: bool, jobs: int,
          state_file: str | None, quiet: bool) -> None:
    """Audit a chain end to end: every check of the protocol.

    TARGET is a node database file, an exported bundle, or a node URL (or give --db,
    --bundle or --node; --node defaults to $PROVLEDGER_NODE). The checks: the chain id
    recomputed from the genesis; per block its height, link, commit certificate and
    counts; per record its form, id, signature and the chain's rules at that point; every
    log_root recomputed over the record ids (RFC 9162); with --state, consistency with
    the last audit. Each failure is printed with its height, record and the check that
    failed. Exit 0 when the chain is intact, 1
    when anything fails, 2 for usage errors or a source that cannot be read.

    \b
    Examples:
      provledger audit .provledger/ledger.db --state audit.json
      provledger audit http://127.0.0.1:8000 --jobs 2 --json
    """
    from .audit import Checkpoint

    if target is not None:
        if db is not None or bundle is not None or click.get_current_context().get_parameter_source("node") \
                == click.core.ParameterSource.COMMANDLINE:
            raise InputError("give the chain once: TARGET or one of --db, --node, --bundle", code="bad_argument")
        source = open_source(target)
    else:
        db, node, bundle = pick_source(db, node, bundle)
        source = _node_source(node) if node is not None else _file_source(db or bundle or "", "db" if db else "bundle")
    checkpoint = Checkpoint.load(state_file) if state_file else None
    try:
        report = _run_audit(source, checkpoint, jobs, show_progress=not quiet and not as_json)
    except (StorageError, sqlite3.DatabaseError) as e:  # a database too damaged to read: a failed chain
        raise VerificationError(f"the chain failed: its database cannot be read: {e}", code="corrupt_database") from e
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        head = report.head
        click.echo(f"chain {report.chain_id}")
        click.echo(f"{report.blocks} blocks, {report.records} records"
                   + (f", head {head.height} {head.hash[:16]}… log_root {head.log_root[:16]}…" if head else ""))
        if report.checkpoint:
            click.echo(f"checkpoint: {report.checkpoint}")
        for f in report.findings:
            click.echo(f"FAIL {f}")
        click.echo("OK: the chain is intact" if report.ok else f"FAILED: {len(report.findings)} finding(s)")
    if report.ok and state_file and report.head:
        report.head.save(state_file)
    sys.exit(0 if report.ok else 1)


# --- proofs --------------------------------------------------------------------------
@cli.command()
@click.argument("record_id")
@source_options(node_help="Fetch the proof from a node; it is verified here.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the proof document here.")
@click.option("--json", "as_json", is_flag=True, help="Print the proof document as JSON.")
def prove(record_id: str, db: str | None, node: str | None, bundle: str | None, out: str | None,
          as_json: bool) -> None:
    """Print an RFC 9162 inclusion proof of a record against the latest checkpoint.

    RECORD_ID is a record id or a unique prefix of it (at least 8 hex characters; a
    node needs the full id). The proof document carries the checkpoint's membership
    history, so that `provledger verify-proof` needs nothing but the genesis. It is
    verified here against the checkpoint's certificate and the chain's genesis before
    anything is printed; with --node or
    --bundle the genesis is the one the node or bundle gives: compare its chain id
    with the one you trust, or check the written proof with `provledger verify-proof`.

    \b
    Examples:
      provledger prove 3f2a9c01 --db .provledger/ledger.db --out proof.json
      provledger prove 3f2a...e9 --node http://127.0.0.1:8000
    """
    from .proofs import proof_doc, verify_proof_doc

    db, node, bundle = pick_source(db, node, bundle)
    if db is not None:
        with _open_store(db) as store:
            record_id = resolve_id(store, record_id)
            doc = proof_doc(store, record_id)
            genesis = store.genesis
    elif bundle is not None:
        from .bundle import BundleSource, bundle_proof_doc
        from .reader import MemoryReader

        reader = MemoryReader.from_bundle(bundle)  # its validator sets: the membership history
        record_id = resolve_id(reader, record_id)
        doc = bundle_proof_doc(bundle, record_id, reader)
        genesis = parse_genesis(BundleSource(bundle).genesis_doc())
    else:
        from .client import Client

        record_id = full_id(record_id)
        with Client(node) as client:  # type: ignore[arg-type]
            doc = client.proof(record_id)
            doc.setdefault("record", record_id)
            genesis = parse_genesis(client.genesis())
    header = verify_proof_doc(doc, genesis, record_id)
    if out:
        Path(out).write_text(json.dumps(doc, indent=2) + "\n")
    emit(doc, as_json, "\n".join([
        f"record    {record_id}",
        f"index     {doc['index']} of {doc['tree_size']}",
        f"block     {header.height} {header.hash}",
        f"log_root  {header.log_root}",
        "path      " + ("\n          ".join(doc["path"]) or "(empty)"),
        f"verified: the record is in the log certified at height {header.height}",
    ]))


def _open_store(db: str) -> Any:
    """The store of a database file that exists (exit 2 otherwise)."""
    from .store import Store

    if not Path(db).is_file():
        raise InputError(f"no such database file: {db}", code="no_database")
    return Store(db)


@cli.command("verify-proof")
@click.argument("proof_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--genesis", "genesis_file", required=True, type=click.Path(dir_okay=False, exists=True),
              help="The trusted genesis document (its validators start the membership history).")
@click.option("--record", "record_id", default=None, metavar="RECORD_ID",
              help="The record the proof must be for: its id or a prefix of at least 8 hex characters.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify_proof(proof_file: str, genesis_file: str, record_id: str | None, as_json: bool) -> None:
    """Check an inclusion proof offline against a trusted genesis.

    Follows the proof's membership history from the genesis validators to the set
    certifying the checkpoint (every change certified by the set before it; a change left
    out is refused), verifies the checkpoint's commit certificate against that set, then
    the RFC 9162 path from the record id to the checkpoint's log_root. Exit 0 if it
    holds, 1 if not, 2 if a file cannot be read or is not a proof document.

    \b
    Example:
      provledger verify-proof proof.json --genesis .provledger/genesis.json
    """
    from .proofs import verify_proof_doc

    try:
        doc = json.loads(Path(proof_file).read_text())
        genesis = parse_genesis(json.loads(Path(genesis_file).read_text()))
    except ValueError as e:
        raise InputError(f"not JSON: {e}", code="bad_json") from e
    if record_id is not None and len(record_id) < 64:
        from .errors import ProofError

        check_prefix(record_id, "--record")
        claimed = doc.get("record") if isinstance(doc, dict) else None
        if not (isinstance(claimed, str) and claimed.startswith(record_id)):
            raise ProofError(f"the proof is not for a record with id {record_id}…")
        record_id = claimed
    header = verify_proof_doc(doc, genesis, record_id)
    emit({"ok": True, "record": record_id or doc.get("record"), "height": header.height, "log_size": header.log_size},
         as_json, f"OK: record {record_id or doc.get('record')} is in the log certified at height {header.height}")


cli_client.register(cli)
cli_lineage.register(cli)
cli_governance.register(cli)


def main() -> None:
    # Quiet by default: no per-request INFO lines from the HTTP client library.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cli(prog_name="provledger")


if __name__ == "__main__":
    main()
