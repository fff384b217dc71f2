"""Tendermint consensus (Buchman, Kwon, Milosevic 2018, Algorithm 1) as a sans-I/O core.

The core is a pure, deterministic state machine: no sockets, no clock, no randomness, no
threads. The driver (the HTTP daemon, or ``node.sim``) feeds it *events* and carries out
the *actions* each event returns, in order::

    events                                   actions (returned lists, carried out in order)
    ------                                   -------
    Consensus.start()                        PersistSigned  persist BEFORE the Broadcast after it
    Consensus.on_proposal(Proposal)          Broadcast      send a Proposal / Vote to every peer
    Consensus.on_vote(Vote)                  ScheduleTimeout call on_timeout(h, r, step) later
    Consensus.on_timeout(height, round, step) Commit        block is final; store it with its certificate
    Consensus.advance(height)                ReportEvidence a validator signed two conflicting messages

Line numbers in comments are those of Algorithm 1 in the paper (arXiv 1807.04938).

Deviations and additions, all documented where they happen:

- Values are identified by their hash (``id(v)`` is the block hash); the core never looks
  inside a block, it asks ``app.valid(block, block_hash, height)``, which must also check
  that ``block_hash`` is the hash of ``block``.
- Lines 36 and 49 accept the value ``v`` from any correctly signed proposal of the height
  carrying ``id(v)``: the proposal is only the vehicle by which ``v`` is learnt.
- After a decision the core enters a ``new_height`` wait and asks for a ``commit`` timeout
  (``Timeouts.commit``, Tendermint's ``timeout_commit``) before StartRound(0) of the next
  height. This bounds the work done by one event (with n = 1 every height would otherwise
  be decided inside the same call) and lets late precommits arrive.
- Persist-before-send: every signature the core makes is preceded by a ``PersistSigned``
  action holding (height, round, step, block_hash) plus recovery state (lock, valid value,
  their polkas, the messages that justify the round, every message signed at the height).
  The driver keeps the latest one durably (overwrite). A core constructed with
  ``last_signed`` never signs below that point nor a different block at that very point,
  restores its lock and valid value, resumes in that round and step, and re-sends (via
  ``gossip_messages``) what it had signed and what justified its round.
- A ``Commit`` ends its event: the driver stores block h before the core asks the app
  anything about height h + 1 (that starts with the next event, the commit timeout at the
  latest). A Commit is followed in its list only by ScheduleTimeout / ReportEvidence.
- Votes count per distinct signer *per value*: an equivocator's two votes each count for
  their value (as messages do in Algorithm 1) and are reported as evidence.
- Liveness assumes that messages of correct processes eventually arrive (the paper's
  gossip): a driver that can lose messages re-broadcasts ``gossip_messages()`` when a
  height makes no progress, and catches up by fetching finalized blocks with their
  certificates (``verify_certificate``) and calling ``advance``.
- Each height runs with its own validator set (PROTOCOL.md 9.1): quorum, f, proposer
  rotation, who may vote and propose, evidence. The set of the first height is the
  constructor's ``validators``; the set of every later height comes from the driver's
  ``validators_for(height)``, asked when the core needs it, which is at the first event
  after it entered the height: the block below is stored by then (a decision ends its
  event, see above). Without ``validators_for`` every height has the same set. A core
  whose key is not in a height's set is a non-voting follower at that height: it signs
  nothing and still decides from the others' messages.
- Signatures of incoming messages are verified *inside* ``on_proposal`` / ``on_vote``
  (successful checks are memoised per process). Messages of the current height with a bad
  signature, from a key outside its validator set, for another chain, or from the wrong
  proposer raise a ``ledger.errors.LedgerError``; stale messages (lower height, or beyond
  height + 1) are ignored and return ``[]``. Messages for height + 1 are verified and held,
  whoever signed them (the set of height + 1 is not known yet: their signer may join it);
  on entering height + 1 those from outside its set, or from the wrong proposer, are
  dropped. What is held is bounded (``_FUTURE_LIMIT`` in all, ``_FUTURE_PER_SIGNER`` per
  key, ``_FUTURE_OUTSIDERS`` from keys outside the current set); a message not held
  reaches the node again through the driver's gossip once it is at that height.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from ledger.blocks import Certificate, max_faulty, quorum, vote_payload
from ledger.blocks import verify_certificate as _ledger_verify_certificate
from ledger.canonical import PROPOSAL_TAG, VOTE_TAG, signing_bytes
from ledger.errors import InputError
from ledger.keys import SigningKey, is_hex, is_key, verify_bytes

__all__ = [
    "NIL",
    "PRECOMMIT",
    "PREVOTE",
    "PROPOSE",
    "App",
    "Broadcast",
    "Commit",
    "Consensus",
    "Evidence",
    "PersistSigned",
    "Proposal",
    "ReportEvidence",
    "ScheduleTimeout",
    "Timeouts",
    "Vote",
    "message_from_dict",
    "proposal_payload",
    "sign_proposal",
    "sign_vote",
    "verify_certificate",
    "verify_proposal",
    "verify_vote",
]

PROPOSE = "propose"
PREVOTE = "prevote"
PRECOMMIT = "precommit"
COMMIT = "commit"  # the timeout that ends the wait between two heights
NEW_HEIGHT = "new_height"
NIL = ""  # PROTOCOL.md 6: a nil vote signs the empty string as its block

_SIGN_ORDER = {PROPOSE: 0, PREVOTE: 1, PRECOMMIT: 2}
# Internal step numbers, so that "step_p >= prevote" (line 36) is a comparison.
_NEW, _PROPOSE, _PREVOTE, _PRECOMMIT = -1, 0, 1, 2
_STEP_NAMES = {_NEW: NEW_HEIGHT, _PROPOSE: PROPOSE, _PREVOTE: PREVOTE, _PRECOMMIT: PRECOMMIT}
_FUTURE_LIMIT = 4096  # messages held for height + 1
_FUTURE_PER_SIGNER = 64  # of them by one key (an honest validator signs 3 a round)
_FUTURE_OUTSIDERS = 1024  # of them by keys outside the current set (any key can sign)
_SPARES = 8  # other blocks kept per block hash until valid(v) is asked (Consensus._learn_block)


# --------------------------------------------------------------------------- messages


def proposal_payload(chain: str, height: int, round: int, block_hash: str, valid_round: int) -> dict[str, Any]:
    """What a proposal signs, with ``PROPOSAL_TAG`` (docs/protocol.md)."""
    return {"chain": chain, "height": height, "round": round, "block": block_hash, "valid_round": valid_round}


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise InputError(f"malformed consensus message: {what}", code="bad_message")


def _is_int(v: object, low: int) -> bool:
    return type(v) is int and v >= low


@dataclass(frozen=True, slots=True)
class Proposal:
    """``<PROPOSAL, h, r, v, vr>`` signed by the proposer; ``block`` is the driver's opaque value."""

    chain: str
    height: int
    round: int
    block_hash: str
    valid_round: int
    proposer: str
    sig: str
    block: Any = field(default=None, hash=False)

    def payload(self) -> dict[str, Any]:
        return proposal_payload(self.chain, self.height, self.round, self.block_hash, self.valid_round)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "proposal",
            "chain": self.chain,
            "height": self.height,
            "round": self.round,
            "block_hash": self.block_hash,
            "valid_round": self.valid_round,
            "proposer": self.proposer,
            "sig": self.sig,
            "block": self.block,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Proposal:
        """Parse the wire form; raises InputError. The signature is checked by the core."""
        keys = {"type", "chain", "height", "round", "block_hash", "valid_round", "proposer", "sig", "block"}
        _need(type(d) is dict and set(d) == keys and d["type"] == "proposal", f"a proposal has exactly {sorted(keys)}")
        _need(is_hex(d["chain"], 32), "chain must be a chain id")
        _need(_is_int(d["height"], 1) and _is_int(d["round"], 0), "height >= 1 and round >= 0 integers")
        _need(type(d["valid_round"]) is int and -1 <= d["valid_round"] < d["round"], "-1 <= valid_round < round")
        _need(is_hex(d["block_hash"], 32), "block_hash must be a block hash")
        _need(is_key(d["proposer"]), "proposer must be a public key (ledger.keys.key_ok)")
        _need(is_hex(d["sig"], 64), "sig must be a signature")
        return cls(d["chain"], d["height"], d["round"], d["block_hash"], d["valid_round"], d["proposer"], d["sig"], d["block"])


