"""The ``provledger`` command line: keys, genesis, audit, prove, verify-proof, help."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import rfc8785
from click.testing import CliRunner, Result
from factory import key

from ledger.audit import Checkpoint
from ledger.cli import cli
from ledger.keys import SigningKey

PROVLEDGER = Path(sys.executable).parent / "provledger"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_error_line(res: Result) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


# --- help ------------------------------------------------------------------------------------
def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    ctx = click.Context(group)
    for name in sorted(group.list_commands(ctx)):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*prefix, name))
    return out


ALL = _commands(cli)


def test_the_core_commands_exist() -> None:
    assert {("keygen",), ("pubkey",), ("genesis",), ("audit",), ("prove",), ("verify-proof",)} <= set(ALL)


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) for p in ALL])
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    res = run(*path, "--help")
    assert res.exit_code == 0, res.output
    assert "Example" in res.output, f"provledger {' '.join(path)} --help has no example"


# --- keys ------------------------------------------------------------------------------------
def test_keygen_writes_0600_and_prints_the_public_key(tmp_path: Path) -> None:
    out = tmp_path / "alice.key"
    res = run("keygen", "--out", str(out), "--json")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert doc["public_key"] == SigningKey.load(out).public
    assert run("pubkey", str(out)).stdout.strip() == doc["public_key"]


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "alice.key"
    assert run("keygen", "--out", str(out)).exit_code == 0
    before = out.read_bytes()
    res = run("keygen", "--out", str(out))
    assert res.exit_code == 2
    assert str(out) in one_error_line(res)
    assert out.read_bytes() == before


def test_pubkey_of_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("nope")
    res = run("pubkey", str(bad))
    assert res.exit_code == 2
    one_error_line(res)


# --- genesis ---------------------------------------------------------------------------------
def _genesis_args(tmp_path: Path) -> list[str]:
    v, adm, alice = key("validator-0"), key("admin-a"), key("alice")
    vfile = tmp_path / "validator.key"
    if not vfile.exists():
        v.save(vfile)
    return ["genesis", "--name", "consortium-x", "--created", "2026-11-21T12:00:00Z",
            "--validator", f"node-a={vfile}@http://127.0.0.1:8001",
            "--org", f"org-a={adm.public}",
            "--participant", f"{alice.public}=alice@org-a:contributor,annotator",
            "--policy", "data=0.6,annotation=0.2,training=0.2"]


def test_genesis_from_flags_prints_its_chain_id(tmp_path: Path) -> None:
    out = tmp_path / "genesis.json"
    res = run(*_genesis_args(tmp_path), "--out", str(out))
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    chain_id = hashlib.sha256(b"provledger/genesis/v1\n" + rfc8785.dumps(doc)).hexdigest()
    assert f"chain id {chain_id}" in res.stdout
    assert doc["validators"] == [{"name": "node-a", "key": key("validator-0").public, "url": "http://127.0.0.1:8001"}]
    assert doc["organisations"] == [{"name": "org-a", "admins": [key("admin-a").public]}]
    assert doc["participants"][0]["roles"] == ["contributor", "annotator"]
    assert doc["policy"] == {"attribution": {"data": "0.6", "annotation": "0.2", "training": "0.2"}}
    # Without --out the same document goes to stdout.
    assert json.loads(run(*_genesis_args(tmp_path)).stdout) == doc
    # And it refuses to overwrite.
    res = run(*_genesis_args(tmp_path), "--out", str(out))
    assert res.exit_code == 2
    one_error_line(res)


@pytest.mark.parametrize(("flag", "value"), [
    ("--validator", "node-a"),
    ("--participant", "x=alice@org-a:wizard"),
    ("--participant", "x=alice@org-z:contributor"),
    ("--policy", "data=0.5,annotation=0.5,training=0.5"),
    ("--org", "org-b=not-a-key"),
])
def test_genesis_bad_flags(tmp_path: Path, flag: str, value: str) -> None:
    args = _genesis_args(tmp_path)
    if flag == "--participant":
        args = [a for a in args if not a.startswith(key("alice").public)]
        args.remove("--participant")
        value = value.replace("x=", key("bob").public + "=")
    args += [flag, value]
    res = run(*args)
    assert res.exit_code == 2, res.output
    one_error_line(res)


# --- audit -----------------------------------------------------------------------------------
def test_audit_state_saves_a_checkpoint(chain1: Any, tmp_path: Path) -> None:
    state = tmp_path / "audit.json"
    res = run("audit", str(chain1.path), "--state", str(state))
    assert res.exit_code == 0
    assert "OK" in res.stdout and f"chain {chain1.cons.chain_id}" in res.stdout
    cp = Checkpoint.load(state)
    assert cp is not None and (cp.height, cp.hash, cp.log_size) == (6, chain1.hashes[-1], 20)
    # The second run proves consistency with it.
    res = run("audit", str(chain1.path), "--state", str(state), "--json", "--jobs", "2")
    assert res.exit_code == 0
    assert json.loads(res.stdout)["checkpoint"].startswith("consistent")


def test_audit_usage_errors(tmp_path: Path) -> None:
    res = run("audit", str(tmp_path / "missing.db"))
    assert res.exit_code == 2
    one_error_line(res)
    assert run("audit").exit_code == 2
    assert run("audit", "x.db", "--jobs", "0").exit_code == 2


# --- prove and verify-proof ------------------------------------------------------------------
@pytest.fixture
def proof(chain4: Any, tmp_path: Path) -> tuple[Path, Path, str]:
    rid = chain4.ids[2][1]
    out = tmp_path / "proof.json"
    res = run("prove", "--db", str(chain4.path), rid, "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == json.loads(out.read_text())
    genesis = tmp_path / "genesis.json"
    genesis.write_text(json.dumps(chain4.cons.doc))
    return out, genesis, rid


def test_prove_prints_a_proof_that_verify_proof_accepts(proof: tuple[Path, Path, str], chain4: Any) -> None:
    out, genesis, rid = proof
    doc = json.loads(out.read_text())
    assert (doc["record"], doc["index"], doc["tree_size"]) == (rid, 9, 20)
    res = run("verify-proof", str(out), "--genesis", str(genesis), "--record", rid, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"ok": True, "record": rid, "height": 6, "log_size": 20}
    human = run("prove", "--db", str(chain4.path), rid)
    assert human.exit_code == 0 and "verified" in human.stdout and rid in human.stdout


def test_verify_proof_rejects_a_tampered_path(proof: tuple[Path, Path, str]) -> None:
    out, genesis, _ = proof
    doc = json.loads(out.read_text())
    doc["path"][0] = "00" * 32
    out.write_text(json.dumps(doc))
    res = run("verify-proof", str(out), "--genesis", str(genesis))
    assert res.exit_code == 1
    one_error_line(res)


def test_verify_proof_rejects_a_wrong_genesis(proof: tuple[Path, Path, str], chain4: Any) -> None:
    out, genesis, _ = proof
    doc = dict(chain4.cons.doc, name="impostor")
    genesis.write_text(json.dumps(doc))
    res = run("verify-proof", str(out), "--genesis", str(genesis))
    assert res.exit_code == 1
    one_error_line(res)


def test_verify_proof_for_another_record_and_bad_json(proof: tuple[Path, Path, str], chain4: Any) -> None:
    out, genesis, _ = proof
    assert run("verify-proof", str(out), "--genesis", str(genesis), "--record", chain4.ids[0][0]).exit_code == 1
    out.write_text("{")
    res = run("verify-proof", str(out), "--genesis", str(genesis))
    assert res.exit_code == 2
    one_error_line(res)


def test_prove_usage_errors(chain4: Any) -> None:
    assert run("prove", "--db", str(chain4.path), "not-an-id").exit_code == 2
    res = run("prove", "--db", str(chain4.path), "00" * 32)
    assert res.exit_code == 2 and "00" * 16 in one_error_line(res)
    assert run("prove", "00" * 32).exit_code == 2  # neither --db nor --node


# --- the installed script ---------------------------------------------------------------------
@pytest.mark.skipif(not PROVLEDGER.exists(), reason="console script not installed")
def test_real_subprocess(chain1: Any, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    shutil.copy(chain1.path, db)
    ok = subprocess.run([str(PROVLEDGER), "audit", str(db), "--json"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["records"] == 20
    k = tmp_path / "k.key"
    first = subprocess.run([str(PROVLEDGER), "keygen", "--out", str(k)], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and stat.S_IMODE(os.stat(k).st_mode) == 0o600
    again = subprocess.run([str(PROVLEDGER), "keygen", "--out", str(k)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    assert again.stderr.strip().startswith("error:") and len(again.stderr.strip().splitlines()) == 1
    missing = subprocess.run([str(PROVLEDGER), "audit", str(tmp_path / "none.db")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2


# --- the CLI contract (README "CLI contract") ---------------------------------------------------
def _command(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = cli
    for name in path:
        assert isinstance(cmd, click.Group)
        found = cmd.get_command(click.Context(cmd), name)
        assert found is not None
        cmd = found
    return cmd


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) for p in ALL])
def test_every_help_ends_with_an_example_and_every_option_is_explained(path: tuple[str, ...]) -> None:
    res = run(*path, "--help")
    assert res.exit_code == 0, res.output
    last = res.output.rstrip().split("\n\n")[-1]
    assert last.lstrip().startswith("Example"), f"provledger {' '.join(path)} --help does not end with an example"
    for param in _command(path).params:
        if isinstance(param, click.Option):
            assert param.help, f"provledger {' '.join(path)} {param.opts[0]} has no help text"
    # Nothing cites a file an installed provledger does not have.
    assert ".md" not in res.output, res.output


def test_every_node_option_says_url_and_defaults_to_the_environment() -> None:
    seen = []
    for path in ALL:
        for param in _command(path).params:
            if isinstance(param, click.Option) and param.name == "node":
                seen.append(path)
                assert param.metavar == "URL" and param.envvar == "PROVLEDGER_NODE", path
                assert "$PROVLEDGER_NODE" in (param.help or ""), path
    assert {("prove",), ("lineage",), ("attribution",), ("audit",), ("export", "bundle"), ("export", "prov"),
            ("show", "record"), ("submit", "dataset")} <= set(seen)


def test_the_same_source_flags_on_every_command_that_reads_a_chain() -> None:
    for path in [("audit",), ("prove",), ("lineage",), ("attribution",), ("export", "prov")]:
        names = {p.name for p in _command(path).params}
        assert {"db", "node", "bundle"} <= names, path
    assert {"db", "node"} <= {p.name for p in _command(("export", "bundle")).params}


def test_dot_says_graphviz_is_needed() -> None:
    out = run("lineage", "--help").output
    assert "--dot" in out and "Graphviz" in out and "does not install" in out


@pytest.fixture
def bundle(chain1: Any, tmp_path: Path) -> Path:
    out = tmp_path / "chain.bundle"
    assert run("export", "bundle", "--db", str(chain1.path), "--out", str(out)).exit_code == 0
    return out


MODEL = (2, 0)  # the aggregate model.update of the varied chain: height 3, first record


def test_a_unique_prefix_names_a_record_everywhere(chain1: Any, bundle: Path, tmp_path: Path) -> None:
    rid = chain1.ids[MODEL[0]][MODEL[1]]
    for prefix in (rid[:8], rid[:12], rid):
        for src in (("--db", str(chain1.path)), ("--bundle", str(bundle))):
            proved = run("prove", prefix, *src, "--json")
            assert proved.exit_code == 0, proved.output
            assert json.loads(proved.stdout)["record"] == rid
            graph = run("lineage", prefix, *src, "--json")
            assert graph.exit_code == 0, graph.output
            assert json.loads(graph.stdout)["root"] == rid
            shares = run("attribution", prefix, "--total", "100", *src, "--json")
            assert shares.exit_code == 0, shares.output
            prov = run("export", "prov", prefix, *src)
            assert prov.exit_code == 0 and rid in prov.stdout
    # verify-proof --record takes a prefix of the proof's record too.
    out, genesis = tmp_path / "p.json", tmp_path / "g.json"
    assert run("prove", rid[:8], "--db", str(chain1.path), "--out", str(out)).exit_code == 0
    genesis.write_text(json.dumps(chain1.cons.doc))
    assert run("verify-proof", str(out), "--genesis", str(genesis), "--record", rid[:10]).exit_code == 0
    other = chain1.ids[0][0]
    assert run("verify-proof", str(out), "--genesis", str(genesis), "--record", other[:10]).exit_code == 1


@pytest.mark.parametrize("bad", ["3f2a9c0", "3F2A9C01", "3f2a9c0g", "dataset"])
def test_a_short_or_non_hex_id_is_a_usage_error(chain1: Any, bad: str) -> None:
    for args in (("prove", bad), ("lineage", bad), ("attribution", bad, "--total", "1")):
        res = run(*args, "--db", str(chain1.path))
        assert res.exit_code == 2, (args, res.output)
        assert "8" in one_error_line(res)


def test_an_unknown_prefix_is_a_usage_error(chain1: Any, bundle: Path) -> None:
    unknown = next(p for p in (f"{i:08x}" for i in range(1000)) if not any(r.startswith(p) for r in chain1.all_ids))
    for src in (("--db", str(chain1.path)), ("--bundle", str(bundle))):
        res = run("prove", unknown, *src)
        assert res.exit_code == 2 and unknown in one_error_line(res)


def test_an_ambiguous_prefix_is_a_usage_error_in_one_line(chain1: Any, kit: Any, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    shutil.copy(chain1.path, db)
    rid = chain1.ids[MODEL[0]][MODEL[1]]
    twin = rid[:10] + ("0" if rid[10] != "0" else "1") + rid[11:]
    conn = kit.drop_triggers(db)
    row = conn.execute("SELECT * FROM records WHERE id = ?", (rid,)).fetchone()
    cols = [c[1] for c in conn.execute("PRAGMA table_info(records)")]
    fake = dict(zip(cols, row, strict=True), id=twin, idx=10_000, nonce="twin")
    conn.execute(f"INSERT INTO records ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", list(fake.values()))
    conn.close()
    res = run("prove", rid[:8], "--db", str(db))
    assert res.exit_code == 2
    assert "ambiguous" in one_error_line(res)
    assert run("prove", rid[:11], "--db", str(db)).exit_code == 0  # one more character tells them apart


def test_a_node_is_asked_by_full_id_only(chain1: Any) -> None:
    rid = chain1.ids[MODEL[0]][MODEL[1]]
    for args in (("prove", rid[:8], "--node", "http://127.0.0.1:9"), ("show", "record", rid[:8]),
                 ("lineage", rid[:8], "--node", "http://127.0.0.1:9", "--remote"),
                 ("attribution", rid[:8], "--total", "1", "--node", "http://127.0.0.1:9", "--remote")):
        res = run(*args)
        assert res.exit_code == 2, args
        assert "full record id" in one_error_line(res)


def test_provledger_node_is_the_default_node_everywhere(chain1: Any, bundle: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    rid = chain1.ids[MODEL[0]][MODEL[1]]
    reads = [("audit",), ("prove", rid), ("lineage", rid), ("attribution", rid, "--total", "10"),
             ("export", "prov", rid), ("export", "bundle", "--out", str(tmp_path / "x.bundle")), ("show", "status"),
             ("show", "record", rid)]
    # Without it and without a source: a usage error naming the flags.
    monkeypatch.delenv("PROVLEDGER_NODE", raising=False)
    for args in reads[:6]:
        res = run(*args)
        assert res.exit_code == 2 and "PROVLEDGER_NODE" in one_error_line(res), args
    # With it (a node that does not answer): every command reads that node, exit 2.
    monkeypatch.setenv("PROVLEDGER_NODE", "http://127.0.0.1:9")
    for args in reads:
        res = run(*args)
        assert res.exit_code == 2, args
        assert "127.0.0.1:9" in one_error_line(res), args
    # --db or --bundle win over the environment.
    assert run("lineage", rid, "--db", str(chain1.path)).exit_code == 0
    assert run("attribution", rid, "--total", "10", "--bundle", str(bundle)).exit_code == 0
    assert run("audit", "--db", str(chain1.path)).exit_code == 0
    assert run("audit", str(chain1.path)).exit_code == 0


def test_audit_reads_each_source_by_its_flag(chain1: Any, bundle: Path) -> None:
    for args in (("--db", str(chain1.path)), ("--bundle", str(bundle)), (str(chain1.path),), (str(bundle),)):
        res = run("audit", *args, "--json")
        assert res.exit_code == 0, (args, res.output)
        assert json.loads(res.stdout)["records"] == 20
    res = run("audit", "--db", str(bundle))
    assert res.exit_code == 2 and "not an SQLite database" in one_error_line(res)
    res = run("audit", str(chain1.path), "--db", str(chain1.path))
    assert res.exit_code == 2
    one_error_line(res)


def test_audit_of_a_directory_is_one_line_exit_2(tmp_path: Path) -> None:
    res = run("audit", str(tmp_path))
    assert res.exit_code == 2
    assert "is a directory" in one_error_line(res)
    res = run("lineage", "00" * 32, "--db", str(tmp_path))
    assert res.exit_code == 2 and "is a directory" in res.stderr


def test_audit_of_a_node_that_cannot_be_read_is_exit_2() -> None:
    res = run("audit", "http://127.0.0.1:9/typo")
    assert res.exit_code == 2
    line = one_error_line(res)
    assert "could not read a node at http://127.0.0.1:9/typo" in line and "chain None" not in res.output


def test_a_corrupt_chain_is_exit_1_and_a_tampered_proof_too(chain1: Any, kit: Any, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    shutil.copy(chain1.path, db)
    conn = kit.drop_triggers(db)
    conn.execute("UPDATE records SET envelope = replace(envelope, 'mnist', 'mnisT') WHERE idx = 1")
    conn.close()
    res = run("audit", str(db))
    assert res.exit_code == 1 and "FAIL" in res.stdout


# --- Ctrl-C ----------------------------------------------------------------------------------------
def _big_chain(path: Path, records: int, commit: Any) -> None:
    from factory import Consortium

    cons = Consortium()
    ledger = cons.ledger(path)
    per = 1000
    for b in range(records // per):
        recs = [cons.record(cons.alice, "dataset.contribute", cons.dataset_body(f"d{b}-{i}")) for i in range(per)]
        commit(ledger, recs, cons.validators, time=f"2026-11-21T12:{b // 60:02d}:{b % 60:02d}Z")
    ledger.store.close()


@pytest.mark.slow
@pytest.mark.skipif(not PROVLEDGER.exists(), reason="console script not installed")
def test_ctrl_c_during_audit_exits_130_and_erases_the_progress_bar(kit: Any, tmp_path: Path) -> None:
    import pty
    import select
    import signal
    import time

    db = tmp_path / "big.db"
    _big_chain(db, 40_000, kit.commit)  # several seconds of audit: time to interrupt it mid-way
    master, slave = pty.openpty()  # a terminal on stderr: the progress bar is drawn
    # Its own process group, which gets the SIGINT as a terminal's Ctrl-C sends it; with
    # SIGINT's default action, as from a shell's foreground (a suite started in the
    # background, `scripts/test &`, hands its children SIGINT ignored, and Python keeps that).
    proc = subprocess.Popen([str(PROVLEDGER), "audit", str(db)], stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"auditing" not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, seen
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 65536)
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(60)
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert rc == 130, seen
    assert proc.stdout is not None and b"OK" not in proc.stdout.read()
    tail = seen[seen.rindex(b"auditing"):]
    assert b"\x1b[?25h" in tail, tail  # the cursor is shown again: the live display was stopped
    assert b"\x1b[1A\x1b[2K" in tail[tail.rindex(b"\x1b[?25h"):], tail  # and the bar's line erased
    assert b"Traceback" not in seen and seen.rstrip().endswith(b"interrupted"), seen


def test_a_damaged_database_fails_the_audit_and_is_unreadable_elsewhere(chain1: Any, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    data = bytearray(chain1.path.read_bytes())
    half = len(data) // 2 // 4096 * 4096
    data[half:] = b"\xff" * (len(data) - half)  # the second half of its pages overwritten
    db.write_bytes(bytes(data))
    res = run("audit", str(db))
    assert res.exit_code == 1  # the chain failed: a finding, or one line when it cannot be read at all
    assert "FAIL" in res.stdout or "database cannot be read" in one_error_line(res)
    res = run("lineage", chain1.ids[2][0], "--db", str(db))
    assert res.exit_code == 2
    one_error_line(res)
