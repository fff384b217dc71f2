"""A node's home directory and its ``config.json``; ``init_network`` creates both.

Layout of a one-validator network made by ``provledger init --home DIR``::

    DIR/config.json      this node's settings (below); paths in it are relative to DIR
    DIR/genesis.json     the genesis document (PROTOCOL.md 2)
    DIR/validator.key    the validator's Ed25519 seed (mode 0600)
    DIR/admin.key        the admin of the organisation (mode 0600)
    DIR/ledger.db        the SQLite store, created for the genesis

``config.json``::

    {"node_name": "node-0", "host": "127.0.0.1", "port": 8000, "db": "ledger.db",
     "validator_key": "validator.key", "genesis": "genesis.json",
     "block_interval_ms": 50, "max_block_records": 2000}

Optional keys: ``ingress_workers`` (``node.ingress`` processes that serve the node's port:
they parse and verify records sent one per request and pass everything else to the node's
process; default the CPU count, at most 4, or 0 on one core; 0 serves HTTP from the node's
process; ``init --validators N`` writes 0, the N nodes sharing one host),
``verify_workers`` (``node.verify`` processes that check the signatures of batches, and of
single records when there are no ingress processes; default one less than the CPU count,
at most 4; 0 verifies in the node process) and ``max_mempool`` (records that may wait for
blocks before submissions get 503 ``mempool_full``; default 100,000).

Consensus (networks of more than one validator; docs/protocol.md, "Peers and consensus
messages"): ``consensus_timeouts``, milliseconds over ``DEFAULT_CONSENSUS_TIMEOUTS``
(round r waits ``propose + delta * r`` for its proposal, ``prevote``/``precommit + delta * r``
once 2f+1 votes of a step are in, ``commit`` between heights), and ``gossip_ms`` (re-send
the height's messages after this long without progress; default 500).

A network of N > 1 validators (``provledger init --validators N``) has one home per node,
``DIR/node-1`` ... ``DIR/node-N``, each laid out as above (its own config, validator key,
admin key of its organisation ``org-i`` and database, and a copy of the one genesis);
validator ``node-i`` listens on ``http://HOST:(BASE_PORT + i)``, the ``url`` of its entry
in the genesis, which is also how the other validators reach it.

Catch-up (``node.catchup``) fetches final blocks from the other validators of the genesis
and from ``peers`` (optional: a list of further node URLs to fetch from).

Keys this version does not know are kept in ``NodeConfig.extra`` and written back
unchanged, so later versions can add settings without breaking older readers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.errors import InputError
from ledger.genesis import parse_genesis
from ledger.keys import SigningKey, is_hex
from ledger.records import ROLES, utc_now

__all__ = ["CONFIG_FILE", "DEFAULT_BASE_PORT", "NodeConfig", "init_network", "parse_roles"]

CONFIG_FILE = "config.json"
DEFAULT_BASE_PORT = 8100  # node-i of a multi-validator network listens on BASE_PORT + i
# Tuned for validators on one host or a LAN; a WAN wants larger values.
DEFAULT_CONSENSUS_TIMEOUTS = {"propose": 500, "prevote": 150, "precommit": 150, "delta": 250, "commit": 10}
DEFAULT_POLICY = {"attribution": {"data": "0.5", "annotation": "0.3", "training": "0.2"}}


@dataclass
class NodeConfig:
    """One node's settings. ``home`` is where relative paths are resolved."""

    home: Path
    node_name: str = "node-0"
    host: str = "127.0.0.1"
    port: int = 8000
    db: str = "ledger.db"
    validator_key: str = "validator.key"
    genesis: str = "genesis.json"
    block_interval_ms: int = 50
    max_block_records: int = 2000
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS = ("node_name", "host", "port", "db", "validator_key", "genesis", "block_interval_ms", "max_block_records")

    # -- paths ------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.home / p

    @property
    def db_path(self) -> Path:
        return self.path(self.db)

    @property
    def key_path(self) -> Path:
        return self.path(self.validator_key)

    @property
    def genesis_path(self) -> Path:
        return self.path(self.genesis)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- file -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._FIELDS}
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, home: Path, d: Any) -> NodeConfig:
        if type(d) is not dict:
            raise InputError(f"{home / CONFIG_FILE}: must be a JSON object", code="bad_config")
        cfg = cls(home=home)
        for k, v in d.items():
            if k not in cls._FIELDS:
                cfg.extra[k] = v
                continue
            want = type(getattr(cfg, k))
            if type(v) is not want:
                raise InputError(f"{home / CONFIG_FILE}: {k} must be {want.__name__}", code="bad_config", field=k)
            setattr(cfg, k, v)
        if not 1 <= cfg.port <= 65535:
            raise InputError(f"{home / CONFIG_FILE}: port must be 1..65535", code="bad_config", field="port")
        if cfg.block_interval_ms < 1 or cfg.max_block_records < 1:
            raise InputError(f"{home / CONFIG_FILE}: block_interval_ms and max_block_records must be positive", code="bad_config")
        return cfg

    @classmethod
    def load(cls, home: str | os.PathLike[str]) -> NodeConfig:
        h = Path(home)
        p = h / CONFIG_FILE
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError as e:
            raise InputError(f"{h} is not a node home (no {CONFIG_FILE}); run `provledger init --home {h}`", code="no_config") from e
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {p}: {e}", code="bad_config") from e
        return cls.from_dict(h, d)

    def consensus_timeouts(self) -> dict[str, int]:
        """``consensus_timeouts`` of the file over ``DEFAULT_CONSENSUS_TIMEOUTS`` (ms)."""
        given = self.extra.get("consensus_timeouts") or {}
        if type(given) is not dict:
            raise InputError("config consensus_timeouts must be an object of milliseconds", code="bad_config")
        out = dict(DEFAULT_CONSENSUS_TIMEOUTS)
        for k, v in given.items():
            if k not in out or type(v) is not int or v < 0:
                raise InputError(f"config consensus_timeouts.{k}: the keys are {', '.join(out)}, each a "
                                 "non-negative integer of milliseconds", code="bad_config", field=f"consensus_timeouts.{k}")
            out[k] = v
        return out

    def save(self) -> Path:
        p = self.home / CONFIG_FILE
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return p


