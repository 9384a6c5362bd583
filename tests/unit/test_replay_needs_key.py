"""A replay without the master key stops before it touches anything: it could not open the
customers' personal data, and would otherwise rebuild rows of sealed values."""

from __future__ import annotations

import pytest

from beeoclock.settings import Settings
from workers.replay import TARGETS, Replay, ReplayError


@pytest.mark.parametrize("checking", [False, True])
def test_a_replay_without_the_master_key_fails_before_connecting(checking: bool) -> None:
    # nothing listens on port 9: reaching the database would fail with another error
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:9/none", master_key="")
    replay = Replay(settings, TARGETS["customers"], progress=False, checking=checking)
    with pytest.raises(ReplayError, match="BEEOCLOCK_MASTER_KEY"):
        replay.check() if checking else replay.run()
