"""API keys kept in Prefect Secret blocks instead of Masivo's tables.

An operator can put `prefect-secret:<block name>` in `braze_integrations.api_key`; the account's
flow run loads that `Secret` block (`prefect.blocks.system.Secret`) just before it builds the
pipeline, so the key itself lives only in Prefect's (encrypted) block storage and in the memory of
the run that uses it. The core package never imports Prefect: it receives an `AccountConfig`
whose key is already resolved.

The resolved key is never a flow or task parameter, a log line or exception text
(docs/prefect.md#result-persistence-and-what-prefect-stores): errors name the account and the
block, never a value. A missing block fails that account only, with a `ConfigurationError`.
"""

from __future__ import annotations

import dataclasses

from prefect.blocks.system import Secret

from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.errors import ConfigurationError

#: `braze_integrations.api_key` values starting with this name a Secret block
SECRET_PREFIX = "prefect-secret:"  # noqa: S105 - a prefix, not a secret


def secret_block_name(api_key: str | None) -> str | None:
    """The Secret block named by an `api_key` value, or None when the value is a key itself."""
    if api_key is None:
        return None
    text = api_key.strip()
    return text[len(SECRET_PREFIX) :].strip() if text.startswith(SECRET_PREFIX) else None


async def resolve_api_key(account: AccountConfig) -> AccountConfig:
    """The account with its API key loaded from the Secret block it names (unchanged otherwise).

    Raises:
        ConfigurationError: the block name is empty, no such block exists, or it does not hold
            a non-empty string. The message names the account and the block only.
    """
    name = secret_block_name(account.api_key)
    if name is None:
        return account
    where = f"account {account.account_id}: api_key refers to the Prefect Secret block '{name}'"
    if not name:
        raise ConfigurationError(f"account {account.account_id}: api_key says {SECRET_PREFIX} but names no block")
    try:
        block = await Secret.aload(name)
    except ValueError:  # Prefect's "Unable to find block document named ..." (names only)
        raise ConfigurationError(f"{where}, which does not exist") from None
    value = block.value.get_secret_value()  # the raw value: `get()` would JSON-decode a numeric key
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{where}, which does not hold a non-empty string")
    return dataclasses.replace(account, api_key=value)