def parse_roles(text: str, what: str) -> list[str]:
    roles = [r.strip() for r in text.split(",") if r.strip()]
    if not roles:
        raise InputError(f"{what}: give at least one role ({', '.join(ROLES)})", code="bad_argument")
    for r in roles:
        if r not in ROLES:
            raise InputError(f"{what}: unknown role {r!r}; roles are {', '.join(ROLES)}", code="bad_argument")
    return list(dict.fromkeys(roles))


def _split(spec: str, flag: str, left: str) -> tuple[str, list[str]]:
    lhs, sep, rhs = spec.rpartition("=")
    if not sep or not lhs:
        raise InputError(f"{flag} {spec!r}: expected {left}=ROLE[,ROLE...]", code="bad_argument")
    return lhs, parse_roles(rhs, f"{flag} {spec!r}")


def _refuse_existing(paths: list[Path], h: Path) -> None:
    for existing in paths:
        if existing.exists():
            raise InputError(
                f"{h} already holds a provledger network ({existing.relative_to(h)} exists); refusing to overwrite it",
                code="network_exists",
            )


def _node_files(cfg: NodeConfig) -> list[Path]:
    return [cfg.home / CONFIG_FILE, cfg.genesis_path, cfg.db_path, cfg.key_path, cfg.home / "admin.key"]


