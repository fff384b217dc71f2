"""The vendored third-party files are exactly the pinned ones (static/vendor/MANIFEST.json
for what the node serves, tests/explorer/vendor/MANIFEST.json for what the tests inject):
each file's SHA-256 and size, and no file that the manifest does not list."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = [ROOT / "node" / "explorer" / "static" / "vendor" / "MANIFEST.json",
             ROOT / "tests" / "explorer" / "vendor" / "MANIFEST.json"]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.parent.relative_to(ROOT).as_posix())
def test_every_vendored_file_is_pinned(manifest: Path) -> None:
    doc = json.loads(manifest.read_text())
    listed: set[str] = set()
    for pkg in doc["packages"]:
        assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", pkg["version"]), pkg
        assert pkg["source"] == f"npm pack {pkg['name']}@{pkg['version']}" and pkg["licence"]
        assert any(f["path"].endswith("/LICENSE") for f in pkg["files"]), f"{pkg['name']}: no licence file"
        for f in pkg["files"]:
            data = (manifest.parent / f["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == f["sha256"], f"{f['path']} differs from {pkg['name']}@{pkg['version']}"
            assert len(data) == f["bytes"], f["path"]
            listed.add(f["path"])
    present = {p.relative_to(manifest.parent).as_posix() for p in manifest.parent.rglob("*") if p.is_file()}
    assert present - {"MANIFEST.json"} == listed, "files in the vendor folder that the manifest does not pin"


def test_no_source_maps_are_shipped() -> None:
    vendor = MANIFESTS[0].parent
    assert not list(vendor.rglob("*.map"))
    assert sum(p.stat().st_size for p in vendor.rglob("*") if p.is_file()) < 4_000_000
