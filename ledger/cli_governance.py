"""``provledger propose``, ``provledger approve`` and ``provledger show proposals|validators|
organisations``: the consortium's votes on its own membership and policy, over a node's
HTTP API.

``propose`` builds one of the six actions of PROTOCOL.md 9.3 from flags (with the ``pop``
of a new validator key made here from its key file), wraps it in a ``network.propose``
body (9.2), signs it with the admin's key and submits it; ``approve`` does the same for a
``network.approve``. The node is the judge: it refuses an action the state does not allow
with HTTP 422 and a JSON error (``bad_pop``, ``already_approved``, ``proposal_expired``,
...), printed here on one line with its code, exit 1 (README "CLI contract"). An action
whose form is wrong is refused here before anything is signed (``bad_action``, exit 2).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .cli_common import Command, Group, check_prefix, emit, node_option
from .client import Client
from .errors import InputError
from .keys import SigningKey, is_hex
from .records import make_record

__all__ = ["approve", "pop", "propose", "register"]

DEFAULT_NODE = "http://127.0.0.1:8000"
DEFAULT_EXPIRES_IN = 1000  # blocks after the node's head during which approvals count

_node_option = node_option(DEFAULT_NODE)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


# --- arguments -------------------------------------------------------------------------
def public_key(value: str, what: str) -> str:
    """A public key given as 64 lowercase hex characters or as a key file path (exit 2
    for anything else)."""
    if is_hex(value, 32):
        return value
    if Path(value).is_file():
        return SigningKey.load(value).public
    raise InputError(f"{what}: {value!r} is neither a public key (64 lowercase hex) nor a key file", code="bad_key")


def new_validator_key(key_file: str | None, key: str | None, pop: str | None, chain_id: str,
                      what: str) -> tuple[str, str]:
    """The public key of a new validator and its proof of possession (PROTOCOL.md 9.3):
    signed here with the key in ``key_file``, or given as ``key`` and ``pop`` (made with
    ``provledger pop`` by whoever holds the key)."""
    from .governance import make_pop

    if key_file is not None:
        if key is not None or pop is not None:
            raise InputError(f"give {what}-file FILE, or {what} KEY with --pop HEX, not both", code="bad_argument")
        signer = SigningKey.load(key_file)
        return signer.public, make_pop(signer, chain_id)
    if key is None or pop is None:
        raise InputError(f"give {what}-file FILE (the new validator's key file), or {what} KEY with --pop HEX",
                         code="bad_argument")
    return public_key(key, what), pop


def current_validator(client: Client, value: str, what: str) -> dict[str, Any]:
    """The entry of the node's current validator set named by ``value``: a validator's
    name, its public key (hex) or a key file."""
    current = client.get("/v1/validators")["validators"]
    by_name = [v for v in current if v["name"] == value]
    if len(by_name) == 1:
        return by_name[0]  # type: ignore[no-any-return]
    key = public_key(value, what)
    for v in current:
        if v["key"] == key:
            return v  # type: ignore[no-any-return]
    raise InputError(f"{what}: {value!r} is not a validator of the current set "
                     f"({', '.join(v['name'] for v in current)})", code="not_validator")


def policy_action(data: str, annotation: str, training: str) -> dict[str, Any]:
    """``policy.set`` (PROTOCOL.md 9.3): the three attribution pools."""
    return {"op": "policy.set", "attribution": {"data": data, "annotation": annotation, "training": training}}


def resolve_proposal(client: Client, text: str) -> dict[str, Any]:
    """The proposal on the node whose id is ``text`` or starts with it (at least 8 hex
    characters); exit 2 for none or several."""
    check_prefix(text, "PROPOSAL_ID")
    found = [p for p in client.get("/v1/proposals")["proposals"] if p["id"].startswith(text)]
    if not found:
        raise InputError(f"no proposal with id {text}" + ("…" if len(text) < 64 else "") + " on the node",
                         code="not_found")
    if len(found) > 1:
        raise InputError(f"proposal id prefix {text} is ambiguous: give more characters", code="ambiguous_id")
    return found[0]  # type: ignore[no-any-return]


def needed(organisations: int) -> int:
    """Approving organisations that adopt a proposal: more than half (PROTOCOL.md 9.2)."""
    return organisations // 2 + 1


# --- output ----------------------------------------------------------------------------
def describe_action(action: dict[str, Any]) -> str:
    """One short line for an action."""
    op = action.get("op")
    if op == "org.add":
        return f"org.add {action['name']} ({len(action['admins'])} admin(s))"
    if op == "org.remove":
        return f"org.remove {action['name']}"
    if op == "validator.add":
        return f"validator.add {action['name']} {action['key'][:16]}… {action['url']}"
    if op == "validator.remove":
        return f"validator.remove {action['key'][:16]}…"
    if op == "validator.replace":
        return f"validator.replace {action['old'][:16]}… -> {action['name']} {action['new'][:16]}… {action['url']}"
    if op == "policy.set":
        a = action["attribution"]
        return f"policy.set data={a['data']} annotation={a['annotation']} training={a['training']}"
    return str(op)


def describe_proposal(p: dict[str, Any], in_force: list[str]) -> str:
    """Two lines for a proposal; an open one with its count among the organisations in
    force now (``in_force``), the count that adopts it (PROTOCOL.md 9.2)."""
    approvals = p["approvals"]
    if p["status"] == "open":
        counted = [o for o in approvals if o in in_force]
        votes = f" ({len(counted)} of {len(in_force)} organisations, {needed(len(in_force))} needed)"
    else:
        votes = ""
    state = p["status"] + (f" at log index {p['adopted_at']}" if p.get("adopted_at") is not None else "")
    return (f"{p['id'][:16]}… {state}: {describe_action(p['action'])}\n"
            f"  proposed by {p['org']}, approvals count up to height {p['expires']}; "
            f"approved by {', '.join(approvals) or 'nobody'}{votes}")


def _in_force(client: Client) -> list[str]:
    return [o["name"] for o in client.get("/v1/organisations")["organisations"]]


# --- submission ------------------------------------------------------------------------
def submit_governance(key_file: str, node: str, rtype: str, body: Callable[[Client], dict[str, Any]],
                      wait: bool, nonce: str | None, as_json: bool, dry_run: bool) -> None:
    """Build the body (it may ask the node: chain id, head, current set), sign it as
    ``rtype`` with the admin key, submit it and print the proposal's state."""
    key = SigningKey.load(key_file)
    with Client(node) as client:
        env = make_record(key, client.chain_id, rtype, body(client), nonce=nonce)
        if dry_run:
            emit(env, True)
            return
        res = client.submit(env, wait=wait)  # a refusal: HTTP 422 with its code, exit 1
        pid = res["id"] if rtype == "network.propose" else env["body"]["proposal"]
        out: dict[str, Any] = {"id": res["id"], "status": res["status"], "type": rtype, "proposal": pid}
        lines = [f"{rtype} {res['id']} {res['status']}"]
        if res["status"] == "committed":
            proposal = next((p for p in client.get("/v1/proposals")["proposals"] if p["id"] == pid), None)
            if proposal is not None:
                out["proposal_state"] = proposal
                lines.append(describe_proposal(proposal, _in_force(client)))
        emit(out, as_json, "\n".join(lines))


