"""provledger benchmarks: limits of this machine and provledger's figures, in one run.

Each section measures the relevant raw limit (Ed25519 verify/s on one core, SQLite
inserts/s, a trivial HTTP endpoint's requests/s) in the same run and reports ratios to it.
Results go to bench-out/<section>.json and are merged into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ledger.audit import DbSource, audit  # noqa: E402
from ledger.chain import Ledger  # noqa: E402
from ledger.keys import SigningKey  # noqa: E402
from ledger.proofs import proof_doc  # noqa: E402
from ledger.records import make_record, parse_record  # noqa: E402
from ledger.store import Store  # noqa: E402

OUT = ROOT / "bench-out"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# --- limits ----------------------------------------------------------------------------
def _verify_loop(check: Any, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(500):
            check()
        n += 500
    return n / (time.perf_counter() - t0)


def _signed(size: int = 600) -> tuple[bytes, bytes, bytes]:
    key = SigningKey.generate()
    msg = os.urandom(size)
    return bytes.fromhex(key.public), msg, bytes.fromhex(key.sign_bytes(msg))


def raw_verify_per_s(seconds: float = 2.0) -> float:
    """The strict verifier provledger uses (``ledger.keys.signature_ok``: libsodium), in
    verifications per second on one core on a record-sized message, key check included
    (it is cached per key, as in the audit)."""
    from ledger.keys import signature_ok

    key, msg, sig = _signed()
    return _verify_loop(lambda: signature_ok(key, msg, sig), seconds)


def cryptography_verify_per_s(seconds: float = 2.0) -> float:
    """``cryptography`` (OpenSSL) Ed25519 verifications per second on one core, for
    comparison (not strict: docs/protocol.md 1)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key, msg, sig = _signed()
    pub = Ed25519PublicKey.from_public_bytes(key)
    return _verify_loop(lambda: pub.verify(sig, msg), seconds)


def sqlite_inserts_per_s(rows: int = 200_000) -> float:
    """Rows of 600 bytes per second into a WAL, synchronous=FULL SQLite file, batched."""
    with tempfile.TemporaryDirectory() as d:
        conn = sqlite3.connect(Path(d) / "t.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, k TEXT UNIQUE, v TEXT)")
        payload = "x" * 600
        t0 = time.perf_counter()
        for start in range(0, rows, 2000):
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO t VALUES (?,?,?)",
                             ((i, hashlib.sha256(str(i).encode()).hexdigest(), payload) for i in range(start, start + 2000)))
            conn.execute("COMMIT")
        dt = time.perf_counter() - t0
        conn.close()
    return rows / dt


# --- a realistic chain -----------------------------------------------------------------
def consortium() -> tuple[dict[str, Any], SigningKey, list[SigningKey]]:
    seed = lambda s: SigningKey.from_seed(hashlib.sha256(b"bench/" + s.encode()).digest())  # noqa: E731
    val, admin = seed("validator"), seed("admin")
    people = [seed(f"p{i}") for i in range(8)]
    doc = {
        "v": 2, "name": "bench", "created": "2026-11-21T12:00:00Z",
        "validators": [{"name": "node-0", "key": val.public, "url": "http://127.0.0.1:8000"}],
        "organisations": [{"name": "org-1", "admins": [admin.public]}],
        "participants": [{"key": p.public, "name": f"p{i}", "org": "org-1",
                          "roles": ["contributor", "annotator", "trainer", "evaluator"]} for i, p in enumerate(people)],
        "policy": {"attribution": {"data": "0.5", "annotation": "0.3", "training": "0.2"}},
    }
    return doc, val, people


def workload(chain_id: str, people: list[SigningKey], n: int, start: int = 0) -> list[dict[str, Any]]:
    """A mix of record types: datasets, annotation events, local model updates."""
    out = []
    h = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    for i in range(start, start + n):
        p = people[i % len(people)]
        if i < 50 or i % 50 == 0:
            body = {"dataset": f"ds-{i}", "version": "1", "content_hash": h(f"ds{i}"), "size_bytes": 10_000_000,
                    "items": 50_000, "license": "CC-BY-4.0", "modality": "image", "derived_from": [],
                    "privacy_budget": None}
            rtype = "dataset.contribute"
        elif i % 3 == 0:
            body = {"model": "resnet-fl", "round": i, "parent": None, "weights_hash": h(f"w{i}"),
                    "inputs": [{"dataset": f"ds-{(i // 50) * 50 if i >= 50 else 0}", "samples": 1000 + i % 997,
                                "epsilon": "0.1", "delta": "0.00001"}],
                    "aggregates": [], "metrics": {"loss": "0.31", "accuracy": "0.88"}}
            rtype = "model.update"
        else:
            body = {"dataset": f"ds-{(i // 50) * 50 if i >= 50 else 0}", "labels_hash": h(f"l{i}"), "labels": 500,
                    "label_schema": "coco-80", "method": "semi-automatic", "model": h("labeller"),
                    "quality": "0.93", "quality_method": "consensus-of-3"}
            rtype = "annotation.event"
        out.append(make_record(p, chain_id, rtype, body, nonce=f"b{i}", ts="2026-11-21T12:00:00Z"))
    return out


