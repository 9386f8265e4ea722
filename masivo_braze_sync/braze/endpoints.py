"""The REST endpoint allow-list: an API key is only ever sent to a real Braze instance.

Braze REST keys are bearer tokens, so whoever receives one can act on the workspace. The
configured endpoint therefore has to be one of the hosts Braze publishes (docs/braze.md#endpoints-and-instances, "REST
hosts") and nothing that merely looks like one. The check is deliberately a strict parse plus
an exact host comparison, not a pattern: `rest.iad-10.braze.com` does not exist (US-10 is
`rest.us-10.braze.com`) and `rest.iad-01.braze.com.evil.example` or
`rest.iad-01.braze.com@evil.example` must never pass.

A local emulator is accepted only when the caller passes `allow_local=True` (the settings flag
`MASIVO_BRAZE_ALLOW_LOCAL_ENDPOINTS=1`, README "Using it"), and then only as `http://127.0.0.1:<port>`
or `http://localhost:<port>`.

Error messages go to operators and end up in Prefect's database
(docs/prefect.md#result-persistence-and-what-prefect-stores), so they name the scheme and host at
most: never the URL's user information, path or query, where a pasted credential could hide.
"""

from __future__ import annotations

import re

from masivo_braze_sync.errors import EndpointNotAllowed

__all__ = ["BRAZE_REST_HOSTS", "LOCAL_HOSTS", "validate_rest_endpoint"]

#: Every REST host Braze documents (docs/braze.md#endpoints-and-instances). US-09 does not exist; EU-03 is unconfirmed.
BRAZE_REST_HOSTS: frozenset[str] = frozenset(
    [f"rest.iad-0{n}.braze.com" for n in range(1, 9)]
    + [
        "rest.us-10.braze.com",
        "rest.fra-01.braze.eu",
        "rest.fra-02.braze.eu",
        "rest.au-01.braze.com",
        "rest.id-01.braze.com",
        "rest.jp-01.braze.com",
        "rest.kr-01.braze.com",
    ]
)

#: Hosts accepted (over http, with an explicit port) when local endpoints are allowed.
LOCAL_HOSTS: frozenset[str] = frozenset({"127.0.0.1", "localhost"})

_ACCEPTED = (
    "https://rest.<instance>.braze.com for iad-01 … iad-08, us-10, au-01, id-01, jp-01, kr-01, "
    "or https://rest.<instance>.braze.eu for fra-01, fra-02 — scheme and host only, "
    "no user, port, path or query"
)
_ACCEPTED_LOCAL = " (local endpoints enabled: also http://127.0.0.1:<port> or http://localhost:<port>)"

# host[:port] with nothing else: no userinfo, no IPv6 brackets, no percent-encoding, no backslash.
_AUTHORITY_RE = re.compile(r"(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?")
_IPV4_RE = re.compile(r"[0-9]+(\.[0-9]+){0,3}")


def _refuse(reason: str, *, shown: str | None, allow_local: bool) -> EndpointNotAllowed:
    where = f" ({shown})" if shown else ""
    accepted = _ACCEPTED + (_ACCEPTED_LOCAL if allow_local else "")
    return EndpointNotAllowed(f"Braze REST endpoint refused{where}: {reason}. Accepted: {accepted}.")


def _showable(scheme: str, authority: str) -> str | None:
    """`scheme://host[:port]` for messages, or None when the authority is anything else."""
    if not _AUTHORITY_RE.fullmatch(authority) or not re.fullmatch(r"[a-z][a-z0-9+.-]{0,15}", scheme):
        return None
    return f"{scheme}://{authority.lower()}"


