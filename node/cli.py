"""The node's commands of the ``provledger`` CLI: ``provledger init`` and ``provledger node start``.

``ledger.cli`` loads ``register`` through the ``provledger.commands`` entry point
(pyproject.toml), so the auditor's package imports nothing of ``node``. Without the
``node`` extra installed (``pip install 'provledger[node]'``) the same command names say
so in one line and exit 2.
"""

from __future__ import annotations

import logging
import re
from importlib.metadata import PackageNotFoundError, distribution, requires

import click

from ledger.cli_common import emit
from ledger.errors import InputError

__all__ = ["missing_requirements", "register"]

EXTRA = "node"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def missing_requirements(dist: str = "provledger", extra: str = EXTRA) -> list[str]:
    """The distributions the ``extra`` of ``dist`` requires (its metadata, i.e.
    pyproject.toml) that are not installed."""
    try:
        reqs = requires(dist) or []
    except PackageNotFoundError:
        return []
    out = []
    for req in reqs:
        spec, _, marker = req.partition(";")
        if f'extra == "{extra}"' not in marker:
            continue
        name = _NAME.match(spec.strip())
        if name is None:
            continue
        try:
            distribution(name.group())
        except PackageNotFoundError:
            out.append(name.group())
    return out


def _register_install_hint(cli: click.Group, missing: list[str]) -> None:
    hint = f"needs the node extra ({', '.join(missing)} missing): pip install 'provledger[{EXTRA}]'"
    for name in ("init", "node"):

        @cli.command(name, help=f"(Not installed) {hint}.", add_help_option=False,
                     context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
        @click.pass_context
        def needs_node(ctx: click.Context) -> None:
            raise InputError(f"provledger {ctx.info_name} {hint}", code="not_installed")


def register(cli: click.Group) -> None:
    """Add ``init`` and ``node`` to the root group: the real commands when the node extra
    is installed, else commands that say how to install it."""
    missing = missing_requirements()
    if missing:
        _register_install_hint(cli, missing)
        return

    from .config import DEFAULT_BASE_PORT

    @cli.command()
    @click.option("--home", required=True, type=click.Path(file_okay=False), help="Directory for the new network.")
    @click.option("--participant", "participants", multiple=True, metavar="PUBKEY=ROLE[,ROLE...]",
                  help="Register an existing public key (hex) as participant-N. Repeatable.")
    @click.option("--participant-key", "participant_keys", multiple=True, metavar="FILE=ROLE[,ROLE...]",
                  help="Generate a key, save it at FILE (relative to the current directory) and register "
                       "it under the file's stem. Repeatable.")
    @click.option("--name", default="provledger-local", show_default=True, help="Name of the network (genesis name).")
    @click.option("--org", default="org-1", show_default=True,
                  help="Organisation of the admin and participants (one validator; with --validators N "
                       "the organisations are org-1 ... org-N and participants join org-1).")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address the node(s) will listen on.")
    @click.option("--port", default=None, type=click.IntRange(1, 65535),
                  help="Port the node will listen on (one validator only).  [default: 8000]")
    @click.option("--validators", default=1, show_default=True, type=click.IntRange(1, 100),
                  help="Number of validators; N > 1 makes HOME/node-1 ... HOME/node-N, one home per node.")
    @click.option("--base-port", default=DEFAULT_BASE_PORT, show_default=True, type=click.IntRange(0, 65534),
                  help="With --validators N: node-i listens on BASE_PORT + i.")
    @click.option("--json", "as_json", is_flag=True, help="Print what was made as JSON.")
    def init(home: str, participants: tuple[str, ...], participant_keys: tuple[str, ...], name: str, org: str,
             host: str, port: int | None, validators: int, base_port: int, as_json: bool) -> None:
        """Create a network in HOME: keys, genesis, config and database per node.

        One validator (the default): HOME holds validator.key, admin.key (admin of the
        organisation), genesis.json, config.json and ledger.db. With --validators N (N > 1)
        each of HOME/node-1 ... HOME/node-N holds those files for one validator, node-i being
        the admin of organisation org-i and listening on BASE_PORT + i; all share one
        genesis. Refuses to overwrite an existing network (exit 2).
        Roles: contributor, annotator, trainer, evaluator, admin.

        \b
        Example:
          provledger init --home ./net --participant-key ./net/alice.key=contributor,annotator,trainer
          provledger node start --home ./net
          provledger init --home ./devnet --validators 4 --participant-key ./alice.key=contributor
          provledger node start --home ./devnet/node-1
        """
        from .config import init_network

        if validators > 1 and port is not None:
            raise InputError("--port is for a one-validator network; with --validators N use --base-port",
                             code="bad_argument")
        made = init_network(home, participants=participants, participant_keys=participant_keys, name=name,
                            org=org, host=host, port=8000 if port is None else port,
                            validators=validators, base_port=base_port)
        if validators == 1:
            lines = [
                f"created network {made['name']!r} in {made['home']}",
                f"  chain id       {made['chain_id']}",
                f"  node url       {made['url']}",
                f"  genesis        {made['genesis']}",
                f"  config         {made['config']}",
                f"  database       {made['db']}",
                f"  validator key  {made['validator_key']}",
                f"  admin key      {made['admin_key']}  (admin of {made['org']})",
            ]
        else:
            lines = [
                f"created network {made['name']!r} of {validators} validators in {made['home']}",
                f"  chain id       {made['chain_id']}",
                f"  {'node':<8} {'url':<24} {'org':<8} home",
            ]
            lines += [f"  {n['name']:<8} {n['url']:<24} {n['org']:<8} {n['home']}" for n in made["nodes"]]
        for p in made["participants"]:
            where = f"  key file {p['key_file']}" if p["key_file"] else ""
            lines.append(f"  participant    {p['name']} {p['key'][:16]}… {','.join(p['roles'])} ({p['org']}){where}")
        if validators == 1:
            lines.append(f"start it with:  provledger node start --home {made['home']}")
        else:
            lines.append("start each with:  " + "; ".join(
                f"provledger node start --home {n['home']}" for n in made["nodes"][:2]) + "; ...")
        emit(made, as_json, "\n".join(lines))

    @cli.group()
    def node() -> None:
        """Run a node.

        \b
        Example:
          provledger node start --home ./net
        """

    @node.command()
    @click.option("--home", required=True, type=click.Path(file_okay=False, exists=True), help="Node home made by `provledger init`.")
    @click.option("--host", default=None, help="Listen address (default: from config.json).")
    @click.option("--port", default=None, type=click.IntRange(1, 65535), help="Listen port (default: from config.json).")
    @click.option("--log-level", default="info", show_default=True,
                  type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
                  help="Least severe log lines written to stderr (library HTTP requests at debug only).")
    def start(home: str, host: str | None, port: int | None, log_level: str) -> None:
        """Run the node in the foreground until SIGTERM or Ctrl-C.

        Serves the HTTP API (OpenAPI at /docs) and commits blocks. On SIGTERM it
        finishes the block in flight, commits what is waiting and closes the
        database.

        \b
        Example:
          provledger node start --home ./net --port 8000
        """
        from .serve import serve

        if log_level.lower() != "debug":  # no INFO line per peer request from the HTTP client
            for name in ("httpx", "httpcore"):
                logging.getLogger(name).setLevel(logging.WARNING)
        serve(home, host=host, port=port, log_level=log_level)
