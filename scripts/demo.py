"""A worked example: a three-hospital consortium trains a model together on provledger.

``scripts/demo`` runs this file. Through the HTTP API (``ledger.client``) it records:

1. three organisations' people (``identity.register``, signed by each organisation's admin);
2. four chest X-ray datasets with privacy budgets, one ``derived_from`` another;
3. one annotation event of each method (manual, semi-automatic, automatic);
4. three federated rounds: a local ``model.update`` per organisation, then an aggregate
   combining them, each aggregate the ``parent`` of the next round's updates;
5. ``model.evaluation`` records of the final model for every coalition of its datasets
   (so Shapley values are exact);
6. one more update that would overspend a dataset's budget, which the node refuses;

then prints the final model's lineage and its attribution tables (proportional and
Shapley), as the node computes them (``GET /v1/lineage``, ``GET /v1/attribution``).

Without ``--node`` it makes a network in a temporary directory (``--home DIR`` keeps it),
runs a node on a free port for the duration and stops it. The network has the layout of
``provledger init`` (validator.key, genesis.json, config.json, ledger.db) but three
organisations in its genesis, each with its admin key ``admin-<org>.key``: PROTOCOL.md 3.1
lets ``identity.register`` name only organisations of the genesis. ``--node URL --home DIR``
uses a running node whose admin keys are in DIR (a network this script made, or one from
``provledger init``: then the people join the organisations there are).

Keys are generated at run time (saved in ``DIR/demo-keys``); names, hashes, counts and
values are fixed, so two runs give the same tables up to the keys.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from ledger.client import Client
from ledger.errors import InputError, LedgerError, PeerError
from ledger.keys import SigningKey
from ledger.records import make_record

MODEL = "cxr-net"
METRIC = "auc"
ROUNDS = 3
ORGS = ("northside-hospital", "lakeview-clinic", "harbor-imaging")
POLICY = {"attribution": {"data": "0.5", "annotation": "0.3", "training": "0.2"}}

# name, organisation (index into the organisations), roles
PEOPLE = (
    ("nadia", 0, ["contributor", "annotator", "trainer"]),
    ("luis", 1, ["contributor", "annotator", "trainer"]),
    ("hana", 2, ["contributor", "annotator", "trainer"]),
    ("ari", 0, ["trainer"]),  # runs the aggregation server
    ("eve", 2, ["evaluator"]),  # holds the held-out evaluation set
)

# name, contributor, items, privacy budget (epsilon, delta), derived_from
DATASETS = (
    ("northside-cxr", "nadia", 1200, ("10", "0.00001"), []),
    ("northside-cxr-crops", "nadia", 1200, ("6", "0.00001"), ["northside-cxr"]),
    ("lakeview-cxr", "luis", 800, ("6", "0.00001"), []),
    ("harbor-cxr", "hana", 1000, ("6", "0.00001"), []),
)

# dataset, annotator, method, labels, quality, quality method
ANNOTATIONS = (
    ("lakeview-cxr", "luis", "manual", 800, "0.95", "double-read"),
    ("harbor-cxr", "hana", "semi-automatic", 1000, "0.9", "radiologist-review-of-proposals"),
    ("northside-cxr-crops", "nadia", "automatic", 1200, "0.8", "agreement-on-200-reference-images"),
)

# trainer, dataset, samples per round; each round costs epsilon 1, delta 0.000001
TRAINERS = (("nadia", "northside-cxr-crops", 1200), ("luis", "lakeview-cxr", 800), ("hana", "harbor-cxr", 1000))
ROUND_COST = ("1", "0.000001")
LOCAL_AUC = {1: ("0.70", "0.64", "0.67"), 2: ("0.76", "0.71", "0.74"), 3: ("0.80", "0.75", "0.78")}
GLOBAL_AUC = {1: "0.74", 2: "0.81", 3: "0.86"}

# AUC of the final architecture trained on each coalition of the three training datasets
COALITION_AUC = {
    ("northside-cxr-crops",): "0.71",
    ("lakeview-cxr",): "0.66",
    ("harbor-cxr",): "0.69",
    ("lakeview-cxr", "northside-cxr-crops"): "0.78",
    ("harbor-cxr", "northside-cxr-crops"): "0.80",
    ("harbor-cxr", "lakeview-cxr"): "0.76",
    ("harbor-cxr", "lakeview-cxr", "northside-cxr-crops"): "0.86",
}
OVERSPEND = ("nadia", "northside-cxr-crops", "4")  # after three rounds 3 of 6 remain


def h(text: str) -> str:
    """A fixed stand-in SHA-256 (the real data never reaches the ledger)."""
    return hashlib.sha256(b"provledger-demo/" + text.encode()).hexdigest()


# --- the network -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_network(home: Path, port: int) -> dict[str, Any]:
    """A one-validator network with the demo's three organisations in ``home`` (the
    layout of ``provledger init``; one admin key per organisation)."""
    from ledger.genesis import parse_genesis
    from ledger.store import Store
    from node.config import NodeConfig

    cfg = NodeConfig(home=home, node_name="node-1", host="127.0.0.1", port=port)
    for p in (cfg.path("config.json"), cfg.genesis_path, cfg.db_path, cfg.key_path):
        if p.exists():
            raise InputError(f"{p} already exists; refusing to overwrite a network", code="file_exists")
    home.mkdir(parents=True, exist_ok=True)
    validator = SigningKey.generate()
    admins = {org: SigningKey.generate() for org in ORGS}
    doc = {
        "v": 2, "name": "cxr-consortium",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "validators": [{"name": cfg.node_name, "key": validator.public, "url": cfg.url}],
        "organisations": [{"name": org, "admins": [k.public]} for org, k in admins.items()],
        "participants": [],
        "policy": POLICY,
    }
    genesis = parse_genesis(doc)
    validator.save(cfg.key_path)
    for org, k in admins.items():
        k.save(home / f"admin-{org}.key")
    cfg.genesis_path.write_text(json.dumps(doc, indent=2) + "\n")
    Store.create(cfg.db_path, doc).close()
    cfg.save()
    return {"home": str(home), "chain_id": genesis.chain_id, "url": cfg.url}


def provledger_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "provledger"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ledger.cli"]


@contextlib.contextmanager
def node_process(home: Path, port: int) -> Iterator[str]:
    """Run ``provledger node start`` on ``home`` until the block ends (SIGTERM)."""
    url = f"http://127.0.0.1:{port}"
    with open(home / "node.log", "ab") as log:
        proc = subprocess.Popen([*provledger_cmd(), "node", "start", "--home", str(home), "--port", str(port),
                                 "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
        try:
            with Client(url, timeout=2) as c:
                deadline = time.monotonic() + 120  # a node starting on a loaded machine
                while True:
                    if proc.poll() is not None:
                        raise PeerError(f"the node exited with {proc.returncode}; see {home / 'node.log'}",
                                        code="node_exited")
                    try:
                        c.status()
                        break
                    except PeerError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextlib.contextmanager
def network_client(node: str | None, home: str | None, prefix: str = "provledger-demo-") -> Iterator[tuple[Client, Path, bool]]:
    """``(client, home, kept)`` for a demo run: the running node at ``node`` whose admin keys
    are in ``home``; else a node run here on the network in ``home`` (made if it is not
    there), or in a temporary directory removed afterwards (``kept`` False)."""
    if node:
        if not home:
            raise InputError("--node needs --home DIR holding an admin key of the chain", code="bad_argument")
        with Client(node) as client:
            yield client, Path(home), True
        return
    with contextlib.ExitStack() as stack:
        path = Path(home) if home else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        port = free_port()
        if not (path / "genesis.json").exists():
            make_network(path, port)
        url = stack.enter_context(node_process(path, port))
        with Client(url) as client:
            yield client, path, bool(home)


# --- the consortium ------------------------------------------------------------------------
class Demo:
    def __init__(self, client: Client, home: Path) -> None:
        self.c = client
        self.home = home
        self.genesis = client.genesis()
        self.chain = client.chain_id
        self.ids: dict[str, str] = {}
        self.keys: dict[str, SigningKey] = {}
        self.people: list[dict[str, Any]] = []
        self._nonce = itertools.count(1)

    def admin_keys(self) -> list[tuple[str, SigningKey]]:
        """(organisation, admin key) for each organisation of the genesis whose admin
        key is in the home directory, in genesis order."""
        by_pub: dict[str, SigningKey] = {}
        for p in sorted(self.home.glob("*.key")):
            with contextlib.suppress(LedgerError, OSError, ValueError):
                k = SigningKey.load(p)
                by_pub[k.public] = k
        out = []
        for org in self.genesis["organisations"]:
            k = next((by_pub[a] for a in org["admins"] if a in by_pub), None)
            if k is not None:
                out.append((org["name"], k))
        if not out:
            raise InputError(f"no admin key of any organisation of this chain in {self.home}", code="no_admin_key")
        return out

    def envelope(self, signer: str | SigningKey, rtype: str, body: dict[str, Any]) -> dict[str, Any]:
        key = self.keys[signer] if isinstance(signer, str) else signer
        return make_record(key, self.chain, rtype, body, nonce=f"demo-{next(self._nonce)}-{time.time_ns()}")

    def commit(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Submit ``(label, envelope)`` pairs as one batch and wait until every one is committed."""
        results = self.c.submit_batch([env for _, env in items], wait=True)
        for (label, _env), res in zip(items, results, strict=True):
            if res.get("status") != "committed":
                raise PeerError(f"{label}: {res.get('message')} ({res.get('code')})", code=str(res.get("code")))
            self.ids[label] = res["id"]

    # 1. people ------------------------------------------------------------------------
    def register_people(self) -> None:
        admins = self.admin_keys()
        keydir = self.home / "demo-keys"
        keydir.mkdir(exist_ok=True)
        registered = {i["key"] for i in self.c.identities()}
        items = []
        for name, org_i, roles in PEOPLE:
            org, admin = admins[org_i % len(admins)]
            path = keydir / f"{name}.key"
            key = SigningKey.load(path) if path.exists() else SigningKey.generate()
            if not path.exists():
                key.save(path)
            self.keys[name] = key
            self.people.append({"name": name, "org": org, "roles": roles, "key": key.public, "key_file": str(path)})
            if key.public not in registered:
                items.append((f"identity:{name}", self.envelope(admin, "identity.register",
                                                               {"key": key.public, "name": name, "org": org, "roles": roles})))
        if items:
            self.commit(items)

    # 2. and 3. datasets and annotations ---------------------------------------------------
    def check_fresh(self) -> None:
        """Dataset names are unique on a chain: the demo runs once per network."""
        for name, *_ in DATASETS:
            try:
                self.c.dataset(name)
            except PeerError as e:
                if e.code != "not_found":
                    raise
                continue
            raise InputError(f"this chain already holds the demo's dataset {name!r}; run the demo on a fresh network",
                             code="demo_exists")

    def contribute(self) -> None:
        def body(name: str, items: int, budget: tuple[str, str], parents: list[str]) -> dict[str, Any]:
            return {"dataset": name, "version": "1", "content_hash": h(f"data/{name}/1"), "size_bytes": items * 350_000,
                    "items": items, "license": "CC-BY-4.0", "modality": "image", "derived_from": parents,
                    "privacy_budget": {"epsilon": budget[0], "delta": budget[1]},
                    "description": f"chest X-rays, {items} studies"}

        # A derived dataset may only name datasets already on the chain: two batches.
        for first in (True, False):
            self.commit([(f"dataset:{name}", self.envelope(who, "dataset.contribute", body(name, items, budget, parents)))
                         for name, who, items, budget, parents in DATASETS if (not parents) == first])
        self.commit([
            (f"annotation:{method}", self.envelope(who, "annotation.event", {
                "dataset": ds, "labels_hash": h(f"labels/{ds}/{method}"), "labels": labels,
                "label_schema": "cxr-findings-14", "method": method,
                "model": None if method == "manual" else h(f"labeller/{ds}"),
                "quality": quality, "quality_method": qmethod}))
            for ds, who, method, labels, quality, qmethod in ANNOTATIONS
        ])

    # 4. federated rounds -----------------------------------------------------------------
    def train(self) -> str:
        parent: str | None = None
        for r in range(1, ROUNDS + 1):
            self.commit([
                (f"update:r{r}:{who}", self.envelope(who, "model.update", {
                    "model": MODEL, "round": r, "parent": parent, "weights_hash": h(f"weights/{MODEL}/{r}/{who}"),
                    "inputs": [{"dataset": ds, "samples": samples, "epsilon": ROUND_COST[0], "delta": ROUND_COST[1]}],
                    "aggregates": [], "metrics": {METRIC: LOCAL_AUC[r][i]}}))
                for i, (who, ds, samples) in enumerate(TRAINERS)
            ])
            self.commit([(f"aggregate:r{r}", self.envelope("ari", "model.update", {
                "model": MODEL, "round": r, "parent": parent, "weights_hash": h(f"weights/{MODEL}/{r}/fedavg"),
                "inputs": [], "aggregates": [self.ids[f"update:r{r}:{who}"] for who, _, _ in TRAINERS],
                "metrics": {METRIC: GLOBAL_AUC[r]}}))])
            parent = self.ids[f"aggregate:r{r}"]
        assert parent is not None
        return parent

    # 5. evaluations ------------------------------------------------------------------------
    def evaluate(self, final: str) -> None:
        items = [(f"evaluation:r{r}", self.envelope("eve", "model.evaluation", {
            "target": self.ids[f"aggregate:r{r}"], "metric": METRIC, "value": GLOBAL_AUC[r],
            "eval_set_hash": h("eval/holdout"), "coalition": None})) for r in range(1, ROUNDS)]
        items += [(f"evaluation:{'+'.join(coalition)}", self.envelope("eve", "model.evaluation", {
            "target": final, "metric": METRIC, "value": value, "eval_set_hash": h("eval/holdout"),
            "coalition": list(coalition)})) for coalition, value in COALITION_AUC.items()]
        self.commit(items)

    # 6. an update over budget ---------------------------------------------------------------
    def overspend(self, final: str) -> dict[str, Any]:
        who, ds, eps = OVERSPEND
        env = self.envelope(who, "model.update", {
            "model": MODEL, "round": ROUNDS + 1, "parent": final, "weights_hash": h(f"weights/{MODEL}/{ROUNDS + 1}/{who}"),
            "inputs": [{"dataset": ds, "samples": 1200, "epsilon": eps, "delta": ROUND_COST[1]}],
            "aggregates": [], "metrics": {}})
        # The node's own answer, as any client sees it (PROTOCOL.md 8: {"code", "message"}).
        resp = httpx.post(f"{self.c.base_url}/v1/records", params={"wait": "true"}, json=env, timeout=30)
        if resp.status_code >= 400:
            answer = resp.json()
            if answer.get("code") != "budget_exceeded":
                raise PeerError(f"over-budget update: {answer.get('message')} ({answer.get('code')})",
                                code=str(answer.get("code")))
            return {"signer": who, "dataset": ds, "epsilon": eps, "status": resp.status_code, **answer}
        raise InputError(f"the node accepted an update over the budget of {ds!r}", code="budget_not_enforced")


