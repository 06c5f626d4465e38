"""The bytes a connection holds from its peer (``core/tcp.py``'s ``_Received``): whatever the
chunks, reads, peeks and give-backs, it holds exactly what a plain byte buffer would, and a read
of one whole chunk hands that chunk on without copying it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from sockbroker.core.tcp import _GATHER, _Received

chunks = st.binary(min_size=1, max_size=3 * _GATHER)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("recv"), chunks),
        st.tuples(st.just("read"), st.integers(0, 4 * _GATHER)),
        st.tuples(st.just("peek"), st.integers(0, 4 * _GATHER)),
        st.tuples(st.just("give-back"), st.integers(0, 4 * _GATHER)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(steps=steps)
def test_it_holds_what_a_byte_buffer_would(steps: list[tuple[str, object]]) -> None:
    received, model = _Received(), bytearray()
    for step, arg in steps:
        if step == "recv":
            assert isinstance(arg, bytes)
            received.append(arg)
            model += arg
        elif step == "give-back":  # a cancelled read: its bytes go back in front
            assert isinstance(arg, int)
            taken = received.take(arg, peek=False)
            received.prepend(taken)
        else:
            assert isinstance(arg, int)
            data = received.take(arg, peek=step == "peek")
            assert isinstance(data, bytes) and data == model[:arg]
            if step == "read":
                del model[:arg]
        assert len(received) == len(model)
    assert received.take(len(model) + 1, peek=False) == model and len(received) == 0


def test_a_read_of_a_whole_chunk_is_that_chunk() -> None:
    received = _Received()
    chunk = bytes(range(256)) * (_GATHER // 64)
    received.append(chunk)
    received.append(b"tail" * _GATHER)
    assert received.take(len(chunk), peek=True) is chunk
    assert received.take(len(chunk) + 7, peek=False) == chunk + b"tailtai"
    assert received.take(1, peek=False) == b"l" and len(received) == 4 * _GATHER - 8


def test_an_idle_buffer_holds_no_deque() -> None:
    received = _Received()
    assert received._chunks is None and received.take(10, peek=False) == b""
    received.append(b"y" * 5000)
    assert received._chunks is not None and received.take(10, peek=True) == b"y" * 10


def test_short_chunks_are_gathered() -> None:
    received = _Received()
    for _ in range(1000):
        received.append(b"x")
    assert received._chunks is not None and len(received._chunks) == 1
    assert received.take(2000, peek=False) == b"x" * 1000
