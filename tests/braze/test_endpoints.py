"""The REST endpoint allow-list (docs/braze.md#endpoints-and-instances): exact Braze hosts only, look-alikes refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from masivo_braze_sync.braze.endpoints import BRAZE_REST_HOSTS, validate_rest_endpoint
from masivo_braze_sync.errors import ConfigurationError, EndpointNotAllowed

ALL_HOSTS = [f"rest.iad-0{n}.braze.com" for n in range(1, 9)] + [
    "rest.us-10.braze.com",
    "rest.fra-01.braze.eu",
    "rest.fra-02.braze.eu",
    "rest.au-01.braze.com",
    "rest.id-01.braze.com",
    "rest.jp-01.braze.com",
    "rest.kr-01.braze.com",
]


def test_allow_list_is_exactly_the_contract_hosts():
    assert set(ALL_HOSTS) == BRAZE_REST_HOSTS
    assert len(BRAZE_REST_HOSTS) == 15


@pytest.mark.parametrize("host", ALL_HOSTS)
def test_every_braze_host_is_accepted(host: str):
    assert validate_rest_endpoint(f"https://{host}") == f"https://{host}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://rest.iad-01.braze.com", "https://rest.iad-01.braze.com"),
        ("https://rest.iad-01.braze.com/", "https://rest.iad-01.braze.com"),
        ("https://REST.IAD-01.BRAZE.COM", "https://rest.iad-01.braze.com"),
        ("HTTPS://Rest.Fra-02.Braze.EU/", "https://rest.fra-02.braze.eu"),
        ("https://rest.iad-01.braze.com:443", "https://rest.iad-01.braze.com"),
        ("https://rest.iad-01.braze.com:443/", "https://rest.iad-01.braze.com"),
        ("  https://rest.us-10.braze.com\n", "https://rest.us-10.braze.com"),  # pasted with a newline
    ],
)
def test_accepted_and_normalised(url: str, expected: str):
    assert validate_rest_endpoint(url) == expected


REFUSED = [
    # (url, words the message must contain)
    ("https://rest.iad-01.braze.com.evil.example", "not a Braze REST host"),
    ("https://rest.iad-01.braze.com@evil.example", "user information"),
    ("https://user:pw@rest.iad-01.braze.com", "user information"),
    ("https://rest.iad-01.braze.com\\@evil.example", "user information"),
    ("http://rest.iad-01.braze.com", "only https"),
    ("ftp://rest.iad-01.braze.com", "only https"),
    ("rest.iad-01.braze.com", "no scheme"),
    ("//rest.iad-01.braze.com", "no scheme"),
    ("https://", "plain host name"),
    ("https://1.2.3.4", "IP addresses"),
    ("https://[2001:db8::1]", "plain host name"),
    ("https://rest.iad-01.braze.com:8443", "port 8443"),
    ("https://rest.iad-01.braze.com:0443", "port 0443"),
    ("https://rest.iad-01.braze.com:", "plain host name"),
    ("https://rest.iad-10.braze.com", "not a Braze REST host"),
    ("https://rest.iad-09.braze.com", "not a Braze REST host"),
    ("https://rest.fra-03.braze.eu", "not a Braze REST host"),
    ("https://rest.fra-01.braze.com", "not a Braze REST host"),
    ("https://rest.iad-01.braze.eu", "not a Braze REST host"),
    ("https://braze.com", "not a Braze REST host"),
    ("https://dashboard-01.braze.com", "dashboard or SDK host"),
    ("https://sdk.iad-01.braze.com", "dashboard or SDK host"),
    ("https://rest.iad-01.braze.com.", "trailing dot"),
    ("https://rest.iad-01.braze.com/users/track", "has a path"),
    ("https://rest.iad-01.braze.com//", "has a path"),
    ("https://rest.iad-01.braze.com?x=1", "query"),
    ("https://rest.iad-01.braze.com/?api_key=abc", "query"),
    ("https://rest.iad-01.braze.com#frag", "query or fragment"),
    ("https://rest.iad-01.bra\tze.com", "control characters"),
    ("https://rest.iad-01.braze.com\n/x", "control characters"),
    ("https://rest.iad-01.br\u0430ze.com", "non-ASCII"),  # a Cyrillic homoglyph of 'a'
    ("https://rest.iad-01.braze.com%2eevil.example", "plain host name"),
    ("", "empty"),
    ("   ", "empty"),
    ("http://localhost:8080", "MASIVO_BRAZE_ALLOW_LOCAL_ENDPOINTS"),
    ("http://127.0.0.1:8080", "MASIVO_BRAZE_ALLOW_LOCAL_ENDPOINTS"),
    ("https://localhost", "MASIVO_BRAZE_ALLOW_LOCAL_ENDPOINTS"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused_with_operator_message(url: str, reason: str):
    with pytest.raises(EndpointNotAllowed) as info:
        validate_rest_endpoint(url)
    message = str(info.value)
    assert reason in message
    assert "Accepted: https://rest.<instance>.braze.com" in message
    assert isinstance(info.value, ConfigurationError)


@pytest.mark.parametrize(
    "url",
    [
        "https://admin:hunter2@rest.iad-01.braze.com",
        "https://hunter2@evil.example",
        "https://admin:hunter2/x@rest.iad-01.braze.com",  # '/' in the password ends the authority early
        "https://rest.iad-01.braze.com/?api_key=hunter2",
        "https://rest.iad-01.braze.com/hunter2",
        "https://rest.iad-01.braze.com#hunter2",
    ],
)
def test_message_never_repeats_credentials(url: str):
    with pytest.raises(EndpointNotAllowed) as info:
        validate_rest_endpoint(url)
    assert "hunter2" not in str(info.value)
    assert "admin" not in str(info.value)


def test_message_names_the_refused_host():
    with pytest.raises(EndpointNotAllowed, match=r"\(https://rest\.iad-01\.braze\.com\.evil\.example\)"):
        validate_rest_endpoint("https://rest.iad-01.braze.com.evil.example")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:1", "http://localhost:1"),
        ("http://LOCALHOST:65535/", "http://localhost:65535"),
        ("https://rest.iad-01.braze.com", "https://rest.iad-01.braze.com"),  # real hosts still pass
    ],
)
def test_local_accepted_only_when_allowed(url: str, expected: str):
    assert validate_rest_endpoint(url, allow_local=True) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1", "explicit port"),
        ("http://localhost", "explicit port"),
        ("http://localhost:0", "explicit port"),
        ("http://localhost:65536", "explicit port"),
        ("http://localhost:08080", "explicit port"),
        ("https://127.0.0.1:8080", "must use http"),
        ("http://127.0.0.2:8080", "other than 127.0.0.1"),
        ("http://10.0.0.1:8080", "other than 127.0.0.1"),
        ("http://[::1]:8080", "plain host name"),
        ("http://0.0.0.0:8080", "other than 127.0.0.1"),
        ("http://localhost.:8080", "only https"),
        ("http://localhost:8080/users/track", "has a path"),
        ("http://user@localhost:8080", "user information"),
        ("http://emulator.internal:8080", "only https"),
        ("http://rest.iad-01.braze.com:8080", "only https"),
    ],
)
def test_local_refusals(url: str, reason: str):
    with pytest.raises(EndpointNotAllowed) as info:
        validate_rest_endpoint(url, allow_local=True)
    assert reason in str(info.value)
    assert "http://127.0.0.1:<port>" in str(info.value)


@given(st.text(max_size=80))
def test_any_string_is_refused_or_an_allowed_base_url(url: str):
    try:
        result = validate_rest_endpoint(url)
    except EndpointNotAllowed:
        return
    assert result in {f"https://{h}" for h in BRAZE_REST_HOSTS}


@given(
    st.sampled_from(sorted(BRAZE_REST_HOSTS)),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-:@/?#%[]\\", min_size=1, max_size=20),
)
def test_any_suffix_or_prefix_on_a_real_host_is_refused(host: str, extra: str):
    normalised = {f"https://{host}"}
    for url in (f"https://{host}{extra}", f"https://{extra}{host}"):
        try:
            result = validate_rest_endpoint(url)
        except EndpointNotAllowed:
            continue
        # only the harmless spellings survive: "/", ":443", ":443/"
        assert result in normalised
        assert url.endswith((host, f"{host}/", f"{host}:443", f"{host}:443/"))
