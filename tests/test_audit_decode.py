"""``audit --jobs 1`` decodes each stored envelope once: the parsed record that the form,
id and signature checks made is the one the state rules check (``ledger.audit._analyses``)."""

from __future__ import annotations

from typing import Any

import pytest

import ledger.audit as audit_mod
from ledger.audit import DbSource, audit
from ledger.store import Store


def test_each_envelope_is_decoded_once(chain1: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    real = audit_mod._loads

    def counting(text: Any) -> Any:
        if isinstance(text, str) and '"sig":' in text and '"nonce":' in text:
            decoded.append(text)
        return real(text)

    with Store(chain1.path) as store:
        n = store.log_size()
    monkeypatch.setattr(audit_mod, "_loads", counting)
    report = audit(DbSource(chain1.path), jobs=1)
    assert report.ok and report.records == n
    assert len(decoded) == n and len(set(decoded)) == n
