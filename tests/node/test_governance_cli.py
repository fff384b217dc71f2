"""The consortium votes through the CLI against a real node process (PROTOCOL.md 9.2, 9.3).

One validator, three organisations (org-a, org-b, org-c, one admin each): a proposal of
one organisation stays open, the second approval adopts it (2 of 3 is more than half).
Each command is the installed ``provledger`` run by click's runner in this process (the
node is a real process over real HTTP); the exit-code test runs it as a subprocess.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from procs import provledger_cmd

from ledger.blocks import validators_hash
from ledger.cli import cli
from ledger.client import Client
from ledger.governance import make_pop
from ledger.keys import SigningKey
from ledger.records import make_record
from ledger.store import Store
from node.config import NodeConfig

pytestmark = pytest.mark.e2e

ORGS = ("org-a", "org-b", "org-c")


def consortium_home(path: Path, orgs: tuple[str, ...] = ORGS) -> Path:
    """A node home for one validator and ``orgs``, each with ``admin-<org>.key`` in ``path``,
    and a participant ``alice.key`` (contributor of the first organisation)."""
    path.mkdir(parents=True)
    validator = SigningKey.generate()
    validator.save(path / "validator.key")
    admins = {o: SigningKey.generate() for o in orgs}
    for o, k in admins.items():
        k.save(path / f"admin-{o}.key")
    alice = SigningKey.generate()
    alice.save(path / "alice.key")
    doc = {"v": 2, "name": "consortium-test", "created": "2026-12-01T12:00:00Z",
           "validators": [{"name": "node-1", "key": validator.public, "url": "http://127.0.0.1:8000"}],
           "organisations": [{"name": o, "admins": [k.public]} for o, k in admins.items()],
           "participants": [{"key": alice.public, "name": "alice", "org": orgs[0], "roles": ["contributor"]}],
           "policy": {"attribution": {"data": "0.5", "annotation": "0.3", "training": "0.2"}}}
    (path / "genesis.json").write_text(json.dumps(doc, indent=2))
    Store.create(path / "ledger.db", doc).close()
    NodeConfig(home=path, block_interval_ms=10).save()
    return path


class Cli:
    def __init__(self, home: Path, node: Any) -> None:
        self.home, self.node, self.url = home, node, node.url

    def __call__(self, *args: str, code: int = 0) -> Result:
        res = CliRunner().invoke(cli, [*args, "--node", self.url], catch_exceptions=False)
        assert res.exit_code == code, f"provledger {' '.join(args)} exited {res.exit_code}:\n{res.output}{res.stderr}"
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def admin(self, org: str) -> str:
        return str(self.home / f"admin-{org}.key")

    def refused(self, *args: str) -> str:
        """The one error line of a command the chain refuses (exit 1)."""
        res = self(*args, code=1)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
        return lines[0]


@pytest.fixture
def net(tmp_path: Path, start_node: Any) -> Cli:
    home = consortium_home(tmp_path / "net")
    return Cli(home, start_node(home))


def proposal(net: Cli, pid: str) -> dict[str, Any]:
    found = [p for p in httpx.get(net.url + "/v1/proposals").json()["proposals"] if p["id"] == pid]
    assert len(found) == 1
    return found[0]


def test_org_add_stays_open_with_one_organisation_and_the_second_approval_adopts_it(net: Cli, tmp_path: Path) -> None:
    new_admin = SigningKey.generate()
    new_admin.save(tmp_path / "admin-org-d.key")
    out = net.json("propose", "org-add", "org-d", "--admin", str(tmp_path / "admin-org-d.key"),
                   "--key", net.admin("org-a"), "--reason", "Clinic D joins", "--wait")
    assert out["status"] == "committed" and out["type"] == "network.propose"
    pid = out["id"]
    assert out["proposal_state"]["status"] == "open" and out["proposal_state"]["approvals"] == ["org-a"]
    assert [o["name"] for o in net.json("show", "organisations")["organisations"]] == list(ORGS)
    open_ = net.json("show", "proposals", "--status", "open")["proposals"]
    assert [p["id"] for p in open_] == [pid]
    assert open_[0]["action"] == {"op": "org.add", "name": "org-d", "admins": [new_admin.public]}
    assert open_[0]["org"] == "org-a" and open_[0]["proposer"] == SigningKey.load(net.admin("org-a")).public
    human = net("show", "proposals").stdout
    assert f"{pid[:16]}… open: org.add org-d" in human and "approved by org-a (1 of 3 organisations, 2 needed)" in human

    # The second organisation's approval, by an 8-character prefix, adopts it (2 of 3).
    human = net("approve", pid[:8], "--key", net.admin("org-b"), "--wait").stdout
    assert "adopted" in human
    p = proposal(net, pid)
    assert p["status"] == "adopted" and sorted(p["approvals"]) == ["org-a", "org-b"]
    assert isinstance(p["adopted_at"], int)
    orgs = {o["name"]: o["admins"] for o in net.json("show", "organisations")["organisations"]}
    assert orgs["org-d"] == [new_admin.public] and len(orgs) == 4
    assert net.json("show", "proposals", "--status", "open")["proposals"] == []
    assert [q["id"] for q in net.json("show", "proposals", "--status", "adopted")["proposals"]] == [pid]
    # The new organisation's admin is an admin of an organisation in force: it may propose.
    out = net.json("propose", "policy", "--data", "0.4", "--annotation", "0.3", "--training", "0.3",
                   "--key", str(tmp_path / "admin-org-d.key"), "--wait")
    assert out["proposal_state"]["org"] == "org-d"


def test_a_policy_change_needs_a_majority_and_a_v1_policy_set_is_refused(net: Cli) -> None:
    line = net.refused("submit", "policy", "--key", net.admin("org-a"), "--data", "0.6", "--annotation", "0.2",
                       "--training", "0.2", "--wait")
    assert "not_adopted" in line
    pid = net.json("propose", "policy", "--data", "0.6", "--annotation", "0.2", "--training", "0.2",
                   "--key", net.admin("org-a"), "--wait")["id"]
    assert proposal(net, pid)["status"] == "open"  # org-a alone: 1 of 3
    net("approve", pid, "--key", net.admin("org-c"), "--wait")
    p = proposal(net, pid)
    assert p["status"] == "adopted" and sorted(p["approvals"]) == ["org-a", "org-c"]
    assert p["action"] == {"op": "policy.set", "attribution": {"data": "0.6", "annotation": "0.2", "training": "0.2"}}


def test_a_second_approval_of_one_organisation_is_refused_already_approved(net: Cli) -> None:
    pid = net.json("propose", "org-remove", "org-c", "--key", net.admin("org-a"), "--wait")["id"]
    line = net.refused("approve", pid[:12], "--key", net.admin("org-a"), "--wait")  # the proposer's org counts
    assert "already_approved" in line
    assert proposal(net, pid)["approvals"] == ["org-a"]
    net("approve", pid, "--key", net.admin("org-b"), "--wait")
    assert proposal(net, pid)["status"] == "adopted"
    assert [o["name"] for o in net.json("show", "organisations")["organisations"]] == ["org-a", "org-b"]
    # org-c's admin is revoked with its organisation: it can approve nothing any more.
    other = net.json("propose", "policy", "--data", "0.5", "--annotation", "0.25", "--training", "0.25",
                     "--key", net.admin("org-a"), "--wait")["id"]
    assert "revoked_signer" in net.refused("approve", other, "--key", net.admin("org-c"))


def test_an_approval_after_expires_is_refused_proposal_expired(net: Cli) -> None:
    with Client(net.url) as client:
        head = client.height()
    pid = net.json("propose", "org-remove", "org-b", "--key", net.admin("org-a"), "--expires", str(head + 1),
                   "--wait")["id"]
    assert proposal(net, pid)["expires"] == head + 1
    # Another block: the proposal's last height has passed.
    net("propose", "org-remove", "org-c", "--key", net.admin("org-a"), "--wait")
    line = net.refused("approve", pid, "--key", net.admin("org-b"), "--wait")
    assert "proposal_expired" in line
    assert proposal(net, pid)["status"] in ("open", "expired")
    assert [o["name"] for o in net.json("show", "organisations")["organisations"]] == list(ORGS)


def test_validator_add_with_a_pop_from_the_key_file_changes_the_next_set(net: Cli, tmp_path: Path) -> None:
    new = SigningKey.generate()
    new.save(tmp_path / "node-2.key")
    first = net.json("show", "validators")
    assert len(first["validators"]) == 1
    pid = net.json("propose", "validator-add", "--name", "node-2", "--url", "http://127.0.0.1:9002",
                   "--validator-key-file", str(tmp_path / "node-2.key"), "--key", net.admin("org-b"), "--wait")["id"]
    assert proposal(net, pid)["status"] == "open"
    assert net.json("show", "validators")["validators"] == first["validators"]
    net("approve", pid[:8], "--key", net.admin("org-c"), "--wait")
    after = net.json("show", "validators")
    keys = [v["key"] for v in after["validators"]]
    assert keys == [first["validators"][0]["key"], new.public]  # appended
    assert after["validators"][1] == {"name": "node-2", "key": new.public, "url": "http://127.0.0.1:9002"}
    assert after["hash"] == validators_hash(keys)
    # The block that adopted it names the new set as the one certifying the next height.
    cp = httpx.get(net.url + "/v1/checkpoint").json()
    assert cp["header"]["next_validators"] == after["hash"] and after["height"] == cp["header"]["height"] + 1
    # Earlier heights keep their set.
    past = net.json("show", "validators", "--height", str(cp["header"]["height"]))
    assert [v["key"] for v in past["validators"]] == keys[:1] and past["hash"] == first["hash"]


def test_a_restarted_node_answers_the_same_consortium(net: Cli, tmp_path: Path, start_node: Any) -> None:
    SigningKey.generate().save(tmp_path / "node-2.key")
    pid = net.json("propose", "org-add", "org-d", "--admin", SigningKey.generate().public,
                   "--key", net.admin("org-a"), "--wait")["id"]
    net("approve", pid, "--key", net.admin("org-b"), "--wait")
    pid = net.json("propose", "validator-add", "--name", "node-2", "--url", "http://127.0.0.1:9002",
                   "--validator-key-file", str(tmp_path / "node-2.key"), "--key", net.admin("org-a"), "--wait")["id"]
    for org in ("org-b", "org-c"):
        net("approve", pid, "--key", net.admin(org), "--wait")
    views = [("show", "validators"), ("show", "validators", "--height", "1"), ("show", "proposals"),
             ("show", "organisations")]
    before = [net.json(*v) for v in views]
    assert len(before[0]["validators"]) == 2 and len(before[3]["organisations"]) == 4
    net.node.terminate()
    net.url = start_node(net.home, net.node.port).url  # from its database
    assert [net.json(*v) for v in views] == before


def test_the_last_validator_is_not_removed_and_a_replaced_one_keeps_its_place(net: Cli, tmp_path: Path) -> None:
    assert "last_validator" in net.refused("propose", "validator-remove", "node-1", "--key", net.admin("org-a"))
    before = net.json("show", "validators")["validators"]
    SigningKey.generate().save(tmp_path / "rotated.key")
    rotated = SigningKey.load(tmp_path / "rotated.key")
    pid = net.json("propose", "validator-replace", "node-1", "--new-key-file", str(tmp_path / "rotated.key"),
                   "--key", net.admin("org-a"), "--reason", "key rotation", "--wait")["id"]
    assert proposal(net, pid)["action"] == {"op": "validator.replace", "old": before[0]["key"], "new": rotated.public,
                                            "name": "node-1", "url": before[0]["url"],
                                            "pop": make_pop(rotated, net.json("pop", str(tmp_path / "rotated.key"))["chain"])}
    net("approve", pid, "--key", net.admin("org-b"), "--wait")
    assert net.json("show", "validators")["validators"] == [{**before[0], "key": rotated.public}]


def test_a_bad_pop_is_refused_bad_pop_through_the_cli_and_the_api(net: Cli, tmp_path: Path) -> None:
    new, other = SigningKey.generate(), SigningKey.generate()
    chain = httpx.get(net.url + "/v1/status").json()["chain_id"]
    wrong = make_pop(other, chain)  # a signature by another key
    line = net.refused("propose", "validator-add", "--name", "node-2", "--url", "http://127.0.0.1:9002",
                       "--validator-key", new.public, "--pop", wrong, "--key", net.admin("org-a"), "--wait")
    assert "bad_pop" in line
    # Over HTTP: a JSON error with the code, 4xx; a pop for another chain is refused too.
    action = {"op": "validator.add", "key": new.public, "name": "node-2", "url": "http://127.0.0.1:9002",
              "pop": make_pop(new, "00" * 32)}
    env = make_record(SigningKey.load(net.admin("org-a")), chain, "network.propose",
                      {"action": action, "expires": 1000, "reason": ""})
    answer = httpx.post(net.url + "/v1/records", json=env)
    assert 400 <= answer.status_code < 500 and answer.json()["code"] == "bad_pop", answer.text
    assert net.json("show", "proposals")["proposals"] == []
    assert len(net.json("show", "validators")["validators"]) == 1
    # Other governance refusals over HTTP: an action of no known form, a proposal that is not one.
    admin = SigningKey.load(net.admin("org-a"))
    for rtype, body, status, code in (
            ("network.propose", {"action": {"op": "org.rename", "name": "x"}, "expires": 10, "reason": ""}, 400,
             "bad_action"),
            ("network.approve", {"proposal": "ab" * 32}, 422, "unknown_proposal")):
        answer = httpx.post(net.url + "/v1/records", json=make_record(admin, chain, rtype, body))
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text


def test_the_api_answers_bad_queries_with_json_4xx(net: Cli) -> None:
    for query, status in (("height=0", 400), ("height=x", 400), ("height=-1", 400), (f"height={2**63}", 400),
                          ("height=1000", 404)):
        answer = httpx.get(net.url + "/v1/validators?" + query)
        assert answer.status_code == status, (query, answer.text)
        assert set(answer.json()) >= {"code", "message"}
    answer = httpx.get(net.url + "/v1/proposals?status=closed")
    assert answer.status_code == 400 and answer.json()["code"] == "bad_request"
    one = httpx.get(net.url + "/v1/validators?height=1").json()
    assert one["height"] == 1 and one["hash"] == validators_hash([v["key"] for v in one["validators"]])


def test_refusals_exit_1_in_one_line_from_a_subprocess(net: Cli) -> None:
    pid = net.json("propose", "org-remove", "org-b", "--key", net.admin("org-a"), "--wait")["id"]
    res = subprocess.run([*provledger_cmd(), "approve", pid[:10], "--key", net.admin("org-a"), "--node", net.url],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "already_approved" in lines[0]
    res = subprocess.run([*provledger_cmd(), "approve", "abc", "--key", net.admin("org-a"), "--node", net.url],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "PROPOSAL_ID" in res.stderr


def test_the_openapi_document_describes_the_consortium_routes(net: Cli) -> None:
    doc = httpx.get(net.url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for path, model in (("/v1/validators", "ValidatorSet"), ("/v1/proposals", "Proposals"),
                        ("/v1/organisations", "Organisations")):
        answers = doc["paths"][path]["get"]["responses"]
        assert answers["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/" + model)
        assert model in schemas
    assert set(doc["paths"]["/v1/validators"]["get"]["responses"]) == {"200", "400", "404"}
    assert set(schemas["ProposalView"]["required"]) >= {"id", "action", "proposer", "org", "expires", "approvals",
                                                         "status", "adopted_at"}
