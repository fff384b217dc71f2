"""A key file that others may read is refused wherever a key is loaded (docs/protocol.md 7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.errors import InputError
from ledger.keys import SigningKey


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602, 0o666])
def test_a_key_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    p = SigningKey.generate().save(tmp_path / "k.key")
    os.chmod(p, mode)
    with pytest.raises(InputError) as e:
        SigningKey.load(p)
    assert e.value.code == "key_permissions"
    assert f"mode {mode:04o}" in e.value.message and f"chmod 600 {p}" in e.value.message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_an_owner_only_key_loads(tmp_path: Path, mode: int) -> None:
    k = SigningKey.generate()
    p = k.save(tmp_path / "k.key")
    os.chmod(p, mode)
    assert SigningKey.load(p).public == k.public


def test_the_cli_refuses_it_in_one_line(tmp_path: Path) -> None:
    p = SigningKey.generate().save(tmp_path / "alice.key")
    os.chmod(p, 0o644)
    res = CliRunner().invoke(cli, ["submit", "dataset", "--key", str(p), "--node", "http://127.0.0.1:9",
                                   "--dataset", "d", "--content-hash", "ab" * 32, "--size-bytes", "1",
                                   "--items", "1", "--license", "MIT", "--modality", "text"])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "accessible by others" in lines[0], res.output
