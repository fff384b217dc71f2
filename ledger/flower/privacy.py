"""What a round costs in privacy, from the mechanism itself (docs/flower.md section 3).

- Central DP (Flower's fixed-clipping wrappers with an accountant): the round's
  (epsilon, delta) is the accountant's cumulative figure after the round minus before it,
  each written as ``decimal_string`` writes it, so the ledger's additive budget of a
  dataset used in every round equals the accountant's total.
- ``LocalDpMod``: its own epsilon and delta, per round.
- No DP: 0 and 0.

A DP wrapper without an accountant has no epsilon to give: ``central_mechanism`` refuses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from ..errors import InputError

__all__ = ["CentralDp", "decimal_string", "find_central_dp", "local_cost"]

_EXACT = Context(prec=100)
_PLACES = Decimal(1).scaleb(-30)  # PROTOCOL.md 1: a decimal string has at most 30 fraction digits


def decimal_string(x: float | int | Decimal) -> str:
    """docs/flower.md 3.1: a number as a PROTOCOL.md 1 decimal string. A float is read as its
    shortest round-trip form (``repr``), which converts back to the very same float; at most
    30 fraction digits (rounded half to even beyond). No exponent, no trailing zeros."""
    if isinstance(x, bool):
        raise InputError("a boolean is not a number", code="bad_value")
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            raise InputError(f"{x} is not a finite number", code="bad_value")
        x = Decimal(repr(x))
    d = x
    if d.as_tuple().exponent < -30:  # type: ignore[operator]
        d = d.quantize(_PLACES, rounding=ROUND_HALF_EVEN, context=_EXACT)
    if d == 0:
        return "0"
    text = format(d.normalize(_EXACT), "f")
    return text


def _dec(x: float | Decimal) -> Decimal:
    return Decimal(decimal_string(x))


@dataclass
class CentralDp:
    """A central-DP fixed-clipping wrapper and its accountant, read through their public
    attributes (``noise_multiplier``, ``clipping_norm``, ``num_sampled_clients``,
    ``accountant``) and the accountant's ``PrivacyAccountant`` protocol."""

    wrapper: Any

    @property
    def accountant(self) -> Any:
        return self.wrapper.accountant

    def spent(self) -> tuple[Decimal, Decimal]:
        """The accountant's cumulative (epsilon, delta) as decimals: (0, 0) before any release."""
        s = self.accountant.get_privacy_spent()
        if s.num_releases == 0:
            return Decimal(0), Decimal(0)
        return _dec(s.epsilon), _dec(s.delta)

    def spent_after(self, sample_size: int) -> tuple[Decimal, Decimal]:
        """The cumulative (epsilon, delta) after one more release of ``sample_size`` clients,
        from a copy of the accountant (its ``state_dict``), the accountant itself unchanged."""
        from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

        acc = self.accountant
        copy = type(acc)(acc.config)
        copy.load_state_dict(acc.state_dict())
        copy.compose(GaussianPrivacyEvent(noise_multiplier=self.wrapper.noise_multiplier, sample_size=sample_size,
                                          population_size=acc.config.population_size))
        s = copy.get_privacy_spent()
        return _dec(s.epsilon), _dec(s.delta)

    def describe(self) -> dict[str, Any]:
        acc = self.accountant
        return {
            "kind": "central", "wrapper": type(self.wrapper).__name__,
            "noise_multiplier": self.wrapper.noise_multiplier, "clipping_norm": self.wrapper.clipping_norm,
            "num_sampled_clients": self.wrapper.num_sampled_clients,
            "accountant": type(acc).__name__, "target_delta": acc.config.target_delta,
            "population_size": acc.config.population_size, "sampling_method": acc.config.sampling_method.value,
        }


def find_central_dp(strategy: Any) -> CentralDp | None:
    """The central-DP wrapper among ``strategy`` and the strategies it wraps (``.strategy``),
    if any. One without an accountant is refused: its epsilon would have to be invented."""
    from flwr.serverapp.strategy import DifferentialPrivacyClientSideAdaptiveClipping as CAC
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideAdaptiveClipping as SAC
    from flwr.serverapp.strategy.dp_fixed_clipping import DifferentialPrivacyFixedClippingBase

    s, found = strategy, None
    while s is not None:
        if isinstance(s, CAC | SAC):
            raise InputError(f"{type(s).__name__} has no privacy accountant; provledger records a round's epsilon "
                             "only from an accountant (use a fixed-clipping wrapper with accountant=...)",
                             code="no_accountant")
        if isinstance(s, DifferentialPrivacyFixedClippingBase):
            if s.accountant is None:
                raise InputError(f"{type(s).__name__} was built without an accountant: the epsilon of a round "
                                 "would have to be invented; pass accountant=RdpAccountant(...)", code="no_accountant")
            if found is not None:
                raise InputError("two central-DP wrappers around one strategy", code="bad_strategy")
            found = CentralDp(s)
        s = getattr(s, "strategy", None)
    return found


def local_cost(local_dp: Any | None) -> tuple[Decimal, Decimal]:
    """docs/flower.md 3.3: a ``LocalDpMod``'s own (epsilon, delta) per round; (0, 0) without one."""
    if local_dp is None:
        return Decimal(0), Decimal(0)
    return _dec(float(local_dp.epsilon)), _dec(float(local_dp.delta))
