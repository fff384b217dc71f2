"""The fl section of ``scripts/bench``: what recording a federation costs per round.

The demo model of ``scripts/fl_demo.py`` (logistic regression, central DP with fixed
clipping and Flower's RDP accountant) is trained by ``--fl-clients`` clients for
``--fl-rounds`` rounds through Flower's simulation runtime in process
(``ledger.flower.run_inprocess``), twice: without provledger, and with ``ProvLedger`` on
the server and ``ProvLedgerMod`` on every client, against a local node (one validator, a
node process on 127.0.0.1). Each is run ``--fl-repeats`` times; the fastest run counts.

Reported per round: the round time without recording; the added time (the difference of
the two wall times); and the server wrapper's own time (budget checks, verifying the
signed updates, the batch commit with ``wait=true``), measured inside it. The round time
includes Flower's in-memory runtime polling for messages, the same in both runs.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _consortium(d: Any, clients: int, sites: list[Any]) -> list[dict[str, str]]:
    """``clients`` trainers (site-0 ...) with one dataset each, and the aggregator."""
    import fl_demo

    from ledger.keys import SigningKey

    admins = d.admin_keys()
    keydir = d.home / "bench-keys"
    keydir.mkdir(exist_ok=True)
    people = [(f"site-{i}", ["contributor", "trainer"]) for i in range(clients)] + [("aggregator", ["trainer"])]
    items = []
    for i, (name, roles) in enumerate(people):
        key = SigningKey.generate()
        key.save(keydir / f"{name}.key")
        d.keys[name] = key
        org, admin = admins[i % len(admins)]
        items.append((f"identity:{name}", d.envelope(admin, "identity.register",
                                                     {"key": key.public, "name": name, "org": org, "roles": roles})))
    d.commit(items)
    d.commit([(f"dataset:site-{i}", d.envelope(f"site-{i}", "dataset.contribute", {
        "dataset": f"site-{i}-records", "version": "1", "content_hash": fl_demo.data_hash(x, y),
        "size_bytes": x.nbytes + y.nbytes, "items": len(y), "license": "CC-BY-4.0", "modality": "tabular",
        "derived_from": [], "privacy_budget": {"epsilon": "1000", "delta": "0.01"}})) for i, (x, y) in enumerate(sites)])
    return [{"provledger-key": str(keydir / f"site-{i}.key"), "provledger-dataset": f"site-{i}-records"}
            for i in range(clients)]


def _federate(clients: int, rounds: int, sites: list[Any], record: dict[str, Any] | None) -> dict[str, Any]:
    import fl_demo

    from ledger.flower import ProvLedger, run_inprocess

    strategy = fl_demo.dp_strategy(clients)
    if record is not None:
        strategy = ProvLedger(strategy, node=record["client"], aggregator=record["demo"].keys["aggregator"],
                              model=f"bench-{time.time_ns()}", datasets=[c["provledger-dataset"] for c in record["ids"]])
    app = fl_demo.server_app(strategy, rounds)
    configs = {i: c for i, c in enumerate(record["ids"])} if record is not None else None
    t0 = time.perf_counter()
    run_inprocess(app, fl_demo.client_app(record is not None, sites), clients, node_configs=configs)
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, "round_s": wall / rounds}
    if record is not None:
        assert len(strategy.rounds) == rounds and not strategy.rejected
        out["wrapper_s_per_round"] = sum(strategy.overhead_s.values()) / rounds
        out["commit_s_per_round"] = sum(strategy.commit_s.values()) / rounds
    return out


def section_fl(args: argparse.Namespace) -> dict[str, Any]:
    import fl_demo
    from bench import machine
    from demo import Demo, free_port, make_network, node_process

    from ledger.client import Client

    clients, rounds, repeats = args.fl_clients, args.fl_rounds, args.fl_repeats
    fl_demo.quiet_flwr()
    sites = [fl_demo.site_data(i) for i in range(clients)]
    res: dict[str, Any] = {"machine": machine(), "clients": clients, "rounds": rounds, "repeats": repeats}
    from node.config import NodeConfig

    res["block_interval_ms"] = NodeConfig(home=Path(".")).block_interval_ms
    with tempfile.TemporaryDirectory(prefix="provledger-bench-fl-") as tmp, contextlib.ExitStack() as stack:
        home, port = Path(tmp) / "net", free_port()
        make_network(home, port)
        url = stack.enter_context(node_process(home, port))
        client = stack.enter_context(Client(url))
        demo = Demo(client, home)
        ids = _consortium(demo, clients, sites)
        record = {"client": client, "demo": demo, "ids": ids}
        print(f"fl: {clients} clients, {rounds} rounds, {repeats} runs each, without and with recording ...", flush=True)
        plain = min((_federate(clients, rounds, sites, None) for _ in range(repeats)), key=lambda r: r["wall_s"])
        recorded = min((_federate(clients, rounds, sites, record) for _ in range(repeats)), key=lambda r: r["wall_s"])
    added = recorded["round_s"] - plain["round_s"]
    res.update(plain=plain, recorded=recorded)
    res["summary"] = {
        "round_ms_without": plain["round_s"] * 1000, "round_ms_with": recorded["round_s"] * 1000,
        "overhead_ms_per_round": added * 1000, "overhead_pct_of_round": 100 * added / plain["round_s"],
        "wrapper_ms_per_round": recorded["wrapper_s_per_round"] * 1000,
        "wrapper_pct_of_round": 100 * recorded["wrapper_s_per_round"] / plain["round_s"],
        "commit_wait_ms_per_round": recorded["commit_s_per_round"] * 1000,
        "clients": clients, "rounds": rounds,
    }
    return res


def render_fl(r: dict[str, Any]) -> list[str]:
    s = r["summary"]
    return [
        "## Fl: recording a Flower federation (issue 10)",
        "",
        f"{s['clients']} clients, {s['rounds']} rounds of the fl-demo model under central DP, in process, against a "
        f"local node; fastest of {r['repeats']} runs each.",
        "",
        "| figure | value | share of the round without recording | target |",
        "| --- | ---: | ---: | --- |",
        f"| round time without recording | {s['round_ms_without']:,.1f} ms | | |",
        f"| round time with ProvLedger + ProvLedgerMod | {s['round_ms_with']:,.1f} ms | | |",
        f"| added per round (difference of wall times) | {s['overhead_ms_per_round']:,.1f} ms | {s['overhead_pct_of_round']:.1f}% | < 50 ms, < 10% |",
        f"| the server wrapper's own time per round | {s['wrapper_ms_per_round']:,.1f} ms | {s['wrapper_pct_of_round']:.1f}% | |",
        f"| of which the batch commit (`wait=true`, block interval {r['block_interval_ms']} ms) | {s['commit_wait_ms_per_round']:,.1f} ms | | |",
        "",
    ]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--fl-clients", type=int, default=10, help="clients in the fl federation (default 10)")
    ap.add_argument("--fl-rounds", type=int, default=5, help="rounds of the fl federation (default 5)")
    ap.add_argument("--fl-repeats", type=int, default=3, help="runs of each fl configuration (default 3)")