def build_chain(path: Path, n: int, block: int = 2000) -> dict[str, float]:
    doc, val, people = consortium()
    store = Store.create(path, doc)
    ledger = Ledger(store)
    t_sign = t_commit = 0.0
    for start in range(0, n, block):
        t0 = time.perf_counter()
        envs = workload(ledger.chain_id, people, min(block, n - start), start)
        recs = [parse_record(e, chain=ledger.chain_id) for e in envs]
        t1 = time.perf_counter()
        _, _, rejected = ledger.commit_single(val, recs)
        if rejected:
            raise SystemExit(f"bench workload rejected: {rejected[0][1]}")
        t_commit += time.perf_counter() - t1
        t_sign += t1 - t0
    store.close()
    return {"records": n, "sign_s": t_sign, "commit_s": t_commit, "commit_records_per_s": n / t_commit}


def audit_rate(path: Path, jobs: int) -> float:
    t0 = time.perf_counter()
    report = audit(DbSource(path), jobs=jobs)
    dt = time.perf_counter() - t0
    if not report.ok:
        raise SystemExit(f"bench chain does not audit clean: {report.findings[0]}")
    return report.records / dt


def proof_rate(path: Path, count: int = 20_000) -> float:
    store = Store(path)
    ids = [r[2] for r in store.records()]
    rng = random.Random(7)
    sample = [ids[rng.randrange(len(ids))] for _ in range(count)]
    t0 = time.perf_counter()
    for rid in sample:
        proof_doc(store, rid)
    dt = time.perf_counter() - t0
    store.close()
    return count / dt


def light_verification(changes: int = 10, validators: int = 4, repeat: int = 50) -> dict[str, Any]:
    """A proof of a record committed after ``changes`` validator-set changes (replacements,
    additions and removals voted in by ``network.propose``), each block certified by a
    quorum of its own set: the proof document's bytes and the time ``verify_proof_doc``
    takes with the genesis alone (PROTOCOL.md 9.4)."""
    from ledger.blocks import Certificate, quorum, vote_payload
    from ledger.canonical import VOTE_TAG
    from ledger.genesis import parse_genesis
    from ledger.governance import make_pop
    from ledger.proofs import verify_proof_doc

    seed = lambda s: SigningKey.from_seed(hashlib.sha256(b"bench-light/" + s.encode()).digest())  # noqa: E731
    keys = {k.public: k for k in (seed(f"v{i}") for i in range(validators + changes))}
    pool = iter(list(keys.values())[validators:])
    admin, person = seed("admin"), seed("person")
    doc = {
        "v": 2, "name": "bench-light", "created": "2026-11-21T12:00:00Z",
        "validators": [{"name": f"v{i}", "key": k.public, "url": "http://127.0.0.1:1"}
                       for i, k in enumerate(list(keys.values())[:validators])],
        "organisations": [{"name": "org-1", "admins": [admin.public]}],
        "participants": [{"key": person.public, "name": "p", "org": "org-1", "roles": ["contributor"]}],
        "policy": {"attribution": {"data": "0.5", "annotation": "0.3", "training": "0.2"}},
    }
    with tempfile.TemporaryDirectory() as d:
        store = Store.create(Path(d) / "light.db", doc)
        ledger = Ledger(store)

        def commit(envs: list[dict[str, Any]]) -> None:
            now = ledger.state.validator_keys()
            block, rejected = ledger.build_block([parse_record(e, chain=ledger.chain_id) for e in envs], proposer=now[0])
            if rejected:
                raise SystemExit(f"bench light chain: {rejected[0][1]}")
            vote = vote_payload(ledger.chain_id, block.header.height, 0, "precommit", block.hash)
            signers = now[:quorum(len(now))]
            ledger.commit(block, Certificate(block.header.height, 0, block.hash,
                                             tuple((k, keys[k].sign(VOTE_TAG, vote)) for k in signers)))

        for i in range(changes):
            now = ledger.state.validator_keys()
            if i % 3 == 1 or len(now) < 3:
                new = next(pool)
                action = {"op": "validator.add", "key": new.public, "name": f"n{i}", "url": "http://127.0.0.1:1",
                          "pop": make_pop(new, ledger.chain_id)}
            elif i % 3 == 2:
                action = {"op": "validator.remove", "key": now[-1]}
            else:
                new = next(pool)
                action = {"op": "validator.replace", "old": now[0], "new": new.public, "name": f"n{i}",
                          "url": "http://127.0.0.1:1", "pop": make_pop(new, ledger.chain_id)}
            commit([make_record(admin, ledger.chain_id, "network.propose",
                                {"action": action, "expires": ledger.height + 1, "reason": "bench"}, nonce=f"g{i}")])
            commit([])  # a block certified by the new set
        env = workload(ledger.chain_id, [person], 1)[0]
        commit([env])
        proof = proof_doc(store, parse_record(env).id)
        store.close()
    if len(proof["membership"]["changes"]) != changes:
        raise SystemExit(f"bench light chain has {len(proof['membership']['changes'])} changes, not {changes}")
    genesis = parse_genesis(doc)
    text = json.dumps(proof).encode()
    t0 = time.perf_counter()
    for _ in range(repeat):
        verify_proof_doc(json.loads(text), genesis)
    dt = (time.perf_counter() - t0) / repeat
    votes = sum(len(c["certificate"]["votes"]) for c in proof["membership"]["changes"])
    votes += len(proof["checkpoint"]["certificate"]["votes"])
    return {"changes": changes, "proof_bytes": len(text), "verify_ms": dt * 1000, "signatures": votes,
            "height": proof["checkpoint"]["header"]["height"]}