def validate_rest_endpoint(url: str, *, allow_local: bool = False) -> str:
    """Check that `url` is a Braze REST base URL and return it normalised.

    The result is `https://<host>` in lower case, without a trailing slash (or
    `http://<127.0.0.1|localhost>:<port>` for an allowed local endpoint), ready to be used
    as an httpx `base_url`. Leading and trailing whitespace is ignored (pasted values often
    carry a newline); anything else unusual is refused rather than repaired.

    Args:
        url: the configured REST endpoint, e.g. `https://rest.iad-01.braze.com`.
        allow_local: also accept `http://127.0.0.1:<port>` and `http://localhost:<port>`
            (emulator and tests; the explicit port is required).

    Returns:
        The normalised base URL.

    Raises:
        EndpointNotAllowed: the URL is not exactly a Braze REST host (docs/braze.md#endpoints-and-instances). The
            message says what was wrong and what is accepted, and never repeats the URL's
            user information, path or query.
    """
    if not isinstance(url, str):
        raise _refuse("it is not a string", shown=None, allow_local=allow_local)
    text = url.strip()
    if not text:
        raise _refuse("it is empty", shown=None, allow_local=allow_local)
    # Refuse rather than strip: Python's URL parser silently drops tabs and newlines inside a URL,
    # and IDNA/Unicode host names could be homoglyphs of a Braze host.
    if any(not 33 <= ord(ch) <= 126 for ch in text):
        raise _refuse(
            "it contains spaces, control characters or non-ASCII characters",
            shown=None,
            allow_local=allow_local,
        )

    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise _refuse("it has no scheme; it must start with https://", shown=None, allow_local=allow_local)
    # The authority ends at the first '/', '?' or '#' (RFC 3986 §3.2).
    authority = re.match(r"[^/?#]*", rest).group(0)  # type: ignore[union-attr]  # always matches
    tail = rest[len(authority) :]
    # Name the host in messages only when nothing in the URL can be user information.
    shown = None if "@" in text else _showable(scheme, authority)

    def refuse(reason: str) -> EndpointNotAllowed:
        return _refuse(reason, shown=shown, allow_local=allow_local)

    if "@" in authority:
        # `https://rest.iad-01.braze.com@evil.example` sends the request to evil.example.
        raise refuse("it contains user information before '@'; credentials never belong in the endpoint")
    if "?" in tail or "#" in tail:
        raise refuse("it has a query or fragment")
    if tail not in ("", "/"):
        raise refuse("it has a path; give the base URL only (the client adds /users/track etc.)")

    match = _AUTHORITY_RE.fullmatch(authority)
    if match is None:
        raise refuse("the host is not a plain host name (optionally with :port)")
    host = match.group("host").lower()
    port = match.group("port")

    if host in LOCAL_HOSTS or _IPV4_RE.fullmatch(host):
        return _validate_local(scheme, host, port, allow_local=allow_local, refuse=refuse)

    if scheme != "https":
        raise refuse(f"the scheme is {scheme}; only https is accepted")
    if host.endswith("."):
        raise refuse("the host ends with a dot; write it without the trailing dot")
    if host not in BRAZE_REST_HOSTS:
        if host.startswith(("dashboard", "sdk.")):
            raise refuse("that is a Braze dashboard or SDK host, not the REST host")
        raise refuse("the host is not a Braze REST host")
    if port not in (None, "443"):
        raise refuse(f"port {port} is not accepted; Braze REST hosts use the default https port")
    return f"https://{host}"


def _validate_local(scheme: str, host: str, port: str | None, *, allow_local: bool, refuse) -> str:
    """Local hosts and IP literals: accepted only as `http://127.0.0.1|localhost:<port>` when allowed."""
    if not allow_local:
        if host in LOCAL_HOSTS or host.startswith("127."):
            raise refuse("local endpoints need MASIVO_BRAZE_ALLOW_LOCAL_ENDPOINTS=1 (emulator, tests)")
        raise refuse("IP addresses are not Braze REST hosts")
    if host not in LOCAL_HOSTS:
        raise refuse("IP addresses other than 127.0.0.1 are not accepted")
    if scheme != "http":
        raise refuse(f"a local endpoint must use http, not {scheme}")
    if port is None or not 1 <= int(port) <= 65535 or port.startswith("0"):
        raise refuse("a local endpoint needs an explicit port between 1 and 65535")
    return f"http://{host}:{port}"
