"""``provledger submit`` and ``provledger show``: talk to a node over HTTP.

The node URL comes from ``--node``, else ``$PROVLEDGER_NODE``, else http://127.0.0.1:8000.
Record ids sent to a node are full ids (it has no prefix lookup).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .cli_common import Group, emit, full_id, node_option
from .client import Client
from .errors import InputError
from .keys import SigningKey, is_hex
from .records import ROLES, make_record

__all__ = ["register"]

DEFAULT_NODE = "http://127.0.0.1:8000"


_node_option = node_option(DEFAULT_NODE)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print the node's answer as JSON.")


def _file_hash(path: str) -> tuple[str, int]:
    """SHA-256 and size of a local file: only the hash ever reaches the ledger."""
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}", code="no_such_file") from e
    return h.hexdigest(), size


def _hash_arg(value: str | None, file: str | None, what: str) -> str:
    if file:
        return _file_hash(file)[0]
    if value is None:
        raise InputError(f"give --{what} HEX or --{what.removesuffix('-hash')}-file PATH", code="bad_argument")
    if not is_hex(value, 32):
        raise InputError(f"--{what} must be 64 lowercase hex characters", code="bad_hex")
    return value


def _send(key_file: str, node: str, rtype: str, body: dict[str, Any], body_file: str | None, wait: bool,
          nonce: str | None, as_json: bool, dry_run: bool) -> None:
    """Sign ``body`` (or the JSON in ``body_file``) as ``rtype`` and submit it."""
    if body_file:
        try:
            body = json.loads(Path(body_file).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"--body {body_file}: {e}", code="bad_json") from e
    key = SigningKey.load(key_file)
    with Client(node) as client:
        env = make_record(key, client.chain_id, rtype, body, nonce=nonce)
        if dry_run:
            emit(env, True)
            return
        res = client.submit(env, wait=wait)
        out: dict[str, Any] = {"id": res["id"], "status": res["status"], "type": rtype}
        lines = [f"{rtype} {res['id']} {res['status']}"]
        if wait and res["status"] == "committed":
            from .genesis import parse_genesis
            from .proofs import verify_proof_doc

            proof = client.proof(res["id"])
            proof.setdefault("record", res["id"])
            header = verify_proof_doc(proof, parse_genesis(client.genesis()), res["id"])
            out["proof"] = proof
            lines += [f"in block {header.height}, log index {proof['index']} of {proof['tree_size']}",
                      f"inclusion proof verified against the certified log_root {header.log_root}"]
        emit(out, as_json, "\n".join(lines))


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed([
        click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False), help="Signer's key file."),
        _node_option,
        click.option("--body", "body_file", type=click.Path(dir_okay=False), default=None,
                     help="Take the record body from this JSON file instead of flags."),
        click.option("--wait", is_flag=True, help="Wait for the commit, then fetch and verify the proof."),
        click.option("--nonce", default=None, help="Nonce (default: random)."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
        click.option("--dry-run", is_flag=True, help="Print the signed envelope; do not submit."),
    ]):
        f = opt(f)
    return f


@click.group(cls=Group)
def submit() -> None:
    """Build, sign and submit a record to a node.

    \b
    Example:
      provledger submit dataset --key alice.key --dataset chest-xray --version 1 \\
        --file data.tar --items 1200 --license CC-BY-4.0 --modality image --wait
    """


@submit.command("dataset")
@_common
@click.option("--dataset", default=None, help="Dataset name.")
@click.option("--version", "version", default="1", show_default=True, help="Version of the dataset.")
@click.option("--content-hash", default=None, help="SHA-256 of the data (hex).")
@click.option("--file", "file", default=None, type=click.Path(dir_okay=False),
              help="Hash this local file for content_hash and size_bytes (the data stays here).")
@click.option("--size-bytes", type=int, default=None, help="Size of the data in bytes (taken from --file if given).")
@click.option("--items", type=int, default=None, help="Number of items (examples).")
@click.option("--license", "license_", default=None, help="SPDX licence id.")
@click.option("--modality", default=None, help="e.g. image, text, tabular.")
@click.option("--derived-from", multiple=True, help="Parent dataset name. Repeatable.")
@click.option("--epsilon", default=None, help="Differential-privacy budget epsilon (decimal).")
@click.option("--delta", default=None, help="Differential-privacy budget delta (decimal).")
@click.option("--uri", default=None, help="Where the data can be found (not fetched).")
@click.option("--description", default=None, help="Free text about the dataset.")
def submit_dataset(key_file: str, node: str, body_file: str | None, wait: bool, nonce: str | None, as_json: bool,
                   dry_run: bool, dataset: str | None, version: str, content_hash: str | None, file: str | None,
                   size_bytes: int | None, items: int | None, license_: str | None, modality: str | None,
                   derived_from: tuple[str, ...], epsilon: str | None, delta: str | None, uri: str | None,
                   description: str | None) -> None:
    """Record a dataset contribution (hash, size, items, licence, budget).

    \b
    Example:
      provledger submit dataset --key alice.key --dataset mnist --file mnist.npz \\
        --items 70000 --license CC-BY-SA-3.0 --modality image --epsilon 8 --delta 0.00001
    """
    body: dict[str, Any] = {}
    if not body_file:
        if file:
            content_hash, size = _file_hash(file)
            size_bytes = size if size_bytes is None else size_bytes
        missing = [n for n, v in (("--dataset", dataset), ("--items", items), ("--license", license_),
                                  ("--modality", modality), ("--size-bytes or --file", size_bytes)) if v is None]
        if missing:
            raise InputError(f"missing {', '.join(missing)}", code="bad_argument")
        if (epsilon is None) != (delta is None):
            raise InputError("give both --epsilon and --delta, or neither", code="bad_argument")
        body = {"dataset": dataset, "version": version, "content_hash": _hash_arg(content_hash, None, "content-hash"),
                "size_bytes": size_bytes, "items": items, "license": license_, "modality": modality,
                "derived_from": list(derived_from),
                "privacy_budget": None if epsilon is None else {"epsilon": epsilon, "delta": delta}}
        if uri:
            body["uri"] = uri
        if description:
            body["description"] = description
    _send(key_file, node, "dataset.contribute", body, body_file, wait, nonce, as_json, dry_run)


@submit.command("annotation")
@_common
@click.option("--dataset", default=None, help="Dataset the labels are for.")
@click.option("--labels-hash", default=None, help="SHA-256 of the label batch (hex).")
@click.option("--labels-file", default=None, type=click.Path(dir_okay=False), help="Hash this local label file.")
@click.option("--labels", type=int, default=None, help="Number of labels.")
@click.option("--label-schema", default=None, help="Name of the label set (e.g. findings-14).")
@click.option("--method", type=click.Choice(["manual", "automatic", "semi-automatic"]), default="manual", show_default=True,
              help="How the labels were made.")
@click.option("--model", "model_hash", default=None, help="Labelling model's hash (needed unless manual).")
@click.option("--quality", default=None, help="Quality score in [0, 1] (decimal).")
@click.option("--quality-method", default=None, help="How the quality score was measured.")
def submit_annotation(key_file: str, node: str, body_file: str | None, wait: bool, nonce: str | None,
                      as_json: bool, dry_run: bool, dataset: str | None, labels_hash: str | None,
                      labels_file: str | None, labels: int | None, label_schema: str | None, method: str,
                      model_hash: str | None, quality: str | None, quality_method: str | None) -> None:
    """Record an annotation event on a dataset.

    \b
    Example:
      provledger submit annotation --key alice.key --dataset mnist --labels-file labels.csv \\
        --labels 5000 --label-schema digits-10 --quality 0.97 --quality-method double-check
    """
    body: dict[str, Any] = {}
    if not body_file:
        missing = [n for n, v in (("--dataset", dataset), ("--labels", labels), ("--label-schema", label_schema),
                                  ("--quality", quality), ("--quality-method", quality_method)) if v is None]
        if missing:
            raise InputError(f"missing {', '.join(missing)}", code="bad_argument")
        body = {"dataset": dataset, "labels_hash": _hash_arg(labels_hash, labels_file, "labels-hash"),
                "labels": labels, "label_schema": label_schema, "method": method, "model": model_hash,
                "quality": quality, "quality_method": quality_method}
    _send(key_file, node, "annotation.event", body, body_file, wait, nonce, as_json, dry_run)


def _parse_input(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) != 4:
        raise InputError(f"--input {text!r}: expected DATASET:SAMPLES:EPSILON:DELTA", code="bad_argument")
    try:
        samples = int(parts[1])
    except ValueError as e:
        raise InputError(f"--input {text!r}: SAMPLES must be an integer", code="bad_argument") from e
    return {"dataset": parts[0], "samples": samples, "epsilon": parts[2], "delta": parts[3]}


@submit.command("model-update")
@_common
@click.option("--model", "model", default=None, help="Model name.")
@click.option("--round", "rnd", type=int, default=None, help="Training round.")
@click.option("--parent", default=None, metavar="RECORD_ID", help="Full record id of the previous global version.")
@click.option("--weights-hash", default=None, help="SHA-256 of the weights or update (hex).")
@click.option("--weights-file", default=None, type=click.Path(dir_okay=False), help="Hash this local weights file.")
@click.option("--input", "inputs", multiple=True, metavar="DATASET:SAMPLES:EPSILON:DELTA",
              help="Data used by a local update. Repeatable.")
@click.option("--aggregate", "aggregates", multiple=True, metavar="RECORD_ID",
              help="Full record id of an update this aggregate combines. Repeatable.")
@click.option("--metric", "metrics", multiple=True, metavar="NAME=VALUE", help="A metric (decimal). Repeatable.")
def submit_model_update(key_file: str, node: str, body_file: str | None, wait: bool, nonce: str | None,
                        as_json: bool, dry_run: bool, model: str | None, rnd: int | None, parent: str | None,
                        weights_hash: str | None, weights_file: str | None, inputs: tuple[str, ...],
                        aggregates: tuple[str, ...], metrics: tuple[str, ...]) -> None:
    """Record a model update: a local update (--input) or an aggregate (--aggregate).

    \b
    Examples:
      provledger submit model-update --key bob.key --model resnet-fl --round 1 \\
        --weights-file update.pt --input mnist:6000:0.5:0.000001 --metric loss=0.41
      provledger submit model-update --key bob.key --model resnet-fl --round 1 \\
        --weights-hash <hex> --aggregate <id1> --aggregate <id2>
    """
    body: dict[str, Any] = {}
    if not body_file:
        if model is None or rnd is None:
            raise InputError("missing --model or --round", code="bad_argument")
        ms: dict[str, str] = {}
        for m in metrics:
            name, sep, value = m.partition("=")
            if not sep:
                raise InputError(f"--metric {m!r}: expected NAME=VALUE", code="bad_argument")
            ms[name] = value
        body = {"model": model, "round": rnd, "parent": parent,
                "weights_hash": _hash_arg(weights_hash, weights_file, "weights-hash"),
                "inputs": [_parse_input(i) for i in inputs], "aggregates": list(aggregates), "metrics": ms}
    _send(key_file, node, "model.update", body, body_file, wait, nonce, as_json, dry_run)


@submit.command("evaluation")
@_common
@click.option("--target", default=None, metavar="RECORD_ID", help="Full record id of the evaluated model update.")
@click.option("--metric", default=None, help="Name of the metric (e.g. accuracy).")
@click.option("--value", default=None, help="Decimal value.")
@click.option("--eval-set-hash", default=None, help="SHA-256 of the evaluation set (hex).")
@click.option("--eval-set-file", default=None, type=click.Path(dir_okay=False), help="Hash this local file.")
@click.option("--coalition", multiple=True, help="Dataset the evaluated model was trained on. Repeatable.")
def submit_evaluation(key_file: str, node: str, body_file: str | None, wait: bool, nonce: str | None,
                      as_json: bool, dry_run: bool, target: str | None, metric: str | None, value: str | None,
                      eval_set_hash: str | None, eval_set_file: str | None, coalition: tuple[str, ...]) -> None:
    """Record an evaluation of a model update (coalitions feed Shapley attribution).

    \b
    Example:
      provledger submit evaluation --key carol.key --target <id> --metric accuracy \\
        --value 0.91 --eval-set-file test.npz --coalition mnist --coalition emnist
    """
    body: dict[str, Any] = {}
    if not body_file:
        if target is None or metric is None or value is None:
            raise InputError("missing --target, --metric or --value", code="bad_argument")
        body = {"target": target, "metric": metric, "value": value,
                "eval_set_hash": _hash_arg(eval_set_hash, eval_set_file, "eval-set-hash"),
                "coalition": list(coalition) or None}
    _send(key_file, node, "model.evaluation", body, body_file, wait, nonce, as_json, dry_run)


@submit.command("identity")
@_common
@click.option("--member", "member", default=None, help="Public key (hex) or key file of the new member.")
@click.option("--name", default=None, help="The member's name.")
@click.option("--org", default=None, help="Organisation (the signer must be its admin).")
@click.option("--role", "roles", multiple=True, type=click.Choice(ROLES), help="A role. Repeatable.")
def submit_identity(key_file: str, node: str, body_file: str | None, wait: bool, nonce: str | None,
                    as_json: bool, dry_run: bool, member: str | None, name: str | None, org: str | None,
                    roles: tuple[str, ...]) -> None:
    """Register a member of your organisation (signed by an admin).

    \b
    Example:
      provledger submit identity --key admin.key --member carol.key --name carol \\
        --org org-1 --role evaluator --wait
    """
    body: dict[str, Any] = {}
    if not body_file:
        if member is None or name is None or org is None or not roles:
            raise InputError("missing --member, --name, --org or --role", code="bad_argument")
        pub = member if is_hex(member, 32) else SigningKey.load(member).public
        body = {"key": pub, "name": name, "org": org, "roles": list(roles)}
    _send(key_file, node, "identity.register", body, body_file, wait, nonce, as_json, dry_run)


@submit.command("revoke")
@_common
@click.option("--member", default=None, help="Public key (hex) or key file to revoke.")
@click.option("--reason", default="", help="Why.")
def submit_revoke(key_file: str, node: str, body_file: str | None, wait: bool, nonce: str | None, as_json: bool,
                  dry_run: bool, member: str | None, reason: str) -> None:
    """Revoke a member's key (signed by an admin of its organisation).

    \b
    Example:
      provledger submit revoke --key admin.key --member <pubkey> --reason "left the project"
    """
    body: dict[str, Any] = {}
    if not body_file:
        if member is None:
            raise InputError("missing --member", code="bad_argument")
        pub = member if is_hex(member, 32) else SigningKey.load(member).public
        body = {"key": pub, "reason": reason}
    _send(key_file, node, "identity.revoke", body, body_file, wait, nonce, as_json, dry_run)


@submit.command("policy")
@_common
@click.option("--data", default=None, help="Data pool share (decimal).")
@click.option("--annotation", default=None, help="Annotation pool share.")
@click.option("--training", default=None, help="Training pool share.")
def submit_policy(key_file: str, node: str, body_file: str | None, wait: bool, nonce: str | None, as_json: bool,
                  dry_run: bool, data: str | None, annotation: str | None, training: str | None) -> None:
    """A policy.set record of protocol version 1, which the chain refuses (not_adopted).

    The attribution policy changes only by a vote of the organisations:
    `provledger propose policy`, then `provledger approve`.

    \b
    Example:
      provledger submit policy --key admin.key --data 0.6 --annotation 0.2 --training 0.2
    """
    body: dict[str, Any] = {}
    if not body_file:
        if data is None or annotation is None or training is None:
            raise InputError("missing --data, --annotation or --training", code="bad_argument")
        body = {"attribution": {"data": data, "annotation": annotation, "training": training}}
    _send(key_file, node, "policy.set", body, body_file, wait, nonce, as_json, dry_run)


# --- show ------------------------------------------------------------------------------
@click.group(cls=Group)
def show() -> None:
    """Show what a node holds: records, blocks, checkpoints, datasets, identities.

    \b
    Example:
      provledger show checkpoint --node http://127.0.0.1:8000
    """


@show.command("record")
@click.argument("record_id")
@_node_option
@_json_option
def show_record(record_id: str, node: str, as_json: bool) -> None:
    """A record, its status, height and log index (RECORD_ID: the full id).

    \b
    Example:
      provledger show record 3f2a...e9
    """
    record_id = full_id(record_id)
    with Client(node) as c:
        d = c.record(record_id)
    env = d["record"]
    emit(d, as_json, "\n".join([
        f"{env['type']} {record_id}", f"status {d['status']}, height {d['height']}, index {d['index']}",
        f"signer {env['signer']}", f"time {env['ts']}", json.dumps(env["body"], indent=2)]))


@show.command("block")
@click.argument("height", type=int)
@_node_option
@_json_option
def show_block(height: int, node: str, as_json: bool) -> None:
    """A block: header, certificate and its records.

    \b
    Example:
      provledger show block 1
    """
    with Client(node) as c:
        d = c.block(height)
    h = d["header"]
    lines = [f"block {h['height']} {d['hash']}", f"time {h['time']}, proposer {h['proposer'][:16]}…",
             f"{h['count']} records, log_size {h['log_size']}, log_root {h['log_root']}",
             f"certificate: round {d['certificate']['round']}, {len(d['certificate']['votes'])} votes"]
    lines += [f"  {e['type']:<20} {e['signer'][:16]}… {e['nonce']}" for e in d["records"]]
    emit(d, as_json, "\n".join(lines))


@show.command("checkpoint")
@click.argument("height", type=int, required=False)
@_node_option
@_json_option
def show_checkpoint(height: int | None, node: str, as_json: bool) -> None:
    """The latest (or a given) final block header with its certificate.

    \b
    Example:
      provledger show checkpoint --json > checkpoint.json
    """
    with Client(node) as c:
        d = c.checkpoint(height)
    h = d["header"]
    emit(d, as_json, f"height {h['height']} {d['hash']}\nlog_size {h['log_size']}, log_root {h['log_root']}\n"
                     f"certified by {len(d['certificate']['votes'])} validator vote(s) in round {d['certificate']['round']}")


@show.command("dataset")
@click.argument("name")
@_node_option
@_json_option
def show_dataset(name: str, node: str, as_json: bool) -> None:
    """A dataset's versions, annotations and privacy budget (spent, remaining).

    \b
    Example:
      provledger show dataset mnist
    """
    with Client(node) as c:
        d = c.dataset(name)
    lines = [f"dataset {name}"]
    for v, rid in (d.get("versions") or {}).items():
        lines.append(f"  version {v}: {rid}")
    b = d.get("budget")
    if b:
        lines.append(f"  budget epsilon {b['epsilon']}, delta {b['delta']}; spent epsilon {d['spent']['epsilon']}, "
                     f"delta {d['spent']['delta']}; remaining epsilon {d['remaining']['epsilon']}, delta {d['remaining']['delta']}")
    else:
        lines.append("  no privacy budget (not under DP accounting)")
    lines.append(f"  {len(d.get('annotations') or [])} annotation event(s)")
    emit(d, as_json, "\n".join(lines))


@show.command("identities")
@_node_option
@_json_option
def show_identities(node: str, as_json: bool) -> None:
    """Registered participants: key, name, organisation, roles, revoked.

    \b
    Example:
      provledger show identities --json
    """
    with Client(node) as c:
        ids = c.identities()
    emit(ids, as_json, "\n".join(
        f"{i['key'][:16]}… {i['name']:<16} {i['org']:<12} {','.join(i['roles'])}{' REVOKED' if i.get('revoked') else ''}"
        for i in ids))


@show.command("status")
@_node_option
@_json_option
def show_status(node: str, as_json: bool) -> None:
    """The node's chain id, height, log size and mempool.

    \b
    Example:
      provledger show status --node http://127.0.0.1:8001
    """
    with Client(node) as c:
        d = c.status()
    emit(d, as_json, "\n".join(f"{k}: {v}" for k, v in d.items()))


def register(cli: click.Group) -> None:
    cli.add_command(submit)
    cli.add_command(show)
