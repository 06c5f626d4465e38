"""bench/proxy.py's SOCKS5 client against a scripted server, and a row shown without a goal."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for ``bench``

from bench.common import Figure, Sample
from bench.proxy import SocksError, connect_request, dante_config, password_request, socks5_connect
from bench.run import Row, Run, Series, ratio_at_least, row_json


def scripted(answers: list[bytes], expected: list[int]) -> tuple[socket.socket, list[bytes], threading.Thread]:
    """A client socket whose server reads ``expected[i]`` bytes, then sends ``answers[i]``."""
    client, server = socket.socketpair()
    client.settimeout(5)
    server.settimeout(5)
    heard: list[bytes] = []

    def serve() -> None:
        with server:
            for size, answer in zip(expected, answers, strict=True):
                data = b""
                while len(data) < size and (piece := server.recv(size - len(data))):
                    data += piece
                heard.append(data)
                server.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return client, heard, thread


def test_connect_with_a_password_sends_rfc_1928_and_1929_and_reads_a_domain_reply() -> None:
    reply = b"\x05\x00\x00\x03\x09localhost\x1f\x90"
    client, heard, thread = scripted([b"\x05\x02", b"\x01\x00", reply + b"DATA"], [3, 11, 10])
    with client:
        socks5_connect(client, "127.0.0.1", 8080, ("me", "secret"))
        assert client.recv(4) == b"DATA"  # the reply's address was consumed, nothing more
    thread.join(5)
    assert heard == [b"\x05\x01\x02", b"\x01\x02me\x06secret", b"\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90"]


def test_connect_without_authentication_offers_no_authentication() -> None:
    client, heard, thread = scripted([b"\x05\x00", b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x01"], [3, 10])
    with client:
        socks5_connect(client, "127.0.0.1", 9, None)
    thread.join(5)
    assert heard[0] == b"\x05\x01\x00"


@pytest.mark.parametrize(
    ("answers", "expected", "words"),
    [
        ([b"\x05\xff"], [3], "none of the methods"),
        ([b"\x05\x00"], [3], "not username/password"),
        ([b"\x05\x02", b"\x01\x01"], [3, 11], "rejected the username and password"),
        ([b"\x05\x02", b"\x01\x00", b"\x05\x02\x00\x01\x00"], [3, 11, 10], "0x02 connection not allowed by ruleset"),
        ([b"\x05\x02", b"\x01\x00", b"\x05\x00\x00\x07\x00"], [3, 11, 10], "address type 0x07"),
        ([b"\x05\x02", b"\x01\x00", b"\x05\x00"], [3, 11, 10], "closed the connection"),
    ],
)
def test_a_refusal_or_a_broken_answer_is_a_socks_error(answers: list[bytes], expected: list[int], words: str) -> None:
    client, _heard, thread = scripted(answers, expected)
    with client, pytest.raises(SocksError, match=words):
        socks5_connect(client, "127.0.0.1", 8080, ("me", "secret"))
    thread.join(5)


def test_requests_are_bounded_and_ipv4() -> None:
    assert connect_request("127.0.0.1", 1080)[-2:] == b"\x04\x38"
    with pytest.raises(ValueError, match="1 to 255 bytes"):
        password_request(("me", "x" * 256))
    with pytest.raises(ValueError):
        connect_request("::1", 1080)


def test_dante_listens_on_loopback_without_authentication() -> None:
    config = dante_config(4321)
    assert "internal: 127.0.0.1 port = 4321" in config
    assert "socksmethod: none" in config


def series(key: str, values: list[float]) -> Series:
    return Series(Figure(key, "MB/s", ""), {index: Sample(value) for index, value in enumerate(values)})


def test_a_row_without_a_goal_is_shown_and_a_row_with_one_is_judged() -> None:
    run = Run(series={"b": series("b", [100.0, 200.0]), "k": series("k", [150.0, 180.0])})
    shown = row_json(Row("§11", "k vs b", "b", "k", None), run)
    assert (shown["verdict"], shown["target"], shown["judged"]) == ("shown", "—", None)
    assert shown["ratio"]["min"] == pytest.approx(0.9)
    judged = row_json(Row("§11", "k vs b", "b", "k", ratio_at_least(1.0)), run)
    assert (judged["verdict"], judged["judged"]) == ("pass", pytest.approx(1.2))
    missing = row_json(Row("§11", "k vs x", "x", "k", None), Run(series={"k": series("k", [1.0])}, errors={}))
    assert missing["verdict"] == "missing"  # a side was measured, the other has no figure
