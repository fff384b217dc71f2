"""Generate the named protocol vectors in this directory, with fixed keys.

    python tests/vectors/generate.py [OUTDIR]

Everything here is computed from PROTOCOL.md with ``rfc8785``, ``hashlib`` and
``cryptography`` alone — never with ``ledger`` — so that ``test_vectors.py`` holding the
library to these files is a check against an independent reading of the protocol.
Ed25519 signatures are deterministic (RFC 8032), so a rerun writes identical bytes.

Files (each a JSON object; byte strings are hex, ``*_text`` are the exact UTF-8 strings):
  genesis.json       a genesis document, the hashed bytes and the chain id (PROTOCOL.md 2)
  record.json        a signed record: signer seed, envelope, signing bytes, signature, id (3)
  records.json       one valid record of each version 2 type, with ids (3.1, 9.2)
  block.json         a block header over the records, its hashed bytes and hash (5, 9.1)
  certificate.json   a 4-validator genesis, a vote payload, its signing bytes, the votes and
                     the commit certificate (6)
  merkle.json        RFC 9162 roots, inclusion and consistency proofs over the record ids (4)
  membership.json    a certified chain with every kind of change (9): organisations added and
                     removed, validators added, replaced and removed, the policy changed;
                     per block the set certifying it and the set after it
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HERE = Path(__file__).resolve().parent
TS = "2026-11-21T12:00:00Z"


# --- primitives, straight from PROTOCOL.md 1 ---------------------------------------------
def seed(name: str) -> bytes:
    return hashlib.sha256(b"provledger-vector-key/" + name.encode()).digest()


def pub(name: str) -> str:
    return Ed25519PrivateKey.from_private_bytes(seed(name)).public_key().public_bytes_raw().hex()


def sign(name: str, message: bytes) -> str:
    return Ed25519PrivateKey.from_private_bytes(seed(name)).sign(message).hex()


def tagged(tag: str, payload: Any) -> bytes:
    return tag.encode() + b"\n" + rfc8785.dumps(payload)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- RFC 9162 2.1, by its recursive definitions -------------------------------------------
def _k(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]  # leaves are already leaf hashes (record ids)
    k = _k(n)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = _k(n)
    if m <= k:
        return [*subproof(m, leaves[:k], b), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


# --- the documents -------------------------------------------------------------------------
def validators_hash(keys: list[str]) -> str:
    """PROTOCOL.md 9.1: the keys sorted as strings, under the validators tag."""
    return sha(tagged("provledger/validators/v1", sorted(keys)))


def pop(name: str, chain: str) -> str:
    """PROTOCOL.md 9.3: the new key's signature over its own payload."""
    return sign(name, tagged("provledger/pop/v1", {"chain": chain, "key": pub(name)}))


def genesis_doc(validators: int) -> dict[str, Any]:
    return {
        "v": 2, "name": "vector-consortium", "created": TS,
        "validators": [{"name": f"node-{i}", "key": pub(f"validator-{i}"), "url": f"http://127.0.0.1:{8001 + i}"}
                       for i in range(validators)],
        "organisations": [{"name": "org-a", "admins": [pub("admin-a")]}],
        "participants": [{"key": pub("alice"), "name": "alice", "org": "org-a",
                          "roles": ["contributor", "annotator", "trainer", "evaluator"]}],
        "policy": {"attribution": {"data": "0.5", "annotation": "0.3", "training": "0.2"}},
    }


def envelope(signer: str, chain: str, rtype: str, body: dict[str, Any], nonce: str) -> dict[str, Any]:
    env: dict[str, Any] = {"v": 1, "chain": chain, "type": rtype, "signer": pub(signer), "nonce": nonce,
                           "ts": TS, "body": body}
    env["sig"] = sign(signer, tagged("provledger/record/v1", env))
    return env


def record_id(env: dict[str, Any]) -> str:
    return sha(b"\x00" + rfc8785.dumps(env))


