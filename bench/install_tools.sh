#!/usr/bin/env bash
# Best effort, for the full run only: wrk (the closed-loop load generator) and redis-benchmark
# (the Redis baseline) from Debian's archive, when missing and when we may install them. Without
# them the bench still runs: the pure-Python load generator takes wrk's place, and the Redis
# baseline is skipped (both noted in RESULTS.md).
set -u
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bench: ${missing[*]} missing (install them for the real figures)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; } \
    || echo "bench: could not install ${missing[*]}; going on without" >&2
exit 0
