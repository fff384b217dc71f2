"""W3C PROV-JSON export: read back by the ``prov`` package with nothing lost."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import prov.model as pm
from test_lineage import Chain, demo

from ledger.lineage import lineage
from ledger.prov import NAMESPACES, prov_document, to_prov

RELATIONS = {"used", "wasGeneratedBy", "wasDerivedFrom", "wasAttributedTo", "actedOnBehalfOf",
             "wasAssociatedWith", "specializationOf"}


def counts(doc: dict[str, Any]) -> Counter[str]:
    return Counter({k: len(v) for k, v in doc.items() if k != "prefix"})


def read_back(doc: dict[str, Any]) -> pm.ProvDocument:
    return pm.ProvDocument.deserialize(content=json.dumps(doc), format="json")


def test_model_prov_round_trips_through_the_prov_package() -> None:
    ch, ids = demo()
    doc = prov_document(ch.memory(), ids["g2"])
    assert set(doc) >= RELATIONS and {"entity", "activity", "agent"} <= set(doc)
    assert doc["prefix"] == NAMESPACES and all(uri.startswith("urn:provledger:") for uri in NAMESPACES.values())
    parsed = read_back(doc)
    assert len(list(parsed.get_records())) == sum(counts(doc).values())
    # Serialising again keeps every element and relation.
    again = json.loads(parsed.serialize(format="json"))
    assert counts(again) == counts(doc)
    assert set(again["entity"]) == set(doc["entity"])
    # PROV-N renders it too (the prov package's own checks of identifiers and relations).
    provn = parsed.get_provn()
    assert "actedOnBehalfOf(plk:" in provn and "wasDerivedFrom(plm:" in provn
    # The structure: the model version, its run, the participants acting for their orgs.
    assert f"plm:{ids['g2']}" in doc["entity"] and f"plr:{ids['g2']}" in doc["activity"]
    assert doc["agent"]["plo:org-b"]["prov:type"] == {"$": "prov:Organization", "type": "prov:QUALIFIED_NAME"}
    assert any(r["prov:generatedEntity"] == f"plv:{ids['scans-clean']}" and r["prov:usedEntity"] == "pld:scans"
               for r in doc["wasDerivedFrom"].values())
    assert any(r["prov:activity"] == f"plr:{ids['l1a']}" and r["prov:entity"] == "pld:scans-clean"
               and r["provledger:samples"] == 300 for r in doc["used"].values())
    bob = ch.keys["bob"].public
    assert {"prov:delegate": f"plk:{bob}", "prov:responsible": "plo:org-b"} in doc["actedOnBehalfOf"].values()


def test_dataset_prov_and_awkward_names() -> None:
    ch = Chain()
    ch.dataset("alice", "chest x-rays/2024 (v2)")
    ch.annotate("bob", "chest x-rays/2024 (v2)", method="semi-automatic")
    ch.local("alice", "m", 1, [("chest x-rays/2024 (v2)", 5)])
    doc = prov_document(ch.memory(), "dataset:chest x-rays/2024 (v2)")
    assert "pld:chest%20x-rays%2F2024%20%28v2%29" in doc["entity"]
    parsed = read_back(doc)
    assert counts(json.loads(parsed.serialize(format="json"))) == counts(doc)
    assert "wasAttributedTo" in doc and "actedOnBehalfOf" in doc


def test_prov_is_a_pure_function_of_the_graph() -> None:
    ch, ids = demo()
    g = lineage(ch.memory(), ids["g2"])
    assert to_prov(g) == to_prov(json.loads(json.dumps(g))) == prov_document(ch.memory(), ids["g2"])


def test_a_policy_change_shows_the_organisations_that_approved_it() -> None:
    """PROTOCOL.md 9.2, 9.3: the policy in force at the model, the adoption that made it and
    every organisation whose approval counted, as PROV the ``prov`` package reads back."""
    ch = Chain()
    ch.dataset("alice", "scans")
    before = ch.local("bob", "m", 1, [("scans", 10)])
    pid = ch.policy("0.7", "0.1", "0.2")
    after = ch.local("bob", "m", 2, [("scans", 10)], parent=before)
    doc = prov_document(ch.memory(), after)
    assert doc["entity"][f"plp:{pid}"]["prov:type"] == {"$": "provledger:AttributionPolicy", "type": "prov:QUALIFIED_NAME"}
    assert doc["entity"][f"plp:{pid}"]["provledger:data"] == "0.7"
    assert {"prov:entity": f"plp:{pid}", "prov:activity": f"plg:{pid}"} in doc["wasGeneratedBy"].values()
    approvers = {r["prov:agent"] for r in doc["wasAssociatedWith"].values() if r["prov:activity"] == f"plg:{pid}"}
    assert approvers == {"plo:org-a", "plo:org-b"}
    assert {"prov:influencee": f"plm:{after}", "prov:influencer": f"plp:{pid}"} in doc["wasInfluencedBy"].values()
    parsed = read_back(doc)
    assert len(list(parsed.get_records())) == sum(counts(doc).values())
    assert "wasInfluencedBy(plm:" in parsed.get_provn()
    # The model before the change was made under the genesis policy: no policy element.
    assert not any(k.startswith("plp:") for k in prov_document(ch.memory(), before)["entity"])