def build() -> dict[str, Any]:
    out: dict[str, Any] = {}
    g1 = genesis_doc(1)
    chain = sha(tagged("provledger/genesis/v1", g1))
    out["genesis.json"] = {"genesis": g1, "hashed_text": tagged("provledger/genesis/v1", g1).decode(),
                           "chain_id": chain}

    h = lambda text: sha(text.encode())  # noqa: E731 - a stand-in content hash
    dataset = {"dataset": "mnist", "version": "1", "content_hash": h("mnist/1"), "size_bytes": 52428800,
               "items": 70000, "license": "CC-BY-SA-3.0", "modality": "image", "derived_from": [],
               "privacy_budget": {"epsilon": "8", "delta": "0.00001"}, "description": "MNIST — digits, «raw»"}
    env = envelope("alice", chain, "dataset.contribute", dataset, "vector-1")
    unsigned = {k: v for k, v in env.items() if k != "sig"}
    out["record.json"] = {"signer_seed": seed("alice").hex(), "envelope": env,
                          "signing_text": tagged("provledger/record/v1", unsigned).decode(),
                          "sig": env["sig"], "id": record_id(env)}

    update = envelope("alice", chain, "model.update", {
        "model": "digits", "round": 1, "parent": None, "weights_hash": h("w1"),
        "inputs": [{"dataset": "mnist", "samples": 60000, "epsilon": "0.5", "delta": "0.000001"}],
        "aggregates": [], "metrics": {"accuracy": "0.981", "loss": "0.062"}}, "vector-4")
    records = [
        envelope("admin-a", chain, "identity.register",
                 {"key": pub("bob"), "name": "bob", "org": "org-a", "roles": ["annotator"]}, "vector-0"),
        env,
        envelope("alice", chain, "annotation.event", {
            "dataset": "mnist", "labels_hash": h("labels"), "labels": 70000, "label_schema": "digits-10",
            "method": "semi-automatic", "model": h("labeller"), "quality": "0.97",
            "quality_method": "double-annotation"}, "vector-2"),
        update,
        envelope("alice", chain, "model.update", {
            "model": "digits", "round": 1, "parent": None, "weights_hash": h("w-agg"), "inputs": [],
            "aggregates": [record_id(update)], "metrics": {}}, "vector-5"),
        envelope("alice", chain, "model.evaluation", {
            "target": record_id(update), "metric": "accuracy", "value": "0.979", "eval_set_hash": h("test"),
            "coalition": ["mnist"]}, "vector-6"),
        envelope("admin-a", chain, "identity.revoke", {"key": pub("bob"), "reason": "left"}, "vector-7"),
    ]
    # Governance (PROTOCOL.md 9.2): with one organisation a proposal adopts itself, so org-b
    # joins at once; the policy change then needs both organisations, and org-b's approval
    # adopts it.
    add_org = envelope("admin-a", chain, "network.propose", {
        "action": {"op": "org.add", "name": "org-b", "admins": [pub("admin-b")]}, "expires": 1,
        "reason": "a second hospital"}, "vector-8")
    policy = envelope("admin-a", chain, "network.propose", {
        "action": {"op": "policy.set", "attribution": {"data": "0.4", "annotation": "0.4", "training": "0.2"}},
        "expires": 1, "reason": "annotation is the costly part"}, "vector-9")
    records += [add_org, policy,
                envelope("admin-b", chain, "network.approve", {"proposal": record_id(policy)}, "vector-10")]
    ids = [record_id(e) for e in records]
    out["records.json"] = {"chain_id": chain, "records": [{"envelope": e, "id": i} for e, i in zip(records, ids, strict=True)]}

    leaves = [bytes.fromhex(i) for i in ids]
    header = {"v": 2, "chain": chain, "height": 1, "prev": chain, "time": "2026-11-21T12:00:01Z",
              "proposer": pub("validator-0"), "count": len(ids), "log_size": len(ids), "log_root": mth(leaves).hex(),
              "next_validators": validators_hash([pub("validator-0")])}
    out["block.json"] = {"header": header, "hashed_text": tagged("provledger/block/v1", header).decode(),
                         "hash": sha(tagged("provledger/block/v1", header))}

    g4 = genesis_doc(4)
    chain4 = sha(tagged("provledger/genesis/v1", g4))
    header4 = {**header, "chain": chain4, "prev": chain4, "height": 1,
               "next_validators": validators_hash([pub(f"validator-{i}") for i in range(4)])}
    block4 = sha(tagged("provledger/block/v1", header4))
    vote = {"chain": chain4, "height": 1, "round": 0, "step": "precommit", "block": block4}
    vote_text = tagged("provledger/vote/v1", vote)
    votes = [{"validator": pub(f"validator-{i}"), "sig": sign(f"validator-{i}", vote_text)} for i in (0, 2, 3)]
    out["certificate.json"] = {
        "genesis": g4, "chain_id": chain4, "header": header4, "block": block4, "vote": vote,
        "vote_signing_text": vote_text.decode(), "quorum": 3,
        "certificate": {"height": 1, "round": 0, "block": block4, "votes": votes},
    }

    out["merkle.json"] = {
        "leaves": ids,
        "roots": {str(n): mth(leaves[:n]).hex() for n in range(len(leaves) + 1)},
        "inclusion": [{"index": m, "size": n, "path": [x.hex() for x in path(m, leaves[:n])]}
                      for n in (1, 5, 8) for m in range(n)],
        "consistency": [{"first": m, "second": n, "path": [x.hex() for x in subproof(m, leaves[:n], True)]}
                        for n in (3, 8) for m in range(1, n + 1)],
    }
    out["membership.json"] = membership()
    return out