def init_network(
    home: str | os.PathLike[str],
    *,
    participants: tuple[str, ...] | list[str] = (),
    participant_keys: tuple[str, ...] | list[str] = (),
    name: str = "provledger-local",
    org: str = "org-1",
    host: str = "127.0.0.1",
    port: int = 8000,
    validators: int = 1,
    base_port: int = DEFAULT_BASE_PORT,
) -> dict[str, Any]:
    """Create a network in ``home`` and return a summary of what was made.

    With ``validators`` = 1 (the default) ``home`` is the one node's home, listening on
    ``host:port``. With N > 1, ``home/node-i`` (i = 1..N) is the home of validator
    ``node-i``, admin of organisation ``org-i``, listening on ``host:(base_port + i)``;
    every home holds the same genesis.

    ``participants`` are ``PUBKEY=ROLE[,ROLE...]`` (registered as ``participant-N``);
    ``participant_keys`` are ``FILE=ROLE[,ROLE...]``: a new key is saved at FILE (a relative
    FILE is relative to the current directory) and registered under the file's stem.
    Participants belong to ``org`` (one validator) or ``org-1``.
    Everything is checked before anything is written; an existing network is never touched.
    """
    from ledger.store import Store

    h = Path(home)
    if validators < 1:
        raise InputError("--validators must be at least 1", code="bad_argument")
    multi = validators > 1
    if multi:
        if org != "org-1":
            raise InputError(
                "--org applies to a one-validator network; with --validators N the organisations are org-1 ... org-N",
                code="bad_argument",
            )
        if base_port < 0 or base_port + validators > 65535:
            raise InputError(f"--base-port {base_port}: ports {base_port + 1}..{base_port + validators} must be within 1..65535",
                             code="bad_argument")
        # The N nodes share this host's cores: each serves HTTP from its own process
        # rather than adding ingress processes of its own (node.ingress).
        cfgs = [
            NodeConfig(home=h / f"node-{i}", node_name=f"node-{i}", host=host, port=base_port + i,
                       extra={"ingress_workers": 0})
            for i in range(1, validators + 1)
        ]
        orgs = [f"org-{i}" for i in range(1, validators + 1)]
    else:
        cfgs = [NodeConfig(home=h, host=host, port=port)]
        orgs = [org]
    # 1. Refuse to overwrite anything of an existing network (of either shape).
    _refuse_existing(_node_files(NodeConfig(home=h)), h)
    node_homes = sorted(h.glob("node-*")) if h.is_dir() else []
    for sub in dict.fromkeys([*node_homes, *(c.home for c in cfgs)]):
        _refuse_existing(_node_files(NodeConfig(home=sub)), h)
    if not org:
        raise InputError("--org must not be empty", code="bad_argument")
    # 2. Parse every participant before writing.
    entries: list[dict[str, Any]] = []
    for i, spec in enumerate(participants, 1):
        key, roles = _split(spec, "--participant", "PUBKEY")
        if not is_hex(key, 32):
            raise InputError(f"--participant {spec!r}: {key!r} is not a public key (64 lowercase hex)", code="bad_key")
        entries.append({"key": key, "name": f"participant-{i}", "org": orgs[0], "roles": roles})
    new_keys: list[tuple[Path, SigningKey]] = []
    for spec in participant_keys:
        file, roles = _split(spec, "--participant-key", "FILE")
        p = Path(file)
        if p.exists():
            raise InputError(f"--participant-key {spec!r}: {p} already exists; refusing to overwrite a key", code="key_exists")
        if any(p.resolve() == q.resolve() for q, _ in new_keys):
            raise InputError(f"--participant-key {spec!r}: {p} is named twice", code="bad_argument")
        k = SigningKey.generate()
        new_keys.append((p, k))
        entries.append({"key": k.public, "name": p.stem or "participant", "org": orgs[0], "roles": roles, "_file": str(p)})
    vkeys = [SigningKey.generate() for _ in cfgs]
    admins = [SigningKey.generate() for _ in cfgs]
    doc: dict[str, Any] = {
        "v": 1,
        "name": name,
        "created": utc_now(),
        "validators": [{"name": c.node_name, "key": k.public, "url": c.url} for c, k in zip(cfgs, vkeys, strict=True)],
        "organisations": [{"name": o, "admins": [a.public]} for o, a in zip(orgs, admins, strict=True)],
        "participants": [{k: v for k, v in e.items() if k != "_file"} for e in entries],
        "policy": DEFAULT_POLICY,
    }
    genesis = parse_genesis(doc)  # raises on repeated keys, bad names
    # 3. Write: keys first (they refuse to overwrite), then genesis, database, config.
    genesis_text = json.dumps(doc, indent=2) + "\n"
    nodes = []
    for cfg, vkey, admin, o in zip(cfgs, vkeys, admins, orgs, strict=True):
        cfg.home.mkdir(parents=True, exist_ok=True)
        vkey.save(cfg.key_path)
        admin.save(cfg.home / "admin.key")
        nodes.append({
            "name": cfg.node_name,
            "home": str(cfg.home),
            "url": cfg.url,
            "org": o,
            "config": str(cfg.home / CONFIG_FILE),
            "genesis": str(cfg.genesis_path),
            "db": str(cfg.db_path),
            "validator_key": str(cfg.key_path),
            "validator": vkey.public,
            "admin_key": str(cfg.home / "admin.key"),
            "admin": admin.public,
        })
    for p, k in new_keys:
        k.save(p)
    for cfg in cfgs:
        cfg.genesis_path.write_text(genesis_text)
        Store.create(cfg.db_path, doc).close()
        cfg.save()
    made: dict[str, Any] = {
        "home": str(h),
        "chain_id": genesis.chain_id,
        "name": name,
        "validators": len(cfgs),
        "nodes": nodes,
        "participants": [
            {"name": e["name"], "key": e["key"], "org": e["org"], "roles": e["roles"], "key_file": e.get("_file")}
            for e in entries
        ],
    }
    if not multi:  # the one node's files at the top level, as a one-validator summary always had them
        made.update({k: v for k, v in nodes[0].items() if k not in ("name", "home")})
    return made
