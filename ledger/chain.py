"""The commit path: records -> block -> certificate -> store (PROTOCOL.md 5, 6).

``Ledger`` pairs a store with the state after its last block. The single validator uses
``commit_single`` (propose, precommit, certificate, store); the BFT node uses the same
``build_block`` / ``check_block`` / ``commit`` steps with certificates from consensus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .blocks import Certificate, Header, certify_single, verify_certificate
from .errors import LedgerError, RuleError, VerificationError
from .keys import SigningKey
from .records import Record, utc_now
from .state import ChainState
from .store import Store

__all__ = ["Block", "Ledger"]


@dataclass
class Block:
    """A block prepared against the current state, ready to be certified and stored."""

    header: Header
    records: list[Record]
    nodes: list[tuple[int, int, bytes]]
    state: ChainState  # the state after this block

    @property
    def hash(self) -> str:
        return self.header.hash


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.genesis = store.genesis
        self.chain_id = self.genesis.chain_id
        self.state = store.load_state()

    @property
    def height(self) -> int:
        return self.store.height()

    def build_block(
        self, records: Sequence[Record], *, proposer: str, time: str | None = None
    ) -> tuple[Block, list[tuple[Record, LedgerError]]]:
        """Order ``records`` into the next block, dropping those the state rules refuse
        (returned with their errors). Signatures are not re-checked: the caller verified
        each record once on arrival."""
        state = self.state.fork()
        state.begin_block(self.height + 1)
        state.prefetch_nonces(records)
        accepted: list[Record] = []
        rejected: list[tuple[Record, LedgerError]] = []
        for rec in records:
            try:
                state.check_apply(rec)
            except RuleError as e:
                rejected.append((rec, e))
            else:
                accepted.append(rec)
        return self._seal(accepted, state, proposer=proposer, time=time or utc_now()), rejected

    def _seal(self, records: list[Record], state: ChainState, *, proposer: str, time: str) -> Block:
        head = self.store.head()
        size = head.header.log_size if head else 0
        nodes, root = self.store.prepare_log(size, [bytes.fromhex(r.id) for r in records])
        header = Header(
            chain=self.chain_id,
            height=(head.header.height if head else 0) + 1,
            prev=head.hash if head else self.chain_id,  # PROTOCOL.md 5: chain_id for height 1
            time=time,
            proposer=proposer,
            count=len(records),
            log_size=size + len(records),
            log_root=root.hex(),
            next_validators=state.validators_hash(),  # PROTOCOL.md 9.1: the set after the block
        )
        return Block(header, records, nodes, state)

    def check_block(self, header: Header, records: Sequence[Record], *, verify_signatures: bool = True) -> Block:
        """Rebuild a block someone else proposed and check it is exactly the next block:
        every record valid in order, and the header equal to the one we would build."""
        state = self.state.fork()
        state.begin_block(header.height)
        state.prefetch_nonces(records)
        for rec in records:
            if verify_signatures:
                rec.verify_signature()
            state.check_apply(rec)
        block = self._seal(list(records), state, proposer=header.proposer, time=header.time)
        if block.header != header:
            raise VerificationError(
                f"block {header.height}: header does not match its records and the chain "
                f"(expected {block.header.to_dict()}, got {header.to_dict()})",
                code="bad_block",
            )
        return block

    def commit(self, block: Block, certificate: Certificate) -> None:
        """Verify the certificate against the set certifying the block's height (the set
        after the previous block, PROTOCOL.md 9.1) and store the block; the state moves on."""
        verify_certificate(
            certificate,
            chain=self.chain_id,
            height=block.header.height,
            block_hash=block.hash,
            validators=self.state.validator_keys(),
        )
        self.store.append_block(block.header, certificate, block.records, block.nodes, block.state)
        block.state.index = self.store
        block.state.settle()
        self.state = block.state

    def commit_single(
        self, key: SigningKey, records: Sequence[Record], *, time: str | None = None
    ) -> tuple[Block, Certificate, list[tuple[Record, LedgerError]]]:
        """Single-validator path: propose -> precommit -> certificate -> store."""
        block, rejected = self.build_block(records, proposer=key.public, time=time)
        cert = certify_single(key, block.header)
        self.commit(block, cert)
        return block, cert, rejected
