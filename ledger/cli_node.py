"""CLI commands that create and run a node: ``provledger init`` and ``provledger node start``.

The daemon package (``node``) is imported inside the commands only, so importing
``ledger`` (the auditor's library) never imports the web stack.
"""

from __future__ import annotations

import click

__all__ = ["register"]


def register(cli: click.Group) -> None:
    from .cli import emit

    DEFAULT_BASE_PORT = 8100  # node.config.DEFAULT_BASE_PORT (the core does not import node/ here)

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
        from ledger.errors import InputError
        from node.config import init_network

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
                  type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
    def start(home: str, host: str | None, port: int | None, log_level: str) -> None:
        """Run the node in the foreground until SIGTERM or Ctrl-C.

        Serves the HTTP API (OpenAPI at /docs) and commits blocks. On more than one
        core the port is served by ingress processes (one per core, at most 4;
        `ingress_workers` in config.json) that check records before this process
        applies the chain's rules. On SIGTERM it stops them, finishes the block in
        flight, commits what is waiting and closes the database.

        \b
        Example:
          provledger node start --home ./net --port 8000
        """
        from node.daemon import serve

        serve(home, host=host, port=port, log_level=log_level)