@dataclass(frozen=True, slots=True)
class Vote:
    """``<PREVOTE|PRECOMMIT, h, r, id(v)|nil>`` signed as PROTOCOL.md 6 says."""

    chain: str
    height: int
    round: int
    step: str  # "prevote" | "precommit"
    block_hash: str  # "" is nil
    validator: str
    sig: str

    def payload(self) -> dict[str, Any]:
        return vote_payload(self.chain, self.height, self.round, self.step, self.block_hash)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "vote",
            "chain": self.chain,
            "height": self.height,
            "round": self.round,
            "step": self.step,
            "block": self.block_hash,
            "validator": self.validator,
            "sig": self.sig,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Vote:
        """Parse the wire form; raises InputError. The signature is checked by the core."""
        keys = {"type", "chain", "height", "round", "step", "block", "validator", "sig"}
        _need(type(d) is dict and set(d) == keys and d["type"] == "vote", f"a vote has exactly {sorted(keys)}")
        _need(is_hex(d["chain"], 32), "chain must be a chain id")
        _need(_is_int(d["height"], 1) and _is_int(d["round"], 0), "height >= 1 and round >= 0 integers")
        _need(d["step"] in (PREVOTE, PRECOMMIT), "step must be prevote or precommit")
        _need(d["block"] == NIL or is_hex(d["block"], 32), "block must be a block hash or '' (nil)")
        _need(is_key(d["validator"]), "validator must be a public key (ledger.keys.key_ok)")
        _need(is_hex(d["sig"], 64), "sig must be a signature")
        return cls(d["chain"], d["height"], d["round"], d["step"], d["block"], d["validator"], d["sig"])


Message = Proposal | Vote


def message_from_dict(d: Any) -> Message:
    """Parse a wire message by its ``type`` (``proposal`` or ``vote``); raises InputError."""
    kind = d.get("type") if type(d) is dict else None
    if kind == "proposal":
        return Proposal.from_dict(d)
    if kind == "vote":
        return Vote.from_dict(d)
    raise InputError("consensus message must have type 'proposal' or 'vote'", code="bad_message")