def _expires(client: Client, expires: int | None, expires_in: int) -> int:
    """``--expires HEIGHT``, else the node's head height plus ``--expires-in BLOCKS``."""
    if expires is not None:
        return expires
    return client.height() + expires_in


def _propose_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed([
        click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False),
                     help="Key file of an admin of an organisation in force (the proposer)."),
        _node_option,
        click.option("--reason", default="", help="Why: kept on the chain with the proposal."),
        click.option("--expires", type=click.IntRange(1, 2**53 - 1), default=None, metavar="HEIGHT",
                     help="Last height at which approvals count (default: the node's head + --expires-in)."),
        click.option("--expires-in", type=click.IntRange(1, 2**40), default=DEFAULT_EXPIRES_IN, show_default=True,
                     metavar="BLOCKS", help="Blocks after the node's head height during which approvals count."),
        click.option("--wait", is_flag=True, help="Wait for the commit, then print the proposal's state."),
        click.option("--nonce", default=None, help="Nonce (default: random)."),
        _json_option,
        click.option("--dry-run", is_flag=True, help="Print the signed envelope; do not submit."),
    ]):
        f = opt(f)
    return f


def _propose(key_file: str, node: str, reason: str, expires: int | None, expires_in: int, wait: bool,
             nonce: str | None, as_json: bool, dry_run: bool, action: Callable[[Client], dict[str, Any]]) -> None:
    """PROTOCOL.md 9.2: ``network.propose`` ``{"action", "expires", "reason"}``; the action
    is checked for its form here (``bad_action``, exit 2) before anything is signed."""
    from .governance import parse_action

    def body(client: Client) -> dict[str, Any]:
        act = action(client)
        parse_action(act)
        return {"action": act, "expires": _expires(client, expires, expires_in), "reason": reason}

    submit_governance(key_file, node, "network.propose", body, wait, nonce, as_json, dry_run)


