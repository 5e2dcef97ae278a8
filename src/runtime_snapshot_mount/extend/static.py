"""Built-in plugins: bearer tokens from a list, accounts from a list or a JSON file."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..request.snapshot import Account, Principal
from .hookspecs import hookimpl
from .plugins import ConfigurationError

__all__ = ["AnyAccount", "StaticAccounts", "StaticTokens", "load_accounts_file"]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class StaticTokens:
    """Accepts any of a fixed set of bearer tokens (several at once, for rotation).

    ``tokens`` is a list of tokens, each answering the principal ``Principal("api-key")``, or a
    mapping of token to the principal it answers. Tokens are compared in constant time: every
    configured token is compared, as SHA-256 digests of equal length, with each token offered.
    A token once accepted is remembered, so that its next use costs one dictionary lookup
    (keyed by Python's randomized string hash, so its timing tells nothing of the tokens);
    only accepted tokens are remembered, at most one per configured token.
    """

    def __init__(self, tokens: Iterable[str] | Mapping[str, Any]) -> None:
        if isinstance(tokens, Mapping):
            pairs = list(tokens.items())
        else:
            pairs = [(token, Principal("api-key")) for token in tokens]
        if any(not isinstance(token, str) or not token for token, _ in pairs):
            raise ConfigurationError("API keys must be non-empty strings")
        self._keys = [(_digest(token), principal) for token, principal in pairs]
        self._accepted: dict[str, Any] = {}

    @hookimpl(trylast=True)
    def authenticate(self, token: str) -> Any | None:
        found = self._accepted.get(token)
        if found is not None:
            return found
        offered = _digest(token)
        for digest, principal in self._keys:
            if hmac.compare_digest(offered, digest):
                found = principal
        if found is not None:
            self._accepted[token] = found
        return found


class StaticAccounts:
    """Accounts from a fixed list, visible to every principal.

    Each item is an account id (active), an :class:`Account`, or a mapping
    ``{"account_id": "...", "active": true|false}`` (``active`` defaults to true).
    """

    def __init__(self, accounts: Iterable[str | Account | Mapping[str, Any]]) -> None:
        self._accounts: dict[str, Account] = {}
        for item in accounts:
            account = _to_account(item)
            self._accounts[account.account_id] = account

    @hookimpl(trylast=True)
    def get_account(self, account_id: str, principal: Any) -> Account | None:
        return self._accounts.get(account_id)


class AnyAccount:
    """Every account id exists and is active: the command line's choice without ``--accounts``."""

    @hookimpl(trylast=True)
    def get_account(self, account_id: str, principal: Any) -> Account:
        return Account(account_id)


def _to_account(item: str | Account | Mapping[str, Any]) -> Account:
    if isinstance(item, Account):
        return item
    if isinstance(item, str) and item:
        return Account(item)
    if isinstance(item, Mapping):
        account_id, active = item.get("account_id"), item.get("active", True)
        if isinstance(account_id, str) and account_id and isinstance(active, bool):
            return Account(account_id, active)
    raise ConfigurationError(
        f'each account must be {{"account_id": "<non-empty string>", "active": true|false}}, '
        f"not {json.dumps(item, default=repr)[:80]}"
    )


def load_accounts_file(path: str | Path) -> StaticAccounts:
    """Read the accounts file of SPEC §5: a JSON array of ``{"account_id", "active"}`` objects."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError(f"cannot read accounts file {path}: {error.strerror}") from None
    except (ValueError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())
        raise ConfigurationError(f"accounts file {path} is not valid JSON: {reason}") from None
    if not isinstance(data, list):
        raise ConfigurationError(f"accounts file {path} must hold a JSON array")
    if any(not isinstance(item, dict) for item in data):
        raise ConfigurationError(f"accounts file {path}: every item must be a JSON object")
    try:
        return StaticAccounts(data)
    except ConfigurationError as error:
        raise ConfigurationError(f"accounts file {path}: {error}") from None