def run(client: Client, home: Path, total: int) -> dict[str, Any]:
    d = Demo(client, home)
    d.check_fresh()
    d.register_people()
    d.contribute()
    final = d.train()
    d.evaluate(final)
    refused = d.overspend(final)
    return {
        "chain_id": d.chain, "node": client.base_url, "home": str(home),
        "organisations": sorted({p["org"] for p in d.people}, key=[p["org"] for p in d.people].index),
        "participants": d.people, "records": d.ids, "final_model": final,
        "lineage": client.lineage(final),
        "attribution": {m: client.attribution(final, total, m) for m in ("proportional", "shapley", "leave-one-out")},
        "refused": refused,
    }


def show(out: dict[str, Any], kept: bool) -> None:
    from rich.console import Console

    from ledger.cli_lineage import attribution_table
    from ledger.lineage import to_tree

    con = Console()
    con.rule("provledger worked example")
    con.print(f"chain {out['chain_id'][:16]}… at {out['node']}: {len(out['records'])} records committed")
    for org in out["organisations"]:
        names = ", ".join(f"{p['name']} ({'/'.join(p['roles'])})" for p in out["participants"] if p["org"] == org)
        con.print(f"  [bold]{org}[/]: {names}")
    con.rule(f"lineage of {MODEL} round {ROUNDS} ({out['final_model'][:16]}…)")
    con.print(to_tree(out["lineage"]))
    for method in ("proportional", "shapley"):
        con.print(attribution_table(out["attribution"][method]))
    r = out["refused"]
    con.print(f"[bold]refused[/]: {r['signer']}'s round-{ROUNDS + 1} update spending epsilon {r['epsilon']} of "
              f"{r['dataset']}: {r['message']} ({r['code']})")
    if kept:
        con.rule("recompute it yourself")
        for line in recompute_commands(out):
            con.print(line, soft_wrap=True, markup=False, highlight=False)


