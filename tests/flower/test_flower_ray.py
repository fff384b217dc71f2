"""The same recording through Flower's own ``run_simulation`` (Ray actors run the clients,
in processes of their own): each client loads its organisation's key inside its process
from the identities given to ``ProvLedgerMod`` by partition id."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e .[test,flower])")
pytest.importorskip("ray", reason="flwr[simulation] (Ray) is not installed")

import fl_demo
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from ledger.flower import ProvLedger, weights_hash
from ledger.keys import SigningKey


@pytest.mark.slow
def test_run_simulation_records_every_round(federation: dict[str, Any]) -> None:
    client, home = federation["client"], federation["home"]
    names = {i["key"]: i["name"] for i in client.identities()}
    datasets = [h[1] for h in fl_demo.HOSPITALS]
    ids = {i: (str(home / "demo-keys" / f"{who}.key"), ds) for i, (who, ds, _, _) in enumerate(fl_demo.HOSPITALS)}
    inner = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=3, min_available_nodes=3)
    strategy = ProvLedger(inner, node=client, aggregator=SigningKey.load(home / "demo-keys" / "ari.key"),
                          model="ray-sim", datasets=datasets)
    app = fl_demo.server_app(strategy, 2)
    run_simulation(server_app=app, client_app=fl_demo.client_app(identities=ids), num_supernodes=3,
                   backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 1}})
    assert [r["round"] for r in strategy.rounds] == [1, 2] and strategy.rejected == []
    for r in strategy.rounds:
        agg = client.record(r["aggregate"])["record"]["body"]
        assert len(agg["aggregates"]) == 3
        for uid in agg["aggregates"]:
            rec = client.record(uid)["record"]
            trainer = fl_demo.HOSPITALS[datasets.index(rec["body"]["inputs"][0]["dataset"])][0]
            assert names[rec["signer"]] == trainer
    assert client.record(strategy.parent)["record"]["body"]["weights_hash"] == weights_hash(app.result.arrays)
