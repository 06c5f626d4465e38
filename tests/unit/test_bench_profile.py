"""bench/profile.py: a py-spy raw profile read back, waits left out, shares by function."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for ``bench``

from bench.profile import frame_name, origin, parse, summarise

RAW = """\
0x7f (libc.so.6);run_forever (loop.c:10);body (/x/sockbroker/doors/grpc.py:670);send (libc.so.6) 30
0x7f (libc.so.6);run_forever (loop.c:10);body (/x/sockbroker/doors/grpc.py:671) 10
0x7f (libc.so.6);run_forever (loop.c:10);uv__io_poll (linux.c:5);epoll_wait (libc.so.6) 50
0x7f (libc.so.6);_worker (/py/thread.py:81);PyThread_acquire_lock_timed (x.so);0x1 (libc.so.6) 7
0x7f (libc.so.6);handle (/x/sockbroker/doors/rest.py:9);send (libc.so.6) 3
not a stack line
"""


def test_frames_are_named_by_function_and_file() -> None:
    assert frame_name("body (/x/sockbroker/doors/grpc.py:670)") == "body (doors/grpc.py)"
    assert frame_name("Loop__run (loop.c:10)") == "Loop__run (loop.c)"
    assert frame_name("0x7f3a (libc.so.6)") == "? (libc.so.6)"
    assert frame_name("no location") == "no location"


def test_a_frame_is_owned_by_the_daemon_a_package_python_uvloop_or_a_library() -> None:
    assert origin("body (/x/sockbroker/doors/grpc.py:670)") == "sockbroker"
    assert origin("pack (/x/proto/python/sockbroker_wire/packed.py:9)") == "sockbroker"
    assert origin("_handle (/v/lib/python3.11/site-packages/grpc/aio/_server.py:1)") == "grpc"
    assert origin("? (/v/lib/python3.11/site-packages/grpc/_cython/cygrpc.so)") == "grpc"
    assert origin("recv (/v/lib/python3.11/site-packages/websockets/protocol.py:3)") == "websockets"
    assert origin("get (/usr/lib/python3.11/asyncio/queues.py:158)") == "Python"
    assert origin("send (sockbroker/core/tcp.py:12)") == "sockbroker"
    assert origin("get (asyncio/queues.py:158)") == "Python"
    assert origin("Server.run (uvicorn/server.py:1)") == "uvicorn"
    assert origin("? (_message.abi3.so)") == "protobuf"
    assert origin("? (libpython3.11.so.1.0)") == "Python"
    assert origin("task_step (_asynciomodule.c:3)") == "Python"
    assert origin("Loop__run (loop.c:10)") == "uvloop"
    assert origin("0x7f (libc.so.6)") == "libc.so.6"


def test_a_summary_counts_samples_on_the_cpu_by_innermost_and_any_frame() -> None:
    stacks = parse(RAW.splitlines())
    assert sum(stack.count for stack in stacks) == 100  # the line that is not a stack is skipped
    summary = summarise(stacks)
    assert (summary.samples, summary.waiting) == (43, 57)
    assert dict(summary.self_time) == {"send (libc.so.6)": 33, "body (doors/grpc.py)": 10}
    assert dict(summary.origins) == {"libc.so.6": 33, "sockbroker": 10}
    inclusive = dict(summary.inclusive)
    assert inclusive["body (doors/grpc.py)"] == 40 and inclusive["? (libc.so.6)"] == 43
    with_waits = summarise(stacks, waits=True)
    assert (with_waits.samples, with_waits.waiting) == (100, 0)


def test_match_keeps_only_the_stacks_of_one_path() -> None:
    summary = summarise(parse(RAW.splitlines()), match=["grpc.py"])
    assert (summary.samples, dict(summary.self_time)) == (40, {"send (libc.so.6)": 30, "body (doors/grpc.py)": 10})
    lines = summary.lines(100)
    assert lines[0] == "40 samples counted (40 % of the file's 100; 0 matching ones waiting, left out)"
    assert "   75.0 %  send (libc.so.6)" in lines
    on_the_loop = summarise(parse(RAW.splitlines()), match=["run_forever"])
    assert (on_the_loop.samples, on_the_loop.waiting) == (40, 50)