def sign_vote(key: SigningKey, chain: str, height: int, round: int, step: str, block_hash: str) -> Vote:
    sig = key.sign(VOTE_TAG, vote_payload(chain, height, round, step, block_hash))
    return Vote(chain, height, round, step, block_hash, key.public, sig)


def sign_proposal(
    key: SigningKey, chain: str, height: int, round: int, block: Any, block_hash: str, valid_round: int = -1
) -> Proposal:
    sig = key.sign(PROPOSAL_TAG, proposal_payload(chain, height, round, block_hash, valid_round))
    return Proposal(chain, height, round, block_hash, valid_round, key.public, sig, block)


# Signature checks are memoised on success only (a failure raises and is not cached): a
# message reaches a node many times (duplicates, gossip, several cores in one process).
# A Vote is hashed by all its fields; a Proposal by all but the block, which it does not sign.


@lru_cache(maxsize=1 << 16)
def _vote_ok(v: Vote) -> bool:
    verify_bytes(v.validator, signing_bytes(VOTE_TAG, v.payload()), v.sig)
    return True


@lru_cache(maxsize=256)  # holds blocks: keep it small
def _proposal_ok(p: Proposal) -> bool:
    verify_bytes(p.proposer, signing_bytes(PROPOSAL_TAG, p.payload()), p.sig)
    return True


def verify_vote(v: Vote) -> None:
    """Raise SignatureError unless ``v.sig`` is ``v.validator``'s PROTOCOL.md 6 vote signature."""
    _vote_ok(v)


def verify_proposal(p: Proposal) -> None:
    """Raise SignatureError unless ``p.sig`` is ``p.proposer``'s signature over the proposal."""
    _proposal_ok(p)


def _verify(m: Message) -> None:
    if isinstance(m, Vote):
        verify_vote(m)
    else:
        verify_proposal(m)


def verify_certificate(
    chain: str, validators: Sequence[str], height: int, block_hash: str, certificate: Any
) -> None:
    """Raise CertificateError unless ``certificate`` (PROTOCOL.md 6 dict) finalizes ``block_hash``.

    The check itself is the core library's (``ledger.blocks.verify_certificate``); this is
    the argument order the consensus driver uses.
    """
    cert = Certificate.from_dict(certificate)
    _ledger_verify_certificate(cert, chain=chain, height=height, block_hash=block_hash, validators=validators)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class PersistSigned:
    """Persist this (durably) before carrying out the Broadcast that follows it.

    Hand the last one persisted back as ``Consensus(last_signed=...)`` after a restart.
    """

    height: int
    round: int
    step: str  # "propose" | "prevote" | "precommit"
    block_hash: str
    # Recovery state. The four fields above are the signing guard; what follows lets a
    # restarted node carry on where it stopped instead of stalling the chain:
    # - the lock (lines 38-39) with the locked block and the 2f+1 prevotes that justify it,
    #   and likewise the valid value (lines 42-43), so it keeps its lock, can re-propose the
    #   value (lines 15-16) and prove the polka to the others (line 28);
    # - round_proof: the messages that took it to ``round`` (2f+1 precommits of the round
    #   before, lines 47/65, or f+1 messages of that round, line 55), so that peers it
    #   left behind can follow (they may have missed a Byzantine message only it had seen);
    # - signed: every message it signed at this height, this one last, to send them again.
    locked_round: int = -1
    locked_hash: str = NIL
    locked_block: Any = field(default=None, hash=False, compare=False)
    lock_proof: tuple[Vote, ...] = field(default=(), hash=False, compare=False)
    valid_round: int = -1
    valid_block: Any = field(default=None, hash=False, compare=False)
    valid_proof: tuple[Vote, ...] = field(default=(), hash=False, compare=False)
    round_proof: tuple[Message, ...] = field(default=(), hash=False, compare=False)
    signed: tuple[Message, ...] = field(default=(), hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "round": self.round,
            "step": self.step,
            "block_hash": self.block_hash,
            "locked_round": self.locked_round,
            "locked_hash": self.locked_hash,
            "locked_block": self.locked_block,
            "lock_proof": [v.to_dict() for v in self.lock_proof],
            "valid_round": self.valid_round,
            "valid_block": self.valid_block,
            "valid_proof": [v.to_dict() for v in self.valid_proof],
            "round_proof": [m.to_dict() for m in self.round_proof],
            "signed": [m.to_dict() for m in self.signed],
        }

    @classmethod
    def from_dict(cls, d: Any) -> PersistSigned:
        try:
            out = cls(
                int(d["height"]), int(d["round"]), str(d["step"]), str(d["block_hash"]),
                int(d.get("locked_round", -1)), str(d.get("locked_hash", NIL)),
                d.get("locked_block"), tuple(Vote.from_dict(v) for v in d.get("lock_proof", ())),
                int(d.get("valid_round", -1)), d.get("valid_block"),
                tuple(Vote.from_dict(v) for v in d.get("valid_proof", ())),
                tuple(message_from_dict(m) for m in d.get("round_proof", ())),
                tuple(message_from_dict(m) for m in d.get("signed", ())),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"malformed last_signed record: {e}", code="bad_last_signed") from e
        if out.step not in _SIGN_ORDER:
            raise InputError(f"last_signed.step must be one of {sorted(_SIGN_ORDER)}", code="bad_last_signed")
        return out


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send ``message`` to every other validator (the core has already processed it itself)."""

    message: Message


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Call ``on_timeout(height, round, step)`` after ``duration_ms``; step may be "commit"."""

    height: int
    round: int
    step: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Commit:
    """``block`` is decided at ``height`` (line 51); ``certificate`` is the PROTOCOL.md 6 dict."""

    height: int
    block: Any = field(hash=False)
    block_hash: str
    certificate: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two conflicting messages signed by one validator for one (height, round, step)."""

    vote_a: Message
    vote_b: Message

    @property
    def validator(self) -> str:
        a = self.vote_a
        return a.validator if isinstance(a, Vote) else a.proposer

    def to_dict(self) -> dict[str, Any]:
        a, b = self.vote_a.to_dict(), self.vote_b.to_dict()
        for d in (a, b):
            if d["type"] == "proposal":
                del d["block"]  # the signatures cover the hash only
        return {"validator": self.validator, "a": a, "b": b}


@dataclass(frozen=True, slots=True)
class ReportEvidence:
    evidence: Evidence


Action = PersistSigned | Broadcast | ScheduleTimeout | Commit | ReportEvidence


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Durations in ms; round r waits ``base + delta * r`` (grows linearly, Algorithm 1's
    timeoutPropose/Prevote/Precommit(round)); ``commit`` is the wait between heights."""

    propose: int = 3000
    prevote: int = 1000
    precommit: int = 1000
    delta: int = 500
    commit: int = 1000

    def duration(self, step: str, round: int) -> int:
        if step == COMMIT:
            return self.commit
        base = {PROPOSE: self.propose, PREVOTE: self.prevote, PRECOMMIT: self.precommit}[step]
        return base + self.delta * round