# --- propose ---------------------------------------------------------------------------
@click.group(cls=Group)
def propose() -> None:
    """Propose a change of the consortium: organisations, validators or the policy.

    The proposal is a network.propose record signed by an admin of an organisation in
    force; it is adopted once more than half of the organisations in force approve it
    (the proposer's organisation counts; see `provledger approve`), and takes effect at
    once. A validator change governs the height after the block that adopts it.

    \b
    Example:
      provledger propose org-add org-c --admin carol-admin.key --key admin-a.key --wait
    """


@propose.command("org-add")
@click.argument("name")
@click.option("--admin", "admins", multiple=True, required=True, metavar="KEY",
              help="Admin of the new organisation: public key (hex) or key file; not yet registered. Repeatable.")
@_propose_options
def propose_org_add(name: str, admins: tuple[str, ...], key_file: str, node: str, reason: str, expires: int | None,
                    expires_in: int, wait: bool, nonce: str | None, as_json: bool, dry_run: bool) -> None:
    """Propose a new organisation NAME with its admins (org.add).

    \b
    Example:
      provledger propose org-add org-c --admin 3b6a27bc... --key admin-a.key \\
        --reason "Clinic C joins the study" --wait
    """
    keys = [public_key(a, "--admin") for a in admins]
    _propose(key_file, node, reason, expires, expires_in, wait, nonce, as_json, dry_run,
             lambda c: {"op": "org.add", "name": name, "admins": keys})


@propose.command("org-remove")
@click.argument("name")
@_propose_options
def propose_org_remove(name: str, key_file: str, node: str, reason: str, expires: int | None, expires_in: int,
                       wait: bool, nonce: str | None, as_json: bool, dry_run: bool) -> None:
    """Propose to remove organisation NAME (org.remove): every identity of it is revoked.

    \b
    Example:
      provledger propose org-remove org-c --key admin-a.key --reason "left the consortium"
    """
    _propose(key_file, node, reason, expires, expires_in, wait, nonce, as_json, dry_run,
             lambda c: {"op": "org.remove", "name": name})


@propose.command("validator-add")
@click.option("--name", "vname", required=True, help="The new validator's name.")
@click.option("--url", required=True, help="The new validator's node URL.")
@click.option("--validator-key-file", "vkey_file", type=click.Path(dir_okay=False, exists=True), default=None,
              metavar="FILE", help="The new validator's key file: its proof of possession (pop) is signed here.")
@click.option("--validator-key", "vkey", default=None, metavar="KEY",
              help="The new validator's public key (hex), with --pop instead of the key file.")
@click.option("--pop", default=None, metavar="HEX", help="Its proof of possession (`provledger pop KEY_FILE`).")
@_propose_options
def propose_validator_add(vname: str, url: str, vkey_file: str | None, vkey: str | None, pop: str | None,
                          key_file: str, node: str, reason: str, expires: int | None, expires_in: int, wait: bool,
                          nonce: str | None, as_json: bool, dry_run: bool) -> None:
    """Propose a new validator (validator.add): a key that never was one.

    \b
    Example:
      provledger propose validator-add --name node-c --url http://10.0.0.3:8000 \\
        --validator-key-file node-c/validator.key --key admin-a.key --wait
    """
    def action(client: Client) -> dict[str, Any]:
        key, proof = new_validator_key(vkey_file, vkey, pop, client.chain_id, "--validator-key")
        return {"op": "validator.add", "key": key, "name": vname, "url": url, "pop": proof}

    _propose(key_file, node, reason, expires, expires_in, wait, nonce, as_json, dry_run, action)


