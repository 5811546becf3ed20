"""The protocol ladder: which spurious factors are correlated with the target in training, by name.

A bundle config declares ``protocols`` (name -> {factor data-list key: rho}) and picks one with ``protocol``;
``splits#rho`` is then ``$protocol_rho(@protocols, @protocol)``. Climbing the ladder (one factor, a pair, all of
them) shows whether a method that removes one shortcut still works when several are present at once, and whether
removing one amplifies another. ``rho`` 0.5 leaves a factor independent of the target.
"""

from __future__ import annotations

from collections.abc import Mapping

from mimmx.errors import ConfigError

__all__ = ["protocol_rho"]


def protocol_rho(protocols: Mapping[str, Mapping[str, float]], protocol: str) -> dict[str, float]:
    """The per-factor rho of ``protocol``; a ConfigError naming ``protocol`` and the allowed names otherwise.

    Returned as a plain dict so that the data-list fingerprint (which covers rho) differs between protocols.
    """
    if not isinstance(protocols, Mapping) or not protocols:
        raise ConfigError(f"protocols: expected a mapping of protocol name -> {{factor key: rho}}, got {protocols!r}.")
    if protocol not in protocols:
        raise ConfigError(f"protocol: unknown protocol {protocol!r}; expected one of {sorted(protocols)}.")
    rho = protocols[protocol]
    if not isinstance(rho, Mapping) or not rho:
        raise ConfigError(f"protocols#{protocol}: expected a mapping of factor key -> rho, got {rho!r}.")
    return {str(k): v for k, v in rho.items()}