# --- a chain with every kind of change (PROTOCOL.md 9) -----------------------------------------
def membership() -> dict[str, Any]:
    """Six blocks. The validator set is followed here by PROTOCOL.md 9.3 alone: a list of
    (name, key, url) in set order, an added validator appended, a replaced one in its
    place. Each block is certified by precommits of every member of the set certifying
    its height (9.1); a change adopted in block h governs h + 1 on."""
    g = genesis_doc(4)
    chain = sha(tagged("provledger/genesis/v1", g))
    vals = [(v["name"], v["key"], v["url"]) for v in g["validators"]]
    names = {pub(f"validator-{i}"): f"validator-{i}" for i in range(6)}
    nonce = iter(range(1000))

    def rec(signer: str, rtype: str, body: dict[str, Any]) -> dict[str, Any]:
        return envelope(signer, chain, rtype, body, f"m-{next(nonce)}")

    def propose(signer: str, action: dict[str, Any], expires: int) -> dict[str, Any]:
        return rec(signer, "network.propose", {"action": action, "expires": expires, "reason": action["op"]})

    def approve(signer: str, proposal: dict[str, Any]) -> dict[str, Any]:
        return rec(signer, "network.approve", {"proposal": record_id(proposal)})

    def add(name: str, key_name: str, port: int) -> dict[str, Any]:
        return {"op": "validator.add", "key": pub(key_name), "name": name, "url": f"http://127.0.0.1:{port}",
                "pop": pop(key_name, chain)}

    policy = {"op": "policy.set", "attribution": {"data": "0.3", "annotation": "0.3", "training": "0.4"}}
    p1 = propose("admin-a", {"op": "org.add", "name": "org-b", "admins": [pub("admin-b")]}, 1)
    p2 = propose("admin-a", add("node-4", "validator-4", 8005), 2)
    p3 = propose("admin-b", {"op": "validator.replace", "old": pub("validator-1"), "new": pub("validator-5"),
                             "name": "node-1b", "url": "http://127.0.0.1:8006", "pop": pop("validator-5", chain)}, 3)
    p4 = propose("admin-a", {"op": "validator.remove", "key": pub("validator-3")}, 4)
    p5 = propose("admin-b", policy, 4)
    p6 = propose("admin-a", {"op": "org.add", "name": "org-c", "admins": [pub("admin-c")]}, 5)
    p7 = propose("admin-a", {"op": "org.remove", "name": "org-b"}, 6)
    plan: list[tuple[list[dict[str, Any]], list[Any]]] = [
        # (records, changes to the set in log order)
        ([p1], []),  # one organisation: the proposal adopts itself
        ([p2, approve("admin-b", p2)], [("append", "node-4", pub("validator-4"), "http://127.0.0.1:8005")]),
        ([p3, approve("admin-a", p3)], [("replace", pub("validator-1"), "node-1b", pub("validator-5"),
                                          "http://127.0.0.1:8006")]),
        ([p4, p5, approve("admin-b", p4), approve("admin-a", p5)], [("remove", pub("validator-3"))]),
        ([p6, approve("admin-b", p6), p7, approve("admin-c", p7)], []),  # org-b out: a and c of three
        ([rec("alice", "dataset.contribute", {
            "dataset": "scans", "version": "1", "content_hash": sha(b"scans"), "size_bytes": 10, "items": 1,
            "license": "CC0-1.0", "modality": "image", "derived_from": [], "privacy_budget": None})], []),
    ]
    blocks = []
    ids: list[bytes] = []
    prev = chain
    for height, (records, changes) in enumerate(plan, start=1):
        certifying = list(vals)
        for change in changes:
            if change[0] == "append":
                vals.append(change[1:])
            elif change[0] == "replace":
                at = [v[1] for v in vals].index(change[1])
                vals[at] = (change[2], change[3], change[4])
            else:
                vals = [v for v in vals if v[1] != change[1]]
        ids += [bytes.fromhex(record_id(e)) for e in records]
        header = {"v": 2, "chain": chain, "height": height, "prev": prev, "time": f"2026-11-21T12:00:0{height}Z",
                  "proposer": certifying[height % len(certifying)][1], "count": len(records), "log_size": len(ids),
                  "log_root": mth(ids).hex(), "next_validators": validators_hash([v[1] for v in vals])}
        block = sha(tagged("provledger/block/v1", header))
        vote = tagged("provledger/vote/v1", {"chain": chain, "height": height, "round": 0, "step": "precommit",
                                             "block": block})
        cert = {"height": height, "round": 0, "block": block,
                "votes": [{"validator": v[1], "sig": sign(names[v[1]], vote)} for v in certifying]}
        blocks.append({"header": header, "hash": block, "certificate": cert, "records": records,
                       "certified_by": [{"name": n, "key": k, "url": u} for n, k, u in certifying],
                       "validators_after": [{"name": n, "key": k, "url": u} for n, k, u in vals]})
        prev = block
    return {"genesis": g, "chain_id": chain, "blocks": blocks,
            "policy_after": policy["attribution"], "organisations_after": ["org-a", "org-c"]}


def render(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write(outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in build().items():
        p = outdir / name
        p.write_bytes(render(doc))
        written.append(p)
    return written


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p)