@propose.command("validator-remove")
@click.argument("validator")
@_propose_options
def propose_validator_remove(validator: str, key_file: str, node: str, reason: str, expires: int | None,
                             expires_in: int, wait: bool, nonce: str | None, as_json: bool, dry_run: bool) -> None:
    """Propose to remove VALIDATOR (its name, public key or key file) from the set.

    \b
    Example:
      provledger propose validator-remove node-2 --key admin-a.key --wait
    """
    _propose(key_file, node, reason, expires, expires_in, wait, nonce, as_json, dry_run,
             lambda c: {"op": "validator.remove", "key": current_validator(c, validator, "VALIDATOR")["key"]})


@propose.command("validator-replace")
@click.argument("validator")
@click.option("--new-key-file", "vkey_file", type=click.Path(dir_okay=False, exists=True), default=None,
              metavar="FILE", help="The new key's file: its proof of possession (pop) is signed here.")
@click.option("--new-key", "vkey", default=None, metavar="KEY",
              help="The new public key (hex), with --pop instead of the key file.")
@click.option("--pop", default=None, metavar="HEX", help="Its proof of possession (`provledger pop KEY_FILE`).")
@click.option("--name", "vname", default=None, help="The validator's name from now on (default: unchanged).")
@click.option("--url", default=None, help="The validator's URL from now on (default: unchanged).")
@_propose_options
def propose_validator_replace(validator: str, vkey_file: str | None, vkey: str | None, pop: str | None,
                              vname: str | None, url: str | None, key_file: str, node: str, reason: str,
                              expires: int | None, expires_in: int, wait: bool, nonce: str | None, as_json: bool,
                              dry_run: bool) -> None:
    """Propose a new key for VALIDATOR (its name, public key or key file): key rotation.

    The validator keeps its place in the set.

    \b
    Example:
      provledger propose validator-replace node-2 --new-key-file node-2/validator-2026.key \\
        --key admin-b.key --reason "key rotation" --wait
    """
    def action(client: Client) -> dict[str, Any]:
        old = current_validator(client, validator, "VALIDATOR")
        key, proof = new_validator_key(vkey_file, vkey, pop, client.chain_id, "--new-key")
        return {"op": "validator.replace", "old": old["key"], "new": key, "name": vname or old["name"],
                "url": url or old["url"], "pop": proof}

    _propose(key_file, node, reason, expires, expires_in, wait, nonce, as_json, dry_run, action)


@propose.command("policy")
@click.option("--data", required=True, help="Data pool share (decimal string, e.g. 0.5).")
@click.option("--annotation", required=True, help="Annotation pool share.")
@click.option("--training", required=True, help="Training pool share; the three sum to 1.")
@_propose_options
def propose_policy(data: str, annotation: str, training: str, key_file: str, node: str, reason: str,
                   expires: int | None, expires_in: int, wait: bool, nonce: str | None, as_json: bool,
                   dry_run: bool) -> None:
    """Propose a new attribution policy (policy.set): in force once adopted.

    \b
    Example:
      provledger propose policy --data 0.6 --annotation 0.2 --training 0.2 --key admin-a.key \\
        --reason "renegotiated split" --wait
    """
    _propose(key_file, node, reason, expires, expires_in, wait, nonce, as_json, dry_run,
             lambda c: policy_action(data, annotation, training))


# --- approve ---------------------------------------------------------------------------
@click.command(cls=Command)
@click.argument("proposal_id")
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False),
              help="Key file of an admin of an organisation in force that has not approved it yet.")
