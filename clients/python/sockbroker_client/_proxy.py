"""Running an unmodified program through the daemon's proxy door (SOCKS5 and HTTP CONNECT).

:func:`proxy_environment` gives the variables that most programs read to find a proxy
(``ALL_PROXY`` for SOCKS5 with names resolved by the daemon, ``HTTPS_PROXY`` for HTTP CONNECT),
with the token as the password and, as the username, ``SESSION/CUSTODIAN``: every connection the
program makes is then a handle pair in that custodian, which ``Custodians.Describe`` lists and
whose shutdown cuts them (docs/proxy.md).

``ALL_PROXY`` serves ``http://`` URLs too; ``HTTP_PROXY`` is left unset, because a program given
one sends plain ``GET http://…`` requests to it, which the door does not serve (CONNECT only).
"""

from __future__ import annotations

import os
import pathlib
import urllib.parse

from ._client import default_token_file
from ._files import read_runtime_file, read_token_file, runtime_file

__all__ = ["DEFAULT_PROXY", "proxy_address", "proxy_environment"]

#: The proxy door's default address (``--proxy-address``).
DEFAULT_PROXY = "127.0.0.1:1080"
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}


def proxy_address(token_file: str | os.PathLike[str] | None = None) -> str:
    """``HOST:PORT`` of the proxy door: ``$SOCKBROKER_PROXY``, else the running daemon's runtime
    file (beside ``token_file``), else :data:`DEFAULT_PROXY`."""
    configured = os.environ.get("SOCKBROKER_PROXY")
    if configured:
        return configured
    path = pathlib.Path(token_file) if token_file else default_token_file()
    runtime = read_runtime_file(runtime_file(path)) or {}
    found = runtime.get("proxy_address")
    if not isinstance(found, str) or not found:
        return DEFAULT_PROXY
    host, _, port = found.rpartition(":")
    return f"{_WILDCARDS.get(host, host)}:{port}"  # a wildcard address is reached on loopback


def proxy_environment(
    username: str,
    *,
    token: str | None = None,
    token_file: str | os.PathLike[str] | None = None,
    address: str | None = None,
) -> dict[str, str]:
    """The environment that sends a program's connections through the proxy door as
    ``username`` (``SESSION/CUSTODIAN``, ``SESSION``, or any other name for a session per
    connection). The token defaults to ``$SOCKBROKER_TOKEN``, then the token file; the address
    to :func:`proxy_address`. Both forms of each name are set (curl reads ``ALL_PROXY`` and
    ``https_proxy``, others the other case)."""
    if token is None:
        token = os.environ.get("SOCKBROKER_TOKEN")
    if token is None:
        token = read_token_file(pathlib.Path(token_file) if token_file else default_token_file())
    where = address or proxy_address(token_file)
    credentials = f"{urllib.parse.quote(username, safe='')}:{urllib.parse.quote(token, safe='')}"
    socks = f"socks5h://{credentials}@{where}"
    http = f"http://{credentials}@{where}"
    return {"ALL_PROXY": socks, "all_proxy": socks, "HTTPS_PROXY": http, "https_proxy": http}
