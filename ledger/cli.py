"""The ``provledger`` command line.

Every command has ``--help`` ending with an example; ``--json`` prints machine output; any
LedgerError is caught in one place (``main``) and printed as one line on stderr.
Exit codes: 0 success, 1 verification failed or the operation failed, 2 usage or input error.

Commands that run or talk to a node are added from ``ledger.cli_node`` when it is present;
``node start`` loads the daemon package lazily, so the auditor library never imports it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .errors import InputError, LedgerError, VerificationError
from .genesis import parse_genesis
from .keys import SigningKey, is_hex
from .records import ROLES, utc_now

__all__ = ["emit", "main"]


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LedgerError as e:
            click.echo(f"error: {e.message}", err=True)
            ctx.exit(2 if isinstance(e, InputError) else 1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="provledger")
def cli() -> None:
    """provledger: a signed, hash-chained ledger for collaborative machine learning.

    \b
    Start here:
      provledger init --home ./net          # a one-validator network
      provledger node start --home ./net    # run it
      provledger audit ./net/ledger.db      # audit it offline
    """


def emit(data: Any, as_json: bool, human: str | None = None) -> None:
    if as_json or human is None:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(human)


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
def pubkey(key_file: str) -> None:
    """Print the public key of a key file.

    \b
    Example:
      provledger pubkey alice.key
    """
    click.echo(SigningKey.load(key_file).public)


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
    """Write a genesis document (PROTOCOL.md 2) from flags and print its chain id.

    \b
    Example:
      provledger genesis --name consortium-x \\
        --validator node-a=validator.key@http://127.0.0.1:8000 \\
        --org org-a=admin.key --participant alice.key=alice@org-a:contributor,annotator \\
        --out genesis.json
    """
    doc: dict[str, Any] = {"v": 1, "name": name, "created": created or utc_now(), "validators": [],
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
        p = Path(out)
        if p.exists():
            raise InputError(f"{p} already exists; refusing to overwrite", code="file_exists")
        p.write_text(text)
        click.echo(f"chain id {g.chain_id}\nwritten to {out}")
    else:
        click.echo(text, nl=False)


# --- audit ---------------------------------------------------------------------------
def open_source(target: str) -> Any:
    """A ChainSource for a database file, an exported bundle or a node URL."""
    from .audit import DbSource

    if target.startswith(("http://", "https://")):
        from .client import HttpSource  # added by the client module

        return HttpSource(target)
    p = Path(target)
    if not p.exists():
        raise InputError(f"no such file: {target}", code="no_such_file")
    with open(p, "rb") as f:
        head = f.read(16)
    if head.startswith(b"SQLite format 3"):
        return DbSource(p)
    from .bundle import BundleSource  # an exported audit bundle

    return BundleSource(p)


@cli.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1, 64), help="Processes for signature checks.")
@click.option("--state", "state_file", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint file: verify consistency with the last audit, then save this one.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def audit(target: str, as_json: bool, jobs: int, state_file: str | None, quiet: bool) -> None:
    """Audit a chain end to end: every check of PROTOCOL.md 7.

    TARGET is a node database file, an exported bundle, or a node URL. Each failure is
    printed with its height, record and the check that failed. Exit 0 when the chain is
    intact, 1 when anything fails, 2 for usage errors.

    \b
    Examples:
      provledger audit .provledger/ledger.db --state audit.json
      provledger audit http://127.0.0.1:8000 --jobs 2 --json
    """
    from .audit import Checkpoint
    from .audit import audit as run_audit

    source = open_source(target)
    checkpoint = Checkpoint.load(state_file) if state_file else None
    _, total = source.totals()
    show = not quiet and not as_json and sys.stderr.isatty() and total >= 1000
    if show:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("auditing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      transient=True) as bar:
            task = bar.add_task("audit", total=total)
            report = run_audit(source, jobs=jobs, checkpoint=checkpoint, progress=lambda n: bar.advance(task, n))
    else:
        report = run_audit(source, jobs=jobs, checkpoint=checkpoint)
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
@click.option("--db", "db", type=click.Path(dir_okay=False, exists=True), default=None, help="Node database file.")
@click.option("--node", "node", default=None, help="Node URL; the proof is fetched and verified locally.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the proof document here.")
@click.option("--json", "as_json", is_flag=True, help="Print the proof document as JSON.")
def prove(record_id: str, db: str | None, node: str | None, out: str | None, as_json: bool) -> None:
    """Print an RFC 9162 inclusion proof of a record against the latest checkpoint.

    With --node the proof and the genesis come from a node and are verified here against
    the checkpoint's certificate before anything is printed.

    \b
    Examples:
      provledger prove --db .provledger/ledger.db 3f2a...e9 --out proof.json
      provledger prove 3f2a...e9 --node http://127.0.0.1:8000
    """
    from .proofs import proof_doc, verify_proof_doc

    if not is_hex(record_id, 32):
        raise InputError(f"record id must be 64 lowercase hex characters, got {record_id!r}", code="bad_hex")
    if (db is None) == (node is None):
        raise InputError("give exactly one of --db PATH or --node URL", code="bad_argument")
    if db is not None:
        from .store import Store

        with Store(db) as store:
            doc = proof_doc(store, record_id)
            genesis = store.genesis
    else:
        from .client import Client

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
        "verified: the record is in the log certified at height %d" % header.height,
    ]))


@cli.command("verify-proof")
@click.argument("proof_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--genesis", "genesis_file", required=True, type=click.Path(dir_okay=False, exists=True),
              help="The trusted genesis document (its validators certify checkpoints).")
@click.option("--record", "record_id", default=None, help="The record id the proof must be for.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify_proof(proof_file: str, genesis_file: str, record_id: str | None, as_json: bool) -> None:
    """Check an inclusion proof offline against a trusted genesis.

    Verifies the checkpoint's commit certificate, then the RFC 9162 path from the record
    id to the checkpoint's log_root. Exit 0 if it holds, 1 if not.

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
    header = verify_proof_doc(doc, genesis, record_id)
    emit({"ok": True, "record": record_id or doc.get("record"), "height": header.height, "log_size": header.log_size},
         as_json, f"OK: record {record_id or doc.get('record')} is in the log certified at height {header.height}")


import importlib as _il
import importlib.util as _ilu

# Command families in their own modules, each with ``register(cli)``: running a node
# (cli_node), talking to one (cli_client), lineage / attribution / exports (cli_lineage).
for _name in ("cli_node", "cli_client", "cli_lineage"):
    if _ilu.find_spec(f"ledger.{_name}") is not None:
        _il.import_module(f"ledger.{_name}").register(cli)


def main() -> None:
    cli(prog_name="provledger")


if __name__ == "__main__":
    main()
