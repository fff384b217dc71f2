"""Federated learning that records itself: provledger for Flower (flwr 1.42).

``pip install provledger[flower]``. Importing ``ledger`` never loads this package; this
package imports flwr and numpy. See docs/flower.md for the rules it follows exactly.

- ``ProvLedger(strategy, node=..., aggregator=..., model=..., datasets=[...])``: the
  outermost strategy wrapper (``strategy.py``);
- ``ProvLedgerMod()``: the client mod that signs each local update (``client.py``);
- ``weights_hash(arrays)``: the deterministic hash of a model's arrays (``hashing.py``);
- ``run_inprocess(server_app, client_app, n)``: Flower's simulation runtime without Ray
  (``inprocess.py``).
"""

from __future__ import annotations

from .client import ProvLedgerMod, client_identity
from .hashing import weights_hash, weights_hash_file
from .inprocess import run_inprocess
from .privacy import decimal_string
from .strategy import REJECTED, BudgetExceeded, ProvLedger

__all__ = [
    "REJECTED",
    "BudgetExceeded",
    "ProvLedger",
    "ProvLedgerMod",
    "client_identity",
    "decimal_string",
    "run_inprocess",
    "weights_hash",
    "weights_hash_file",
]