class App(Protocol):
    """Deterministic callbacks the core asks about values (blocks)."""

    def propose(self, height: int, round: int) -> tuple[Any, str]:
        """getValue() (line 18): a new block and its hash, when we are the proposer."""
        ...

    def valid(self, block: Any, block_hash: str, height: int) -> bool:
        """valid(v): ``block`` hashes to ``block_hash`` and may extend our chain at ``height``."""
        ...


# --------------------------------------------------------------------------- the core


class Consensus:
    """One validator's (or observer's, ``key=None``) Tendermint state machine for a chain."""

    def __init__(
        self,
        chain_id: str,
        validators: Sequence[str],
        key: SigningKey | None,
        app: App,
        height: int,
        last_signed: PersistSigned | dict[str, Any] | None = None,
        timeouts: Timeouts | None = None,
        validators_for: Callable[[int], Sequence[str]] | None = None,
    ) -> None:
        """``validators``: the keys of the set certifying ``height``, in set order.
        ``validators_for(h)``: the same for each later height h, asked once the driver has
        stored block h - 1 (PROTOCOL.md 9.1: the set after block h - 1's records)."""
        if type(height) is not int or height < 1:
            raise InputError("height must be an integer >= 1", code="bad_height")
        self.chain = chain_id
        self._key = key
        self._validators_for = validators_for
        self._use_set(validators, height)
        self.app = app
        self.timeouts = timeouts or Timeouts()
        if isinstance(last_signed, dict):
            last_signed = PersistSigned.from_dict(last_signed)
        self.last_signed: PersistSigned | None = last_signed
        self.evidence: list[Evidence] = []
        self._evidence_seen: set[tuple[str, int, int, str]] = set()
        self._started = False
        self.height = height
        # verified messages of height + 1, by (height, round, step, signer, hash), and per signer
        self._future: dict[tuple[Any, ...], Message] = {}
        self._future_count: dict[str, int] = {}
        self._replay = False  # the held messages of this height wait for its set
        self._reset_height()
        ls = self.last_signed
        if ls is not None and ls.height == height:
            self._recover(ls)

    def _recover(self, ls: PersistSigned) -> None:
        """Restart at the height of ``ls``: take back lock, valid value and the messages."""
        if ls.locked_round >= 0 and ls.locked_block is not None:
            self.locked_round, self.locked_hash, self._lock_proof = ls.locked_round, ls.locked_hash, ls.lock_proof
            self._blocks[ls.locked_hash] = ls.locked_block
            # validRound >= lockedRound always holds; the locked value is a valid value.
            self.valid_round, self.valid_hash, self.valid_block = ls.locked_round, ls.locked_hash, ls.locked_block
            self._valid_proof = ls.lock_proof
        if ls.valid_round > self.valid_round and ls.valid_block is not None and ls.valid_proof:
            vh = ls.valid_proof[0].block_hash
            self.valid_round, self.valid_hash, self.valid_block = ls.valid_round, vh, ls.valid_block
            self._valid_proof = ls.valid_proof
            self._blocks.setdefault(vh, ls.valid_block)
        self._round_proof = ls.round_proof
        for m in (*ls.lock_proof, *ls.valid_proof, *ls.round_proof, *ls.signed):
            signer = m.validator if isinstance(m, Vote) else m.proposer
            if m.height != self.height or m.chain != self.chain or signer not in self._members:
                continue
            if isinstance(m, Vote):
                verify_vote(m)
                self._accept_vote(m, [])
            else:
                verify_proposal(m)
                self._accept_proposal(m, [])
        self._own = [m for m in ls.signed if m.height == self.height]

    def _use_set(self, validators: Sequence[str], height: int) -> None:
        """Take ``validators`` as the set certifying ``height`` (PROTOCOL.md 6, 9.1)."""
        if not validators or len(set(validators)) != len(validators):
            raise InputError(f"the validator set of height {height} must be non-empty and without duplicates",
                             code="bad_validators")
        self.validators = tuple(validators)
        self.n = len(self.validators)
        self.quorum = quorum(self.n)  # 2f + 1 for n = 3f + 1; PROTOCOL.md 6 "more than 2/3"
        self.f = max_faulty(self.n)  # faults tolerated: any two quorums share an honest node
        self._members = frozenset(self.validators)
        key = self._key
        # Not in the set: a follower at this height (signs nothing, still decides).
        self.me: str | None = key.public if key is not None and key.public in self._members else None
        self._set_height = height

    def _load_set(self) -> None:
        """The set of the current height, from the driver once it stored the block below."""
        if self._set_height != self.height:
            vf = self._validators_for
            self._use_set(self.validators if vf is None else vf(self.height), self.height)

    def _enter(self, out: list[Action]) -> None:
        """At the start of every event: the height's set, then the messages held for it."""
        self._load_set()
        if not self._replay:
            return
        self._replay = False
        held = [m for k, m in self._future.items() if k[0] == self.height]
        self._future.clear()
        self._future_count.clear()
        for m in held:
            if isinstance(m, Vote):
                if m.validator in self._members:
                    self._accept_vote(m, out)
            elif m.proposer in self._members and m.proposer == self.proposer(m.height, m.round):
                self._accept_proposal(m, out)

    # ---------------------------------------------------------------- public queries

    @property
    def step(self) -> str:
        return _STEP_NAMES[self._step]

    def proposer(self, height: int, round: int) -> str:
        """proposer(h, r): validators[(h + r) % n] over the set of the current height, in set
        order (docs/protocol.md); another height may have another set."""
        return self.validators[(height + round) % self.n]

    def check(self, m: Message) -> None:
        """Raise LedgerError if ``on_proposal`` / ``on_vote`` would refuse ``m``, without
        changing any state (for a driver that screens messages before queueing them). A
        message of a later height is only checked for its chain, form and signature: its
        signer may be in that height's set."""
        self._check_form(m)
        if m.height == self.height and self._set_height == self.height:
            self._check_member(m, m.validator if isinstance(m, Vote) else m.proposer)
        _verify(m)

    def _check_form(self, m: Message) -> None:
        if m.chain != self.chain:
            raise InputError(f"{type(m).__name__.lower()} is for another chain", code="wrong_chain")
        if isinstance(m, Vote):
            if m.step not in (PREVOTE, PRECOMMIT):
                raise InputError("vote step must be prevote or precommit", code="bad_message")
        elif not -1 <= m.valid_round < m.round:
            raise InputError("proposal valid_round must satisfy -1 <= vr < round", code="bad_message")

    def _check_member(self, m: Message, signer: str) -> None:
        if signer not in self._members:
            raise InputError(f"{type(m).__name__.lower()} signed by {signer[:16]}…, not a validator of height "
                             f"{m.height}", code="not_validator")
        if isinstance(m, Proposal) and signer != self.proposer(m.height, m.round):
            raise InputError(f"{signer[:16]}… is not the proposer of height {m.height} round {m.round}",
                             code="wrong_proposer")

    def gossip_messages(self) -> list[Message]:
        """Every proposal and vote held for the current height, for the driver to re-send.

        Tendermint's liveness assumes messages of correct processes are eventually
        delivered; drivers that may lose messages re-broadcast these periodically.
        """
        out: list[Message] = []
        for r in sorted(self._proposals):
            out.extend(self._proposals[r].values())
        for k in sorted(self._votes, key=lambda k: (k[0], _SIGN_ORDER[k[1]])):
            for by_validator in self._votes[k].values():
                out.extend(by_validator.values())
        return out

    # ---------------------------------------------------------------- events

    def start(self) -> list[Action]:
        """``upon start do StartRound(0)`` (line 10); after a restart, the last signed round."""
        out: list[Action] = []
        if self._started:
            return out
        self._enter(out)
        self._started = True
        ls = self.last_signed
        if ls is not None and ls.height == self.height:
            # Restart: resume in the round and step of our last signature.
            self._start_round(ls.round, out)
            self._step = max(self._step, _SIGN_ORDER[ls.step])
        else:
            self._start_round(0, out)
        self._run(out)
        return out

    def on_proposal(self, p: Proposal) -> list[Action]:
        """A proposal from a peer. Raises LedgerError if it is not acceptable at all."""
        out: list[Action] = []
        if not self._incoming(p, p.proposer, out):
            return out
        if p.block_hash in self._proposals.get(p.round, {}):
            if self._learn_block(p.block_hash, p.block):  # the same proposal with another block
                self._run(out)
            return out  # duplicate
        verify_proposal(p)
        self._accept_proposal(p, out)
        self._run(out)
        return out

    def on_vote(self, v: Vote) -> list[Action]:
        """A prevote or precommit from a peer. Raises LedgerError if it is not acceptable."""
        out: list[Action] = []
        if not self._incoming(v, v.validator, out):
            return out
        if v.validator in self._votes.get((v.round, v.step), {}).get(v.block_hash, ()):
            return out  # duplicate
        verify_vote(v)
        self._accept_vote(v, out)
        self._run(out)
        return out

    def _incoming(self, m: Message, signer: str, out: list[Action]) -> bool:
        """What every message goes through: True if it is of the current height (its signer a
        validator of it, the proposer if a proposal); a message of height + 1 is held."""
        self._enter(out)
        self._check_form(m)
        if m.height < self.height or m.height > self.height + 1:
            return False
        if m.height > self.height:  # its set is not known yet: held, checked on entering it
            _verify(m)
            self._hold(m, signer)
            return False
        self._check_member(m, signer)
        return True

    def on_timeout(self, height: int, round: int, step: str) -> list[Action]:
        """A timeout the core scheduled has expired (lines 57-67; "commit": start the next height)."""
        out: list[Action] = []
        if height != self.height or not self._started:
            return out
        self._enter(out)
        if step == COMMIT:
            if self._step == _NEW:
                self._start_round(0, out)  # line 54, after the timeout_commit wait
        elif round != self.round:
            return out
        elif step == PROPOSE and self._step == _PROPOSE:
            # lines 57-60: OnTimeoutPropose
            self._sign_vote(PREVOTE, NIL, out)
            self._step = _PREVOTE
        elif step == PREVOTE and self._step == _PREVOTE:
            # lines 61-64: OnTimeoutPrevote
            self._sign_vote(PRECOMMIT, NIL, out)
            self._step = _PRECOMMIT
        elif step == PRECOMMIT and self._step != _NEW:
            # lines 65-67: OnTimeoutPrecommit
            self._round_proof = tuple(self._voters.get((round, PRECOMMIT), {}).values())
            self._start_round(round + 1, out)
        self._run(out)
        return out

    def advance(self, height: int) -> list[Action]:
        """The driver stored block ``height`` (with a verified certificate) by catch-up: move on."""
        out: list[Action] = []
        if height >= self.height:  # else nothing to do: actions only when the core moved
            self._new_height(height + 1, out)
            self._enter(out)  # block ``height`` is stored: the set of the next height is known
            self._run(out)
        return out

    # ---------------------------------------------------------------- internals

    def _reset_height(self) -> None:
        self.round = 0
        self._step = _NEW
        # lines 6-9
        self.locked_round, self.locked_hash = -1, NIL
        self._lock_proof: tuple[Vote, ...] = ()
        self._valid_proof: tuple[Vote, ...] = ()
        self._round_proof: tuple[Message, ...] = ()
        self._own: list[Message] = []  # what we signed at this height
        self.valid_round, self.valid_hash, self.valid_block = -1, NIL, None
        self._proposals: dict[int, dict[str, Proposal]] = {}
        self._blocks: dict[str, Any] = {}
        self._spare: dict[str, list[Any]] = {}  # hash -> other blocks seen with it (_learn_block)
        self._valid_cache: dict[str, bool] = {}
        # (round, step) -> block hash -> validator -> vote: every signed vote counts for its
        # value, an equivocator's for both (Algorithm 1 counts messages from distinct
        # processes); (round, step) -> validator -> first vote, for "2f+1 <*>" and evidence.
        self._votes: dict[tuple[int, str], dict[str, dict[str, Vote]]] = {}
        self._voters: dict[tuple[int, str], dict[str, Vote]] = {}
        self._senders: dict[int, dict[str, Message]] = {}  # round -> sender -> a message of it
        self._pc_quorums: list[tuple[int, str]] = []
        self._prevote_timeout_rounds: set[int] = set()
        self._precommit_timeout_rounds: set[int] = set()
        self._line36_rounds: set[int] = set()

    def _new_height(self, height: int, out: list[Action]) -> None:
        """Lines 52-54: next height, locks reset, then (after timeout_commit) StartRound(0).

        Its set, and with it the messages held for it, waits for the next event (``_enter``):
        the driver stores the block decided here first."""
        self.height = height
        self._reset_height()
        self._replay = True
        if self._started:
            out.append(ScheduleTimeout(height, 0, COMMIT, self.timeouts.duration(COMMIT, 0)))

    def _hold(self, m: Message, signer: str) -> None:
        """Keep a verified message of height + 1 for when the core gets there, within bounds."""
        key = (m.height, m.round, m.step if isinstance(m, Vote) else PROPOSE, signer, m.block_hash)
        held = self._future
        if key in held or len(held) >= _FUTURE_LIMIT:
            return
        count = self._future_count
        mine = count.get(signer, 0)
        if mine >= _FUTURE_PER_SIGNER:
            return
        if signer not in self._members:
            outsiders = count.get("", 0)  # "" is no key: the count of all outsiders' messages
            if outsiders >= _FUTURE_OUTSIDERS:
                return
            count[""] = outsiders + 1
        count[signer] = mine + 1
        held[key] = m

    def _evidence(self, a: Message, b: Message, key: tuple[str, int, int, str], out: list[Action]) -> None:
        if key in self._evidence_seen:
            return
        self._evidence_seen.add(key)
        ev = Evidence(a, b)
        self.evidence.append(ev)
        out.append(ReportEvidence(ev))

    def _accept_proposal(self, p: Proposal, out: list[Action]) -> None:
        """Record a verified proposal of the current height."""
        props = self._proposals.setdefault(p.round, {})
        if p.block_hash in props:
            return
        if props:  # a second, different value from one proposer in one round
            first = next(iter(props.values()))
            self._evidence(first, p, (p.proposer, p.height, p.round, PROPOSE), out)
        props[p.block_hash] = p
        self._learn_block(p.block_hash, p.block)
        self._senders.setdefault(p.round, {}).setdefault(p.proposer, p)

    def _accept_vote(self, v: Vote, out: list[Action]) -> None:
        """Record a verified vote of the current height.

        A second vote of one validator for another value in the same (round, step) is
        equivocation: it is recorded as evidence and, like in Algorithm 1, where "2f+1
        <PREVOTE, h, r, id(v)>" counts messages of distinct senders, it counts for its value
        too. Otherwise an honest node could never see a polka that another honest node saw
        and locked on, which stalls the chain. Quorum intersection still holds: each honest
        validator signs one value per step.
        """
        k = (v.round, v.step)
        by_hash = self._votes.setdefault(k, {})
        signers = by_hash.setdefault(v.block_hash, {})
        if v.validator in signers:
            return
        voters = self._voters.setdefault(k, {})
        first = voters.get(v.validator)
        if first is None:
            voters[v.validator] = v
            self._senders.setdefault(v.round, {}).setdefault(v.validator, v)
        else:
            self._evidence(first, v, (v.validator, v.height, v.round, v.step), out)
        signers[v.validator] = v
        if v.step == PRECOMMIT and v.block_hash != NIL and len(signers) == self.quorum:
            self._pc_quorums.append((v.round, v.block_hash))

    def _count(self, round: int, step: str, block_hash: str) -> int:
        return len(self._votes.get((round, step), {}).get(block_hash, ()))

    def _total(self, round: int, step: str) -> int:
        return len(self._voters.get((round, step), ()))

    def _learn_block(self, block_hash: str, block: Any) -> bool:
        """Remember a block by its hash; True if a new candidate may change valid(v).

        A proposal signs the hash, not the block, so a faulty peer can relay a correctly
        signed proposal with another block. The first block seen is kept, and other blocks
        with the same hash are kept as spares (up to ``_SPARES`` between two asks) until a
        valid one is known; spares found not valid are dropped, and one that arrives after
        the value was found not valid makes it asked again. So a garbled copy that arrives
        first does not hide the value for the rest of the height (valid(v) is about v,
        whichever copy carried it).
        """
        if block_hash not in self._blocks:
            self._blocks[block_hash] = block
            return False
        if block is None or self._valid_cache.get(block_hash) is True or block == self._blocks[block_hash]:
            return False
        spares = self._spare.setdefault(block_hash, [])
        if len(spares) >= _SPARES or block in spares:
            return False
        spares.append(block)
        return self._valid_cache.pop(block_hash, None) is not None

    def _valid(self, block_hash: str) -> bool:
        """valid(v), asked once per value and height (again if another block came with it)."""
        ok = self._valid_cache.get(block_hash)
        if ok is None:
            ok = False
            for block in (self._blocks.get(block_hash), *self._spare.pop(block_hash, ())):
                if block is not None and self.app.valid(block, block_hash, self.height):
                    self._blocks[block_hash], ok = block, True
                    break
            self._valid_cache[block_hash] = ok
        return ok

    def _may_sign(self, round: int, step: str, block_hash: str) -> bool:
        """Never sign below the last signature, nor something else at the same point."""
        ls = self.last_signed
        if ls is None:
            return True
        here = (self.height, round, _SIGN_ORDER[step])
        last = (ls.height, ls.round, _SIGN_ORDER[ls.step])
        if here != last:
            return here > last
        return block_hash == ls.block_hash

    def _persist(self, m: Message, step: str, out: list[Action]) -> None:
        lr, lh = self.locked_round, self.locked_hash
        self._own.append(m)
        rec = PersistSigned(self.height, m.round, step, m.block_hash, lr, lh, self._blocks.get(lh) if lr >= 0 else None,
                            self._lock_proof, self.valid_round, self.valid_block, self._valid_proof,
                            self._round_proof, tuple(self._own))
        self.last_signed = rec
        out.append(rec)

    def _sign_vote(self, step: str, block_hash: str, out: list[Action]) -> None:
        """broadcast <step, h_p, round_p, block_hash>, persisting it first; we count it too."""
        if self._key is None or self.me is None or not self._may_sign(self.round, step, block_hash):
            return
        v = sign_vote(self._key, self.chain, self.height, self.round, step, block_hash)
        self._persist(v, step, out)
        out.append(Broadcast(v))
        self._accept_vote(v, out)

    def _start_round(self, round: int, out: list[Action]) -> None:
        """Lines 11-21: StartRound(round)."""
        self.round = round  # line 12
        self._step = _PROPOSE  # line 13
        if self.me is not None and self.proposer(self.height, round) == self.me:  # line 14
            if self.valid_block is not None:  # lines 15-16
                block, block_hash = self.valid_block, self.valid_hash
            else:  # lines 17-18
                block, block_hash = self.app.propose(self.height, round)
            if self._key is not None and self._may_sign(round, PROPOSE, block_hash):
                # line 19: broadcast <PROPOSAL, h_p, round_p, proposal, validRound_p>
                p = sign_proposal(self._key, self.chain, self.height, round, block, block_hash, self.valid_round)
                self._blocks.setdefault(block_hash, block)
                self._persist(p, PROPOSE, out)
                out.append(Broadcast(p))
                self._accept_proposal(p, out)
                return
            # Restarted and may not sign a (different) proposal here: behave as a
            # non-proposer so that the round still ends (addition to line 21).
        # line 21: schedule OnTimeoutPropose(h_p, round_p)
        out.append(ScheduleTimeout(self.height, round, PROPOSE, self.timeouts.duration(PROPOSE, round)))

    def _decide(self, round: int, block_hash: str, out: list[Action]) -> None:
        """Lines 49-54: decision_p[h_p] = v, with the precommits as certificate."""
        votes = self._votes[(round, PRECOMMIT)][block_hash]
        index = {v: i for i, v in enumerate(self.validators)}
        signed = sorted(votes.values(), key=lambda v: index[v.validator])
        cert = {
            "height": self.height,
            "round": round,
            "block": block_hash,
            "votes": [{"validator": v.validator, "sig": v.sig} for v in signed],
        }
        out.append(Commit(self.height, self._blocks[block_hash], block_hash, cert))  # line 51
        self._new_height(self.height + 1, out)  # lines 52-54

    def _run(self, out: list[Action]) -> None:
        """Apply the upon-rules until none fires (the rules of Algorithm 1 are atomic).

        A decision ends the event: the driver must store block h (``Commit``) before the
        core asks ``app.propose`` / ``app.valid`` anything about height h + 1, so the rules
        of the new height run from the next event on (the commit timeout at the latest).
        """
        if self._started:
            height = self.height
            while self.height == height and self._rules(out):
                pass

    def _rules(self, out: list[Action]) -> bool:
        """Fire at most one upon-rule; True if one fired."""
        q = self.quorum
        # lines 49-54: PROPOSAL(h, r, v, *) AND 2f+1 PRECOMMIT(h, r, id(v)), any round r
        for r, x in self._pc_quorums:
            if x in self._blocks and self._valid(x):
                self._decide(r, x, out)
                return True
        # lines 55-56: f+1 messages of a round above ours -> StartRound(round)
        higher = [r for r, s in self._senders.items() if r > self.round and len(s) >= self.f + 1]
        if higher:
            top = max(higher)
            self._round_proof = tuple(self._senders[top].values())
            self._start_round(top, out)
            return True
        if self._step == _NEW:
            return False  # waiting for the commit timeout
        r = self.round
        if self._step == _PROPOSE:
            for p in self._proposals.get(r, {}).values():  # first received first
                vr = p.valid_round
                if vr == -1:
                    # lines 22-27
                    ok = self._valid(p.block_hash) and (self.locked_round == -1 or self.locked_hash == p.block_hash)
                elif self._count(vr, PREVOTE, p.block_hash) >= q:
                    # lines 28-33 (vr < round_p is checked on receipt)
                    ok = self._valid(p.block_hash) and (self.locked_round <= vr or self.locked_hash == p.block_hash)
                else:
                    continue
                self._sign_vote(PREVOTE, p.block_hash if ok else NIL, out)
                self._step = _PREVOTE
                return True
        # lines 36-43: PROPOSAL(h, round_p, v, *) AND 2f+1 PREVOTE(h, round_p, id(v)),
        # valid(v), step >= prevote, for the first time
        if self._step >= _PREVOTE and r not in self._line36_rounds:
            for x, signers in self._votes.get((r, PREVOTE), {}).items():
                if len(signers) >= q and x != NIL and x in self._blocks and self._valid(x):
                    self._line36_rounds.add(r)
                    if self._step == _PREVOTE:  # lines 37-41
                        self.locked_round, self.locked_hash = r, x
                        self._lock_proof = tuple(signers.values())
                        self._sign_vote(PRECOMMIT, x, out)
                        self._step = _PRECOMMIT
                    self.valid_round, self.valid_hash, self.valid_block = r, x, self._blocks[x]  # lines 42-43
                    self._valid_proof = tuple(signers.values())
                    return True
        # lines 44-46: 2f+1 PREVOTE(h, round_p, nil) with step = prevote
        if self._step == _PREVOTE and self._count(r, PREVOTE, NIL) >= q:
            self._sign_vote(PRECOMMIT, NIL, out)
            self._step = _PRECOMMIT
            return True
        # lines 34-35: 2f+1 PREVOTE(h, round_p, *) with step = prevote, for the first time
        if self._step == _PREVOTE and r not in self._prevote_timeout_rounds and self._total(r, PREVOTE) >= q:
            self._prevote_timeout_rounds.add(r)
            out.append(ScheduleTimeout(self.height, r, PREVOTE, self.timeouts.duration(PREVOTE, r)))
            return True
        # lines 47-48: 2f+1 PRECOMMIT(h, round_p, *) for the first time
        if r not in self._precommit_timeout_rounds and self._total(r, PRECOMMIT) >= q:
            self._precommit_timeout_rounds.add(r)
            out.append(ScheduleTimeout(self.height, r, PRECOMMIT, self.timeouts.duration(PRECOMMIT, r)))
            return True
        return False