def recompute_commands(out: dict[str, Any]) -> list[str]:
    """The commands the README lists that recompute the demo's answers from its files
    (everything they write goes into the network's directory)."""
    home = Path(out["home"])
    final, db, bundle = out["final_model"], home / "ledger.db", home / "cxr.bundle"
    total = out["attribution"]["shapley"]["total_units"]
    return [
        f"provledger audit {db}",
        f"provledger attribution {final} --total {total} --method shapley --db {db}",
        f"provledger export bundle --db {db} --out {bundle}",
        f"provledger attribution {final} --total {total} --method shapley --bundle {bundle} --json",
        f"provledger lineage {final} --db {db} --dot | dot -Tsvg > {home / 'cxr-net.svg'}  # needs Graphviz",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="scripts/demo", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  scripts/demo --home /tmp/cxr-demo\n  provledger audit /tmp/cxr-demo/ledger.db")
    ap.add_argument("--node", metavar="URL", help="use this running node (its admin keys are in --home)")
    ap.add_argument("--home", metavar="DIR", help="the network's directory (default: a temporary one, removed)")
    ap.add_argument("--total", type=int, default=1000, help="units to share out (default 1000)")
    ap.add_argument("--init-only", action="store_true", help="only create the network in --home, then stop")
    ap.add_argument("--json", action="store_true", help="print everything as one JSON document")
    args = ap.parse_args(argv)
    try:
        if args.total < 0:
            raise InputError("--total must be a non-negative integer", code="bad_argument")
        if args.init_only and not args.node:
            if not args.home:
                raise InputError("--init-only needs --home DIR", code="bad_argument")
            made = make_network(Path(args.home), free_port())
            print(json.dumps(made, indent=2) if args.json else f"network in {made['home']}, chain {made['chain_id']}")
            return 0
        with network_client(args.node, args.home) as (client, home, kept):
            out = run(client, home, args.total)
            if not kept:
                out["home"] = None  # removed with the temporary directory
    except LedgerError as e:
        return fail(e)
    return emit(out, args.json, lambda o: show(o, kept))


def fail(e: LedgerError) -> int:
    """The CLI's one error line on stderr; exit code 1."""
    print(f"error: {e.message}" if "(" in e.message else f"error: {e.message} ({e.code})", file=sys.stderr)
    return 1


def emit(out: dict[str, Any], as_json: bool, show_fn: Callable[[dict[str, Any]], None]) -> int:
    """Print ``out`` as one JSON document or with ``show_fn``; exit code 0."""
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        show_fn(out)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
