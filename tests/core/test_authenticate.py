"""Tokens (DESIGN §5): a header value that named a principal is remembered, but a wrong token is
always refused, and so is a token whose principal is no longer one of the broker's."""

from __future__ import annotations

import pytest
from sockbroker.core.broker import Broker, Principal
from sockbroker.core.errors import UnauthenticatedError
from sockbroker.core.limits import Limits
from sockbroker.core.principals import HEADERS_KEPT

TOKEN = "t" * 43


def test_remembered_values_never_let_a_wrong_token_in() -> None:
    alice, bob = Principal("alice", TOKEN), Principal("bob", "b" * 43)
    broker = Broker(Limits(), [alice, bob])
    for _ in range(2):  # the second time from what the broker remembers
        assert broker.authenticate_header(f"Bearer {TOKEN}") is alice
        assert broker.authenticate_header("bearer " + "b" * 43) is bob
    for wrong in (f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "", None):
        with pytest.raises(UnauthenticatedError):
            broker.authenticate_header(wrong)
    broker.principals.remove(alice)
    with pytest.raises(UnauthenticatedError):
        broker.authenticate_header(f"Bearer {TOKEN}")
    assert broker.authenticate_header("bearer " + "b" * 43) is bob


def test_it_remembers_a_bounded_number_of_values() -> None:
    alice = Principal("alice", TOKEN)
    broker = Broker(Limits(), [alice])
    for spaces in range(3 * HEADERS_KEPT):  # "Bearer  <token> " variants all carry the token
        assert broker.authenticate_header("Bearer " + TOKEN + " " * spaces) is alice
        assert len(broker.identities._by_header) <= HEADERS_KEPT