def section_core(args: argparse.Namespace) -> dict[str, Any]:
    big = args.records if args.records is not None else 100_000
    small = max(1000, big // 10)
    res: dict[str, Any] = {"machine": machine()}
    print("measuring limits: Ed25519 verify/s (strict libsodium, cryptography), SQLite inserts/s ...", flush=True)
    res["raw_verify_per_s"] = raw_verify_per_s()
    res["cryptography_verify_per_s"] = cryptography_verify_per_s()
    res["sqlite_inserts_per_s"] = sqlite_inserts_per_s()
    with tempfile.TemporaryDirectory() as d:
        for n in (small, big):
            path = Path(d) / f"chain-{n}.db"
            print(f"building a chain of {n} records ...", flush=True)
            res[f"build_{n}"] = build_chain(path, n)
            res[f"store_bytes_per_record_{n}"] = (path.stat().st_size + _wal(path)) / n
            print(f"auditing {n} records ...", flush=True)
            res[f"audit_j1_{n}"] = audit_rate(path, 1)
            res[f"audit_j2_{n}"] = audit_rate(path, 2)
        print("serving inclusion proofs ...", flush=True)
        res["proofs_per_s"] = proof_rate(Path(d) / f"chain-{big}.db")
    print("light verification of a proof across 10 validator-set changes ...", flush=True)
    res["light"] = light_verification()
    raw = res["raw_verify_per_s"]
    res["summary"] = {
        "audit_j1_vs_raw_verify": res[f"audit_j1_{big}"] / raw,
        "audit_j1_vs_cryptography_verify": res[f"audit_j1_{big}"] / res["cryptography_verify_per_s"],
        "strict_vs_cryptography_verify": raw / res["cryptography_verify_per_s"],
        "audit_j2_vs_j1": res[f"audit_j2_{big}"] / res[f"audit_j1_{big}"],
        "proofs_per_s": res["proofs_per_s"],
        "audit_rate_small_vs_big": res[f"audit_j1_{small}"] / res[f"audit_j1_{big}"],
        "commit_vs_sqlite_inserts": res[f"build_{big}"]["commit_records_per_s"] / res["sqlite_inserts_per_s"],
        "light_verify_ms": res["light"]["verify_ms"],
        "light_proof_bytes": res["light"]["proof_bytes"],
        "small": small,
        "big": big,
    }
    return res


def _wal(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


SECTIONS = {"core": section_core}


def render_core(r: dict[str, Any]) -> list[str]:
    s = r["summary"]
    big, small = s["big"], s["small"]
    raw = r["raw_verify_per_s"]
    return [
        "## Core: audit, proofs, store (issue 2)",
        "",
        "| figure | value | limit measured in the same run | ratio | target |",
        "| --- | ---: | --- | ---: | --- |",
        f"| strict Ed25519 verify (libsodium via PyNaCl, the verifier provledger uses), one core | {raw:,.0f}/s | `cryptography` (OpenSSL) verify {r['cryptography_verify_per_s']:,.0f}/s | {s['strict_vs_cryptography_verify']:.2f}x | |",
        f"| audit, `--jobs 1`, {big:,} records | {r[f'audit_j1_{big}']:,.0f} records/s | strict Ed25519 verify {raw:,.0f}/s (one core) | {s['audit_j1_vs_raw_verify']:.2f} | >= 0.9 |",
        f"| audit, `--jobs 1`, against `cryptography`'s verify | {r[f'audit_j1_{big}']:,.0f} records/s | `cryptography` verify {r['cryptography_verify_per_s']:,.0f}/s | {s['audit_j1_vs_cryptography_verify']:.2f} | |",
        f"| audit, `--jobs 2`, {big:,} records | {r[f'audit_j2_{big}']:,.0f} records/s | audit `--jobs 1` | {s['audit_j2_vs_j1']:.2f}x | >= 1.5x |",
        f"| inclusion proofs served from SQLite | {s['proofs_per_s']:,.0f} proofs/s | | | >= 5,000/s |",
        f"| commit path (build block, Merkle nodes, one transaction) | {r[f'build_{big}']['commit_records_per_s']:,.0f} records/s | SQLite inserts {r['sqlite_inserts_per_s']:,.0f} rows/s | {s['commit_vs_sqlite_inserts']:.2f} | |",
        f"| store size per record ({big:,} records, WAL included) | {r[f'store_bytes_per_record_{big}']:,.0f} bytes | | | |",
        *([f"| `verify-proof` with the genesis alone, a proof across {r['light']['changes']} validator-set changes "
           f"({r['light']['signatures']} signatures) | {r['light']['verify_ms']:.1f} ms, {r['light']['proof_bytes']:,} bytes "
           "| | | |"] if "light" in r else []),
        f"| audit rate at {small:,} vs {big:,} records (1.0 = linear time) | {r[f'audit_j1_{small}']:,.0f} vs {r[f'audit_j1_{big}']:,.0f} records/s | | {s['audit_rate_small_vs_big']:.2f} | ~1.0 |",
        "",
    ]


RENDER = {"core": render_core}

# Sections in their own modules (beside this file), each with section_<name>(args),
# render_<name>(results) and add_arguments(parser).
SECTION_MODULES = {"node": "bench_node", "devnet": "bench_devnet", "fl": "bench_fl", "explorer": "bench_explorer"}
_ARGUMENT_HOOKS = []
for _name, _module in SECTION_MODULES.items():
    _mod = __import__(_module)
    SECTIONS[_name] = getattr(_mod, f"section_{_name}")
    RENDER[_name] = getattr(_mod, f"render_{_name}")
    _ARGUMENT_HOOKS.append(_mod.add_arguments)

DOC = ROOT / "docs" / "benchmarks.md"


def _doc_parts(text: str) -> dict[str, list[str]]:
    """The sections of docs/benchmarks.md: each runs from its ``## <Name>...`` heading to
    the next ``## `` heading, and belongs to the section named by the heading's first word."""
    parts: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = parts.setdefault(line[3:].split()[0].rstrip(":").lower(), [])
        if current is not None:
            current.append(line)
    return parts


def write_markdown(results: dict[str, dict[str, Any]]) -> None:
    """Rewrite the parts of docs/benchmarks.md of the sections in ``results``; keep every
    other section's part as it was."""
    parts = _doc_parts(DOC.read_text()) if DOC.exists() else {}
    for name, res in results.items():
        if name in RENDER:
            m = res.get("machine", {})
            parts[name] = [*RENDER[name](res),
                           f"Machine: {m.get('cpu')}, {m.get('cores')} cores, Python {m.get('python')}, "
                           f"SQLite {m.get('sqlite')}; measured {m.get('date')}.", ""]
    lines = [
        "# Benchmarks",
        "",
        "Produced by `scripts/bench` (sections: " + ", ".join(SECTIONS) + "). Each section measures",
        "the machine's own limits in the same run and reports provledger's figures as ratios to them.",
        "Rerun with `scripts/bench` (all) or one section, e.g. `scripts/bench core --records 100000`",
        "or `scripts/bench node --records 1000000`; the other sections' figures below are kept.",
        "",
    ]
    for name in [*SECTIONS, *(n for n in parts if n not in SECTIONS)]:
        if name in parts:
            body = parts[name]
            while body and not body[-1].strip():
                body = body[:-1]
            lines += [*body, ""]
    DOC.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("sections", nargs="*", default=list(SECTIONS), help=f"any of {', '.join(SECTIONS)}")
    ap.add_argument("--records", type=int, default=None,
                    help="records in the large chain (core, default 100,000); records ingested (node, default 1,000,000)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for <section>.json (default bench-out/)")
    for hook in _ARGUMENT_HOOKS:
        hook(ap)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.sections:
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {name!r}; sections: {', '.join(SECTIONS)}")
        res = SECTIONS[name](args)
        (args.out / f"{name}.json").write_text(json.dumps(res, indent=2))
        print(json.dumps(res.get("summary", res), indent=2))
        results[name] = res
    if not args.no_docs:
        write_markdown(results)
        print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
