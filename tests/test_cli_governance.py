"""``provledger propose`` / ``approve`` / ``pop`` without a node: what is refused before
anything is signed or sent (exit 2, one line), and the majority the CLI prints."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from ledger.cli import cli
from ledger.cli_governance import needed
from ledger.governance import pop_ok
from ledger.keys import SigningKey

NOWHERE = "http://127.0.0.1:9"  # nothing listens: a command that reached the node would say so


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stderr


@given(st.integers(1, 10_000))
def test_needed_is_the_least_count_over_half(n: int) -> None:
    k = needed(n)
    assert 2 * k > n and 2 * (k - 1) <= n


def test_an_admin_that_is_not_a_key_is_exit_2_before_the_node_is_asked(tmp_path: Path) -> None:
    SigningKey.generate().save(tmp_path / "admin.key")
    code, err = run("propose", "org-add", "org-d", "--admin", "not-a-key", "--key", str(tmp_path / "admin.key"),
                    "--node", NOWHERE)
    assert code == 2 and err.count("\n") == 1 and "--admin" in err and "unreachable" not in err


def test_a_proposal_id_that_is_not_8_hex_is_exit_2(tmp_path: Path) -> None:
    SigningKey.generate().save(tmp_path / "admin.key")
    for bad in ("abc", "XYZXYZXYZ", "3f2a9c0g"):
        code, err = run("approve", bad, "--key", str(tmp_path / "admin.key"), "--node", NOWHERE)
        assert code == 2 and "PROPOSAL_ID" in err, (bad, err)


def test_pop_with_a_chain_id_needs_no_node_and_verifies(tmp_path: Path) -> None:
    key = SigningKey.generate()
    key.save(tmp_path / "v.key")
    chain = "ab" * 32
    res = CliRunner().invoke(cli, ["pop", str(tmp_path / "v.key"), "--chain", chain, "--node", NOWHERE, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["key"] == key.public and pop_ok(chain, key.public, doc["pop"])
    assert not pop_ok("cd" * 32, key.public, doc["pop"])  # for one chain only
    assert run("pop", str(tmp_path / "v.key"), "--chain", "AB" * 32)[0] == 2
