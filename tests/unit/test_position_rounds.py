"""The rounds of `consistency.Positions`: a read never gets positions read before it asked,
the reads asking meanwhile share one query, and one reader's failure or departure is not
another's. The query is replaced by one the test releases (its PostgreSQL side is covered in
tests/integration/test_consistency.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from beeoclock import consistency

Key = tuple[str, str]


class Scripted(consistency.Positions):
    """Each round waits until the test releases it, then answers `written` as it is then."""

    def __init__(self, round_timeout_s: float = 5.0) -> None:
        super().__init__(pool=None, round_timeout_s=round_timeout_s)  # type: ignore[arg-type]
        self.rounds: list[list[Key]] = []
        self.written: dict[Key, int] = {}
        self.release: asyncio.Queue[Exception | None] = asyncio.Queue()

    async def _read(self, keys: list[Key]) -> dict[Key, tuple[int, int]]:
        self.rounds.append(keys)
        snapshot = dict(self.written)  # what the query sees: taken when the round starts
        failure = await self.release.get()
        if failure is not None:
            raise failure
        return {k: (snapshot.get(k, 0), 0) for k in keys}


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 5.0))


def test_a_read_asking_during_a_round_waits_for_the_next_one() -> None:
    async def scenario() -> None:
        positions = Scripted()
        positions.written[("t", "customer")] = 1
        first = asyncio.create_task(positions.get("t", "customer"))
        await _settle()
        assert len(positions.rounds) == 1  # started, its snapshot taken: written = 1
        positions.written[("t", "customer")] = 2  # a write acknowledged after that
        second = asyncio.create_task(positions.get("t", "customer"))
        await _settle()
        await positions.release.put(None)
        assert await first == (1, 0)
        await _settle()
        assert not second.done()  # the first round's answer is too old for it
        await positions.release.put(None)
        assert await second == (2, 0)
        assert len(positions.rounds) == 2

    run(scenario())


def test_the_reads_asking_during_a_round_share_the_next_query() -> None:
    async def scenario() -> None:
        positions = Scripted()
        first = asyncio.create_task(positions.get("a", "customer"))
        await _settle()
        waiting = [
            asyncio.create_task(positions.get(t, s))
            for t, s in [("a", "customer"), ("b", "customer"), ("a", "customer"), ("a", "service")]
        ]
        await _settle()
        await positions.release.put(None)
        await positions.release.put(None)
        await asyncio.gather(first, *waiting)
        assert positions.rounds == [
            [("a", "customer")],
            [("a", "customer"), ("b", "customer"), ("a", "service")],
        ]

    run(scenario())


def test_a_failed_round_fails_its_readers_only() -> None:
    async def scenario() -> None:
        positions = Scripted()
        failing = asyncio.create_task(positions.get("t", "customer"))
        await _settle()
        later = asyncio.create_task(positions.get("t", "customer"))
        await _settle()
        await positions.release.put(ConnectionError("database unreachable"))
        with pytest.raises(ConnectionError):
            await failing
        await positions.release.put(None)
        assert await later == (0, 0)
        # and with no round running, a new read starts one
        again = asyncio.create_task(positions.get("t", "customer"))
        await _settle()
        await positions.release.put(None)
        assert await again == (0, 0)

    run(scenario())


def test_a_reader_going_away_does_not_cancel_its_round() -> None:
    async def scenario() -> None:
        positions = Scripted()
        leaving = asyncio.create_task(positions.get("t", "customer"))
        staying = asyncio.create_task(positions.get("t", "customer"))
        await _settle()
        leaving.cancel()
        await _settle()
        await positions.release.put(None)
        assert await staying == (0, 0)
        assert leaving.cancelled()

    run(scenario())


@pytest.mark.parametrize(
    "next_tenant",
    [
        "u",
        "t",  # the same key both in the running round and waiting for the next one
    ],
)
def test_closing_fails_the_waiting_readers_and_every_later_one(next_tenant: str) -> None:
    async def scenario() -> None:
        positions = Scripted()
        in_round = asyncio.create_task(positions.get("t", "customer"))
        await _settle()
        next_round = asyncio.create_task(positions.get(next_tenant, "customer"))
        await _settle()
        await positions.close()
        for reading in (in_round, next_round):
            with pytest.raises(consistency.PositionsUnavailable):
                await reading
        with pytest.raises(consistency.PositionsUnavailable):
            await positions.get("t", "customer")

    run(scenario())


def test_a_stuck_round_fails_its_readers_in_time_and_the_next_round_goes_on() -> None:
    async def scenario() -> None:
        positions = Scripted(round_timeout_s=0.2)
        stuck = asyncio.create_task(positions.get("t", "customer"))  # never released
        await _settle()
        later = asyncio.create_task(positions.get("t", "customer"))
        with pytest.raises(consistency.PositionsUnavailable):
            await stuck
        await _settle()
        assert not later.done()  # its own round has started
        await positions.release.put(None)
        assert await later == (0, 0)

    run(scenario())


def test_closing_before_the_round_began_leaves_no_reader_waiting() -> None:
    async def scenario() -> None:
        positions = Scripted()
        reading = asyncio.create_task(positions.get("t", "customer"))
        await asyncio.sleep(0)  # the reader asked; its round's task has not run yet
        assert positions.rounds == []
        await positions.close()
        with pytest.raises(consistency.PositionsUnavailable):
            await reading

    run(scenario())
