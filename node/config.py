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

Optional keys: ``max_mempool``, ``header_timeout_s``, ``verify_workers``,
``consensus_timeouts``, ``gossip_ms`` and ``peers``; each is declared, with its range,
default and meaning, in ``NodeConfig`` below (the README's table is ``config_table()``).

A network of N > 1 validators (``provledger init --validators N``) has one home per node,
``DIR/node-1`` ... ``DIR/node-N``, each laid out as above (its own config, validator key,
admin key of its organisation ``org-i`` and database, and a copy of the one genesis);
validator ``node-i`` listens on ``http://HOST:(BASE_PORT + i)``, the ``url`` of its entry
in the genesis, which is also how the other validators reach it.

Catch-up (``node.catchup``) fetches final blocks from the other validators of the genesis
and of the current set, and from ``peers``.

Every key, its type, range and default is declared once, in ``NodeConfig`` (a pydantic
model); ``config_table()`` renders them for the README and ``GET /v1/status`` reports the
values in force. A value of the wrong type or out of range stops the node at start with
one line naming the key. A key this version does not know is named in a warning at start
(with the closest known key, if one is close) and kept in ``NodeConfig.extra``, written
back unchanged, so later versions can add settings without breaking older readers.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ledger.errors import InputError
from ledger.genesis import parse_genesis
from ledger.keys import SigningKey, is_hex
from ledger.records import ROLES, utc_now

__all__ = ["CONFIG_FILE", "DEFAULT_BASE_PORT", "ConsensusTimeouts", "NodeConfig", "config_table", "init_network",
           "parse_roles"]

log = logging.getLogger("provledger.node")

CONFIG_FILE = "config.json"
DEFAULT_BASE_PORT = 8100  # node-i of a multi-validator network listens on BASE_PORT + i
DEFAULT_POLICY = {"attribution": {"data": "0.5", "annotation": "0.3", "training": "0.2"}}


def _default_verify_workers() -> int:
    """One less than the CPU count, at least 1, at most 4."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class ConsensusTimeouts(BaseModel):
    """Consensus timeouts in milliseconds (docs/protocol.md, "Timeouts"). Tuned for
    validators on one host or a LAN; a WAN wants larger values."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    propose: int = Field(500, ge=0)
    prevote: int = Field(150, ge=0)
    precommit: int = Field(150, ge=0)
    delta: int = Field(250, ge=0)
    commit: int = Field(10, ge=0)


DEFAULT_CONSENSUS_TIMEOUTS = ConsensusTimeouts().model_dump()

# Written to every config.json; the other keys only when they were set.
_ALWAYS = ("node_name", "host", "port", "db", "validator_key", "genesis", "block_interval_ms", "max_block_records")


class NodeConfig(BaseModel):
    """One node's settings. ``home`` is where relative paths are resolved."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    home: Path = Field(exclude=True)
    node_name: str = Field("node-0", min_length=1, description="this node's name in logs and `/v1/status`")
    host: str = Field("127.0.0.1", min_length=1, description="listen address")
    port: int = Field(8000, ge=1, le=65535, description="listen port")
    db: str = Field("ledger.db", min_length=1, description="the SQLite store")
    validator_key: str = Field("validator.key", min_length=1, description="the validator's key file (mode 0600)")
    genesis: str = Field("genesis.json", min_length=1, description="the genesis document")
    block_interval_ms: int = Field(50, ge=1, description="least time between the starts of two blocks")
    max_block_records: int = Field(2000, ge=1, description="most records in one block")
    max_mempool: int = Field(100_000, ge=1, description="records that may wait for blocks before submissions "
                                                        "get 503 `mempool_full`")
    header_timeout_s: float = Field(30.0, gt=0, le=60, description="seconds a client may take to send a "
                                                                   "request's line and headers (then it is closed)")
    verify_workers: int = Field(default_factory=_default_verify_workers, ge=0,
                                description="signature verifier processes (0: verify in the node's process); "
                                            "default one less than the CPU count, 1 to 4")
    consensus_timeouts: ConsensusTimeouts = Field(default_factory=ConsensusTimeouts,
                                                  description="milliseconds: `propose`, `prevote`, `precommit`, "
                                                              "`delta`, `commit` (docs/protocol.md)")
    gossip_ms: int = Field(500, ge=1, description="re-send the height's consensus messages after this long "
                                                  "without progress")
    peers: list[str] = Field(default_factory=list, description="further node URLs that catch-up fetches blocks from")
    extra: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _known_from_extra(cls, data: Any) -> Any:
        # ``NodeConfig(home=..., extra={"max_mempool": 3})``: a known key given in ``extra`` is a setting.
        if isinstance(data, dict) and isinstance(data.get("extra"), dict):
            extra = dict(data["extra"])
            known = {k: extra.pop(k) for k in list(extra) if k in cls.model_fields and k not in ("home", "extra")}
            data = {**known, **data, "extra": extra}
        return data

    @field_validator("consensus_timeouts", mode="before")
    @classmethod
    def _timeouts(cls, v: Any) -> Any:
        return ConsensusTimeouts(**v) if type(v) is dict else v

    @field_validator("peers")
    @classmethod
    def _peer_urls(cls, v: list[str]) -> list[str]:
        for u in v:
            if not (u.startswith("http://") or u.startswith("https://")):
                raise ValueError(f"{u!r} is not an http:// or https:// URL")
        return v

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
    def settings(self) -> dict[str, Any]:
        """Every setting in force, defaults included (``GET /v1/status`` ``config``)."""
        return self.model_dump(mode="json")

    def to_dict(self) -> dict[str, Any]:
        """What ``save`` writes: the base keys, the others that were set, unknown keys as they were."""
        out = {k: v for k, v in self.settings().items() if k in _ALWAYS or k in self.model_fields_set}
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, home: Path, d: Any) -> NodeConfig:
        """Validate a ``config.json`` object; raises InputError (``bad_config``) naming the
        first bad key in one line; unknown keys go to ``extra`` (see ``unknown_keys``)."""
        where = home / CONFIG_FILE
        if type(d) is not dict:
            raise InputError(f"{where}: must be a JSON object", code="bad_config")
        skip = ("home", "extra")
        known = {k: v for k, v in d.items() if k in cls.model_fields and k not in skip}
        unknown = {k: v for k, v in d.items() if k not in known}
        try:
            return cls(home=home, extra=unknown, **known)
        except ValidationError as e:
            raise _one_line(e, str(where)) from None

    def override(self, **values: Any) -> None:
        """Set settings given on the command line (``node start --host/--port``), validated
        like the file's; raises InputError in one line."""
        try:
            for k, v in values.items():
                setattr(self, k, v)
        except ValidationError as e:
            raise _one_line(e, None) from None

    def unknown_keys(self) -> list[str]:
        """One warning text per key this version does not know, with the closest known key."""
        names = [k for k in type(self).model_fields if k not in ("home", "extra")]
        out = []
        for k in self.extra:
            close = difflib.get_close_matches(k, names, n=1)
            out.append(f"{CONFIG_FILE}: unknown key {k!r} ignored" + (f"; did you mean {close[0]!r}?" if close else ""))
        return out

    @classmethod
    def load(cls, home: str | os.PathLike[str]) -> NodeConfig:
        """Read and validate ``home/config.json``; logs a warning per unknown key."""
        h = Path(home)
        p = h / CONFIG_FILE
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError as e:
            raise InputError(f"{h} is not a node home (no {CONFIG_FILE}); run `provledger init --home {h}`", code="no_config") from e
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {p}: {e}", code="bad_config") from e
        cfg = cls.from_dict(h, d)
        for warning in cfg.unknown_keys():
            log.warning("%s", warning)
        return cfg

    def timeouts(self) -> dict[str, int]:
        """The consensus timeouts in force (ms)."""
        return self.consensus_timeouts.model_dump()

    def save(self) -> Path:
        p = self.home / CONFIG_FILE
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return p


def _one_line(e: ValidationError, where: str | None) -> InputError:
    """The first error of a validation as one line naming the key (in the file ``where``,
    or the command-line option) and the value given."""
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    given = err.get("input")
    shown = json.dumps(given) if isinstance(given, str | int | float | bool | None) else type(given).__name__
    name = f"{where}: {key}" if where else "--" + key.replace("_", "-")
    return InputError(f"{name}: {err['msg']} (got {shown})", code="bad_config", field=key)


def config_table() -> str:
    """The keys of ``config.json`` as a Markdown table (README.md, "Configuration")."""
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, f in NodeConfig.model_fields.items():
        if f.exclude:
            continue
        if f.default_factory is _default_verify_workers:
            default = "by CPU count"
        elif f.default_factory is not None:
            value = f.default_factory()  # type: ignore[call-arg]
            default = f"`{json.dumps(value.model_dump() if isinstance(value, BaseModel) else value)}`"
        else:
            default = f"`{json.dumps(f.default)}`"
        kind = getattr(f.annotation, "__name__", str(f.annotation))
        kind = {"ConsensusTimeouts": "object"}.get(kind, kind)
        rows.append(f"| `{name}` | {kind} | {default} | {f.description} |")
    return "\n".join(rows)


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
        cfgs = [
            NodeConfig(home=h / f"node-{i}", node_name=f"node-{i}", host=host, port=base_port + i)
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
        "v": 2,
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
