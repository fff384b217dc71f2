"""Planted bugs in the consensus core, to check that the simulator notices them.

Each ``Mutant`` removes or weakens one condition of Algorithm 1 (Buchman, Kwon, Milosevic
2018, arXiv 1807.04938) in ``node.consensus.Consensus``: a lock check, a valid-round rule, a
quorum size, a step guard or a "for the first time" guard. ``core_class(name)`` builds the
mutated class from the source of the real one (one exact text replacement, which must occur
exactly once, so a change to the core that moves the condition makes the check fail loudly
instead of silently testing nothing); the module ``node.consensus`` itself is never changed.

``node.sim`` runs a campaign with a mutated core; a mutant is *caught* when some seed breaks
an invariant (agreement, validity, certificates, durability, liveness, conformance: every
honest signature is one Algorithm 1 allows, ``node.sim_checks``) or crashes the core.
Each mutant names the scenarios most likely to catch it, tried first. A mutant that loops
for ever inside one event (a "first time" guard removed) is stopped by ``RULE_LIMIT``: a
core that never returns from an event is a liveness failure.
"""

from __future__ import annotations
import __future__

import inspect
from dataclasses import dataclass
from functools import cache
from typing import Any

from . import consensus

__all__ = ["MUTANTS", "RULE_LIMIT", "Livelock", "Mutant", "core_class"]

RULE_LIMIT = 10_000  # upon-rules fired by one event before the core counts as livelocked


class Livelock(RuntimeError):
    """The (mutated) core kept firing upon-rules without returning from one event."""


@dataclass(frozen=True, slots=True)
class Mutant:
    name: str
    lines: str  # the lines of Algorithm 1 whose condition is changed
    what: str
    old: str  # text of Consensus's source, exactly once
    new: str
    scenarios: tuple[str, ...]  # the scenarios to try first


_LOCK_23 = "(self.locked_round == -1 or self.locked_hash == p.block_hash)"
_LOCK_29 = "(self.locked_round <= vr or self.locked_hash == p.block_hash)"

