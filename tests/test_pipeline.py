"""The decode prefetch queue: bounded, ordered, propagates errors, stops cleanly."""

from __future__ import annotations

import threading

import pytest

from streamcap.pipeline import prefetch


def test_prefetch_keeps_order_and_bounds_memory():
    produced = []

    def gen():
        for i in range(50):
            produced.append(i)
            yield i

    it = prefetch(gen(), depth=3)
    first = next(it)
    assert first == 0
    # the producer can run ahead by at most the queue depth (+1 in hand, +1 being put)
    threading.Event().wait(0.2)
    assert len(produced) <= 1 + 3 + 1
    assert [first, *it] == list(range(50))


def test_prefetch_reraises_producer_errors():
    def gen():
        yield 1
        raise ValueError("broken frame")

    it = prefetch(gen())
    assert next(it) == 1
    with pytest.raises(ValueError, match="broken frame"):
        next(it)


def test_prefetch_stops_the_producer_when_the_consumer_stops():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = {t for t in threading.enumerate() if t.name == "streamcap-decode"}
    it = prefetch(endless(), depth=2)
    assert next(it) == 0
    mine = [t for t in threading.enumerate() if t.name == "streamcap-decode" and t not in before]
    assert len(mine) == 1 and mine[0].is_alive()
    it.close()
    # the producer notices within its put timeout and leaves its loop
    mine[0].join(timeout=2.0)
    assert not mine[0].is_alive()
