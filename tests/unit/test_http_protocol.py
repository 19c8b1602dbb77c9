"""serve's HTTP protocol sends a response's head and body in one write."""

from __future__ import annotations

import asyncio

from glowing_fiesta.http_protocol import _OneWrite

HEAD = b"HTTP/1.1 202 Accepted\r\ncontent-length: 14\r\n\r\n"


class Recording(asyncio.Transport):
    """A transport that records what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 7


def run(steps: list[bytes], *, then_close: bool = False) -> Recording:
    async def scenario() -> Recording:
        raw = Recording()
        wrapped = _OneWrite(raw, asyncio.get_running_loop())
        for data in steps:
            wrapped.write(data)
        if then_close:
            wrapped.close()
        await asyncio.sleep(0)  # the end of the loop step
        await asyncio.sleep(0)
        return raw

    return asyncio.run(scenario())


def test_head_and_body_go_out_in_one_write() -> None:
    assert run([HEAD, b'{"accepted":1}']).writes == [HEAD + b'{"accepted":1}']


def test_a_head_without_a_body_goes_out_at_the_end_of_the_loop_step() -> None:
    # HEAD requests, and "100 Continue" before a body is read.
    assert run([b"HTTP/1.1 100 Continue\r\n\r\n"]).writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_later_chunks_and_next_responses_follow_in_order() -> None:
    writes = run([HEAD, b"a", b"b", HEAD, b"c"]).writes
    assert writes == [HEAD + b"a", b"b", HEAD + b"c"]


def test_closing_sends_a_held_head_first() -> None:
    raw = run([HEAD], then_close=True)
    assert raw.writes == [HEAD]
    assert raw.closed


def test_everything_else_is_the_transport_s() -> None:
    async def scenario() -> int:
        wrapped = _OneWrite(Recording(), asyncio.get_running_loop())
        return int(wrapped.get_write_buffer_size())

    assert asyncio.run(scenario()) == 7
