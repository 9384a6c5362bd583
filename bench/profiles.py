"""Sizes and durations of a run: `full` (`make bench`) and `smoke` (`make bench-smoke`, every
scenario at a tiny size, in CI)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Profile:
    name: str
    warmup_s: float
    # 1. writes
    write_clients: tuple[int, ...]
    write_duration_s: float
    # 2. write -> read lag
    lag_rates: tuple[int, ...]
    lag_duration_s: float
    lag_drain_s: float
    # 3. reads
    read_connections: tuple[int, ...]
    read_duration_s: float
    read_customers: int
    redis_requests: int
    # 4 + 6. replay and growth: event-store sizes (events), tenants, deep page
    growth_levels: tuple[int, ...]
    growth_tenants: int
    growth_big_share: float
    growth_write_clients: int
    growth_write_duration_s: float
    growth_read_connections: int
    growth_read_duration_s: float
    growth_lag_rate: int
    growth_lag_duration_s: float
    deep_rows: int
    raw_read_max_s: float
    rebuild_max_s: float
    replay_timeout_s: float
    catch_up_timeout_s: float
    # bounds: each scenario is stopped after this long (seconds)
    scenario_timeout_s: float
    python_processes: int


FULL = Profile(
    name="full",
    warmup_s=2.0,
    write_clients=(1, 8, 32),
    write_duration_s=20.0,
    lag_rates=(100, 500, 1000),
    lag_duration_s=30.0,
    lag_drain_s=15.0,
    # 8 and 16 between the 4 and 32: the throughput-latency curve, where concurrent
    # reads share their position checks while the closed loop's queueing stays short
    read_connections=(4, 8, 16, 32),
    read_duration_s=12.0,
    read_customers=10_000,
    redis_requests=200_000,
    # up to 1M events, where the growth ends (the development broker, tansu with
    # memory storage, holds it since the relay sends 256 KB batches: 411 MiB, and the
    # projector kept up with the seeding; before, it stalled past about 600 MB)
    growth_levels=(10_000, 100_000, 1_000_000),
    growth_tenants=1000,
    # the big tenant passes 100k customers (the phrase target's size) by a 450k-event store
    # (266,666 of the 333,333 customers at 1M)
    growth_big_share=0.8,
    growth_write_clients=8,
    growth_write_duration_s=10.0,
    growth_read_connections=4,
    growth_read_duration_s=6.0,
    growth_lag_rate=500,
    growth_lag_duration_s=15.0,
    deep_rows=100_000,
    raw_read_max_s=120.0,
    rebuild_max_s=60.0,
    replay_timeout_s=600.0,
    catch_up_timeout_s=900.0,
    scenario_timeout_s=1800.0,
    python_processes=2,
)

SMOKE = Profile(
    name="smoke",
    warmup_s=0.3,
    write_clients=(1, 8, 32),
    write_duration_s=1.0,
    lag_rates=(20, 50, 100),
    lag_duration_s=1.5,
    lag_drain_s=8.0,
    read_connections=(4, 32),
    read_duration_s=1.0,
    read_customers=200,
    redis_requests=5_000,
    growth_levels=(600, 2_400),
    growth_tenants=20,
    growth_big_share=0.5,
    growth_write_clients=8,
    growth_write_duration_s=1.0,
    growth_read_connections=4,
    growth_read_duration_s=0.7,
    growth_lag_rate=50,
    growth_lag_duration_s=1.5,
    deep_rows=300,
    raw_read_max_s=10.0,
    rebuild_max_s=10.0,
    replay_timeout_s=60.0,
    catch_up_timeout_s=60.0,
    scenario_timeout_s=150.0,
    python_processes=1,
)


def with_overrides(
    profile: Profile, duration_s: float | None = None, levels: tuple[int, ...] | None = None
) -> Profile:
    """`--duration` scales every measuring window to it; `--levels` replaces growth sizes."""
    if duration_s is not None:
        profile = replace(
            profile,
            write_duration_s=duration_s,
            lag_duration_s=duration_s,
            read_duration_s=duration_s,
            growth_write_duration_s=duration_s,
            growth_read_duration_s=duration_s,
            growth_lag_duration_s=duration_s,
        )
    if levels:
        profile = replace(profile, growth_levels=levels)
    return profile