MUTANTS: tuple[Mutant, ...] = (
    Mutant("l23-lock", "22-23", "prevote a new value (vr = -1) although locked on another",
           f"ok = self._valid(p.block_hash) and {_LOCK_23}", "ok = self._valid(p.block_hash)",
           ("byz_relock",)),
    Mutant("l23-valid", "23", "prevote a new value without valid(v)",
           f"ok = self._valid(p.block_hash) and {_LOCK_23}", f"ok = {_LOCK_23}",
           ("byz_relock",)),
    Mutant("l28-quorum", "28", "accept a re-proposal's valid round on f+1 prevotes instead of 2f+1",
           "elif self._count(vr, PREVOTE, p.block_hash) >= q:",
           "elif self._count(vr, PREVOTE, p.block_hash) >= self.f + 1:", ("byz_minority",)),
    Mutant("l29-lock", "29", "prevote a re-proposed value whose valid round is below our lock",
           f"ok = self._valid(p.block_hash) and {_LOCK_29}", "ok = self._valid(p.block_hash)",
           ("byz_minority", "byz_relock")),
    Mutant("l29-valid", "29", "prevote a re-proposed value without valid(v)",
           f"ok = self._valid(p.block_hash) and {_LOCK_29}", f"ok = {_LOCK_29}", ("byz_poison",)),
    Mutant("l34-first", "34", "schedule timeoutPrevote again and again (no 'for the first time')",
           "r not in self._prevote_timeout_rounds and self._total(r, PREVOTE) >= q",
           "self._total(r, PREVOTE) >= q", ("byz_skip",)),
    Mutant("l34-quorum", "34", "start timeoutPrevote on f+1 prevotes instead of 2f+1",
           "r not in self._prevote_timeout_rounds and self._total(r, PREVOTE) >= q",
           "r not in self._prevote_timeout_rounds and self._total(r, PREVOTE) >= self.f + 1", ("byz_silent",)),
    Mutant("l34-step", "34", "start timeoutPrevote in any step",
           "if self._step == _PREVOTE and r not in self._prevote_timeout_rounds",
           "if r not in self._prevote_timeout_rounds", ("byz_silent",)),
    Mutant("l36-quorum", "36", "lock and precommit on f+1 prevotes instead of 2f+1",
           "if len(signers) >= q and x != NIL", "if len(signers) >= self.f + 1 and x != NIL",
           ("byz_mirror",)),
    Mutant("l36-valid", "36", "lock and precommit without valid(v)",
           "x in self._blocks and self._valid(x):\n                    self._line36_rounds",
           "x in self._blocks:\n                    self._line36_rounds", ("byz_poison",)),
    Mutant("l36-step", "36", "take a polka of the round in the propose step too",
           "if self._step >= _PREVOTE and r not in self._line36_rounds:", "if r not in self._line36_rounds:",
           ("byz_late",)),
    Mutant("l36-first", "36", "fire lines 36-43 again and again (no 'for the first time')",
           "if self._step >= _PREVOTE and r not in self._line36_rounds:", "if self._step >= _PREVOTE:",
           ("happy",)),
    Mutant("l37-step", "37", "lock on a polka after having precommitted in the round",
           "                    if self._step == _PREVOTE:  # lines 37-41",
           "                    if True:  # lines 37-41", ("ring",)),
    Mutant("l42-valid", "42-43", "do not remember the valid value (a proposer forgets the polka)",
           "self.valid_round, self.valid_hash, self.valid_block = r, x, self._blocks[x]  # lines 42-43",
           "pass", ("byz_relock",)),
    Mutant("l44-quorum", "44", "precommit nil on f+1 nil prevotes instead of 2f+1",
           "self._count(r, PREVOTE, NIL) >= q:", "self._count(r, PREVOTE, NIL) >= self.f + 1:", ("byz_silent",)),
    Mutant("l44-step", "44", "precommit nil on a nil polka in any step",
           "if self._step == _PREVOTE and self._count(r, PREVOTE, NIL) >= q:",
           "if self._count(r, PREVOTE, NIL) >= q:", ("byz_silent",)),
    Mutant("l47-first", "47", "schedule timeoutPrecommit again and again (no 'for the first time')",
           "r not in self._precommit_timeout_rounds and self._total(r, PRECOMMIT) >= q",
           "self._total(r, PRECOMMIT) >= q", ("byz_skip",)),
    Mutant("l47-quorum", "47", "start timeoutPrecommit on f+1 precommits instead of 2f+1",
           "r not in self._precommit_timeout_rounds and self._total(r, PRECOMMIT) >= q",
           "r not in self._precommit_timeout_rounds and self._total(r, PRECOMMIT) >= self.f + 1",
           ("byz_silent",)),
    Mutant("l49-quorum", "49", "decide on f+1 precommits instead of 2f+1",
           "len(signers) == self.quorum", "len(signers) == self.f + 1", ("byz_voter",)),
    Mutant("l49-valid", "49-50", "decide without valid(v)",
           "            if x in self._blocks and self._valid(x):\n                self._decide",
           "            if x in self._blocks:\n                self._decide", ("byz_poison",)),
    Mutant("l55-one", "55", "skip to a higher round on one message instead of f+1",
           "len(s) >= self.f + 1]", "len(s) >= 1]", ("byz_skip",)),
    Mutant("l55-quorum", "55", "skip to a higher round only on 2f+1 messages instead of f+1",
           "len(s) >= self.f + 1]", "len(s) >= self.quorum]", ("crash",)),
)

_BY_NAME = {m.name: m for m in MUTANTS}


@cache
def core_class(name: str) -> type[consensus.Consensus]:
    """``Consensus`` with mutant ``name`` planted, guarded against livelock."""
    m = _BY_NAME[name]
    source = inspect.getsource(consensus.Consensus)
    found = source.count(m.old)
    if found != 1:
        raise LookupError(f"mutant {name}: its text occurs {found} times in Consensus (want 1); update node/mutants.py")
    namespace: dict[str, Any] = dict(vars(consensus))  # the real messages, actions and helpers
    code = compile(source.replace(m.old, m.new), f"<mutant {name} of node/consensus.py>", "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)
    exec(code, namespace)
    mutated: type[consensus.Consensus] = namespace["Consensus"]

    class Guarded(mutated):  # type: ignore[valid-type,misc]
        _fired = 0

        def _run(self, out: list[Any]) -> None:
            self._fired = 0
            super()._run(out)

        def _rules(self, out: list[Any]) -> bool:
            self._fired += 1
            if self._fired > RULE_LIMIT:
                raise Livelock(f"more than {RULE_LIMIT} upon-rules fired in one event at height {self.height}")
            fired: bool = super()._rules(out)
            return fired

    Guarded.__name__ = Guarded.__qualname__ = f"Consensus[{name}]"
    return Guarded
