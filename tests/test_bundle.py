"""Audit bundles: exported from a store, audited offline, read back as a chain; and the
lineage / attribution / export commands on every source."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_lineage import demo

from ledger.attribution import attribute
from ledger.audit import audit
from ledger.bundle import FORMAT, BundleSource, export_bundle, export_node_bundle
from ledger.cli import cli
from ledger.errors import InputError
from ledger.fetch import node_blocks
from ledger.lineage import lineage
from ledger.reader import MemoryReader, StoreReader, fetch_node
from ledger.store import Store


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    d = tmp_path_factory.mktemp("bundle")
    ch, ids = demo()
    with ch.store(d / "ledger.db") as store:
        export_bundle(store, d / "chain.bundle")
    return d / "ledger.db", d / "chain.bundle", ids


def test_bundle_format_is_json_lines(chain: tuple[Path, Path, dict[str, str]]) -> None:
    db, bundle, _ = chain
    lines = bundle.read_text().splitlines()
    head = json.loads(lines[0])
    with Store(db) as store:
        assert head["format"] == FORMAT and head["chain_id"] == store.genesis.chain_id
        assert head["genesis"] == store.genesis.doc
        assert (head["blocks"], head["records"]) == (store.height(), store.log_size()) == (len(lines) - 1, 18)
        blk = json.loads(lines[1])
        assert set(blk) == {"header", "hash", "certificate", "records"}
        assert blk["records"] == store.block_records(1)


def test_bundle_audits_clean_offline(chain: tuple[Path, Path, dict[str, str]]) -> None:
    _, bundle, _ = chain
    report = audit(BundleSource(bundle))
    assert report.ok, report.findings
    assert (report.blocks, report.records) == (3, 18)
    result = CliRunner().invoke(cli, ["audit", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "OK: the chain is intact" in result.output


def test_tampered_bundle_fails_audit_with_location(chain: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    _, bundle, _ = chain
    lines = bundle.read_text().splitlines()
    blk = json.loads(lines[2])
    blk["records"][0]["body"]["samples" if "samples" in blk["records"][0]["body"] else "round"] = 99
    bad = tmp_path / "bad.bundle"
    bad.write_text("\n".join([lines[0], lines[1], json.dumps(blk), *lines[3:]]) + "\n")
    report = audit(BundleSource(bad))
    assert not report.ok
    assert {f.check for f in report.findings} >= {"signature", "log_root"}
    assert report.findings[0].height == 2  # later findings are its consequences
    # A truncated bundle is caught by the announced counts.
    cut = tmp_path / "cut.bundle"
    cut.write_text("\n".join(lines[:-1]) + "\n")
    assert any(f.check == "bundle" and "truncated" in f.message for f in audit(BundleSource(cut)).findings)
    result = CliRunner().invoke(cli, ["audit", str(bad)])
    assert result.exit_code == 1 and "FAIL" in result.output


def test_single_object_form_is_read_too(chain: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    _, bundle, _ = chain
    lines = bundle.read_text().splitlines()
    head = json.loads(lines[0])
    obj = {"format": FORMAT, "chain_id": head["chain_id"], "genesis": head["genesis"],
           "blocks": [json.loads(x) for x in lines[1:]]}
    p = tmp_path / "one.json"
    p.write_text(json.dumps(obj, indent=1))
    assert audit(BundleSource(p)).ok
    assert MemoryReader.from_bundle(p).log_size() == 18


def test_not_a_bundle(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text('{"hello": 1}\n')
    with pytest.raises(InputError, match="not a provledger-bundle/v1"):
        BundleSource(p)
    p.write_text("garbage")
    with pytest.raises(InputError):
        BundleSource(p)


def test_bundle_reader_gives_the_same_lineage_and_attribution(chain: tuple[Path, Path, dict[str, str]]) -> None:
    db, bundle, ids = chain
    mem = MemoryReader.from_bundle(bundle)
    with Store(db) as store:
        sr = StoreReader(store)
        for method in ("proportional",):
            assert attribute(mem, ids["g2"], 1000, method) == attribute(sr, ids["g2"], 1000, method)
        assert lineage(mem, ids["g2"]) == lineage(sr, ids["g2"])
        assert mem.record(ids["g1"]) == sr.record(ids["g1"])


# --- a node over HTTP ------------------------------------------------------------------------
class _Node(BaseHTTPRequestHandler):
    store_path: Path

    def do_GET(self) -> None:
        with Store(self.store_path) as store:
            head = store.head()
            body: Any = None
            if self.path == "/v1/genesis":
                body = store.genesis.doc
            elif self.path.startswith("/v1/checkpoint") and head:
                row = store.block(int(self.path.rsplit("/", 1)[1])) if self.path.count("/") == 3 else head
                if row:
                    body = {"header": row.header.to_dict(), "hash": row.hash, "certificate": row.certificate.to_dict()}
            elif self.path.startswith("/v1/blocks/"):
                row = store.block(int(self.path.rsplit("/", 1)[1]))
                if row:
                    body = {"header": row.header.to_dict(), "hash": row.hash, "certificate": row.certificate.to_dict(),
                            "records": store.block_records(row.header.height)}
        data = json.dumps(body if body is not None else {"code": "not_found", "message": "no"}).encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a: Any) -> None:
        pass


@pytest.fixture(scope="module")
def node(chain: tuple[Path, Path, dict[str, str]]) -> Iterator[str]:
    handler = type("H", (_Node,), {"store_path": chain[0]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_node_over_http(chain: tuple[Path, Path, dict[str, str]], node: str, tmp_path: Path) -> None:
    db, bundle, ids = chain
    _genesis, _blocks, height, size = node_blocks(node)
    assert (height, size) == (3, 18)
    assert fetch_node(node).log_size() == 18
    export_node_bundle(node, tmp_path / "n.bundle")
    assert (tmp_path / "n.bundle").read_bytes() == bundle.read_bytes()
    result = CliRunner().invoke(cli, ["attribution", ids["g2"], "--total", "1000", "--node", node, "--json"])
    assert result.exit_code == 0, result.output
    with Store(db) as store:
        assert json.loads(result.output) == attribute(StoreReader(store), ids["g2"], 1000)


# --- the commands --------------------------------------------------------------------------------
def test_cli_commands_on_db_and_bundle(chain: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    db, bundle, ids = chain
    run = CliRunner().invoke
    outs = []
    for src in (["--db", str(db)], ["--bundle", str(bundle)]):
        r = run(cli, ["attribution", ids["g2"], "--total", "1000", *src, "--json"])
        assert r.exit_code == 0, r.output
        outs.append(json.loads(r.output))
        r = run(cli, ["attribution", ids["g2"], "--total", "1000", *src])
        assert r.exit_code == 0 and "carol" in r.output and "units" in r.output
        r = run(cli, ["lineage", ids["g2"], *src])
        assert r.exit_code == 0 and "scans-clean" in r.output
        r = run(cli, ["lineage", "dataset:scans", *src, "--dot"])
        assert r.exit_code == 0 and r.output.startswith("digraph")
        r = run(cli, ["lineage", ids["g2"], *src, "--json"])
        assert json.loads(r.output)["root"] == ids["g2"]
        r = run(cli, ["export", "prov", ids["g2"], *src])
        assert r.exit_code == 0 and "wasDerivedFrom" in json.loads(r.output)
    assert outs[0] == outs[1]
    r = run(cli, ["export", "bundle", "--db", str(db), "--out", str(tmp_path / "b.bundle")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "b.bundle").read_bytes() == bundle.read_bytes()
    r = run(cli, ["export", "prov", ids["g2"], "--db", str(db), "--out", str(tmp_path / "p.json")])
    assert r.exit_code == 0 and "entity" in json.loads((tmp_path / "p.json").read_text())


def test_cli_errors_are_one_line_with_stable_exit_codes(chain: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    db, bundle, ids = chain
    run = CliRunner().invoke
    cases = [
        (["lineage", ids["g2"]], "exactly one of"),
        (["lineage", ids["g2"], "--db", str(db), "--bundle", str(bundle)], "exactly one of"),
        (["lineage", "0" * 64, "--db", str(db)], "no committed record"),
        (["attribution", ids["scans"], "--total", "10", "--db", str(db)], "not a model.update"),
        (["attribution", ids["g2"], "--total", "10", "--method", "shapley", "--db", str(db)], "no model.evaluation"),
        (["export", "bundle", "--db", str(db), "--out", str(bundle)], "refusing to overwrite"),
        (["lineage", ids["g2"], "--db", str(tmp_path / "none.db")], "no such database"),
    ]
    for args, text in cases:
        r = run(cli, args)
        assert r.exit_code == 2, (args, r.output)
        assert text in r.output and r.output.count("\n") == 1, r.output


def test_every_command_help_ends_with_an_example() -> None:
    run = CliRunner().invoke
    for args in (["lineage"], ["attribution"], ["export"], ["export", "bundle"], ["export", "prov"]):
        r = run(cli, [*args, "--help"])
        assert r.exit_code == 0
        last = r.output.rstrip().split("\n\n")[-1]
        assert last.lstrip().startswith("Example"), args