@_node_option
@click.option("--wait", is_flag=True, help="Wait for the commit, then print the proposal's state.")
@click.option("--nonce", default=None, help="Nonce (default: random).")
@_json_option
@click.option("--dry-run", is_flag=True, help="Print the signed envelope; do not submit.")
def approve(proposal_id: str, key_file: str, node: str, wait: bool, nonce: str | None, as_json: bool,
            dry_run: bool) -> None:
    """Approve a proposal for your organisation (network.approve).

    PROPOSAL_ID is the proposal's record id or a unique prefix of at least 8 hex
    characters. One approval per organisation counts; the approval that makes more than
    half of the organisations in force adopts the proposal.

    \b
    Example:
      provledger approve 3f2a9c01 --key admin-b.key --wait
    """
    check_prefix(proposal_id, "PROPOSAL_ID")  # before the node is asked anything
    submit_governance(key_file, node, "network.approve",
                      lambda c: {"proposal": resolve_proposal(c, proposal_id)["id"]}, wait, nonce, as_json, dry_run)


# --- pop -------------------------------------------------------------------------------
@click.command(cls=Command)
@click.argument("key_file", type=click.Path(dir_okay=False, exists=True))
@_node_option
@click.option("--chain", "chain_id", default=None, metavar="CHAIN_ID",
              help="The chain id (default: asked of --node).")
@_json_option
def pop(key_file: str, node: str, chain_id: str | None, as_json: bool) -> None:
    """Print the proof of possession (pop) of a new validator key.

    For an admin who proposes the key without holding it: pass the key and this with
    `propose validator-add --validator-key KEY --pop HEX`.

    \b
    Example:
      provledger pop node-c/validator.key --node http://127.0.0.1:8000
    """
    from .governance import make_pop

    if chain_id is None:
        with Client(node) as client:
            chain_id = client.chain_id
    elif not is_hex(chain_id, 32):
        raise InputError("--chain must be 64 lowercase hex characters", code="bad_hex")
    signer = SigningKey.load(key_file)
    proof = make_pop(signer, chain_id)
    emit({"key": signer.public, "chain": chain_id, "pop": proof}, as_json, f"key {signer.public}\npop {proof}")


# --- show ------------------------------------------------------------------------------
@click.command("proposals", cls=Command)
@click.option("--status", type=click.Choice(["open", "adopted", "expired"]), default=None,
              help="Only the proposals in this state.")
@_node_option
@_json_option
def show_proposals(status: str | None, node: str, as_json: bool) -> None:
    """Proposals with their action, approvals and state (open, adopted, expired).

    \b
    Example:
      provledger show proposals --status open
    """
    with Client(node) as c:
        d = c.get("/v1/proposals", **({"status": status} if status else {}))
        orgs = _in_force(c)
    emit(d, as_json, "\n".join(describe_proposal(p, orgs) for p in d["proposals"]) or "no proposals")


@click.command("validators", cls=Command)
@click.option("--height", type=click.IntRange(1, 2**63 - 1), default=None,
              help="The set certifying this height (default: the next height).")
@_node_option
@_json_option
def show_validators(height: int | None, node: str, as_json: bool) -> None:
    """The validator set certifying a height: name, key and URL, in set order.

    \b
    Example:
      provledger show validators --height 12
    """
    with Client(node) as c:
        d = c.get("/v1/validators", **({"height": height} if height is not None else {}))
    lines = [f"validators certifying height {d['height']} (validators_hash {d['hash']})"]
    lines += [f"  {v['name']:<16} {v['key']} {v['url']}" for v in d["validators"]]
    emit(d, as_json, "\n".join(lines))


@click.command("organisations", cls=Command)
@_node_option
@_json_option
def show_organisations(node: str, as_json: bool) -> None:
    """The organisations in force and their admins.

    \b
    Example:
      provledger show organisations --json
    """
    with Client(node) as c:
        d = c.get("/v1/organisations")
    lines = [f"{len(d['organisations'])} organisations; a proposal needs {needed(len(d['organisations']))} approvals"]
    lines += [f"  {o['name']:<16} admins {', '.join(k[:16] + '…' for k in o['admins']) or '(none)'}"
              for o in d["organisations"]]
    emit(d, as_json, "\n".join(lines))


def register(cli: click.Group) -> None:
    """Add ``propose``, ``approve`` and ``pop`` to the root group and the three views to
    ``show`` (``ledger.cli_client`` registers it first)."""
    cli.add_command(propose)
    cli.add_command(approve)
    cli.add_command(pop)
    show = cli.commands["show"]
    assert isinstance(show, click.Group)
    for command in (show_proposals, show_validators, show_organisations):
        show.add_command(command)
