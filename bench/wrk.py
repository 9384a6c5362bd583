"""`wrk` (closed loop, C, epoll) driven by a generated Lua script: the same request specs as
bench/httpload.py, with unique customer bodies made in Lua by the formulas of bench/data.py.
The script counts every HTTP status and prints one JSON line when done."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from bench import data

MARK = "BENCH_JSON "


def available() -> str | None:
    return shutil.which("wrk")


def version() -> str:
    exe = available()
    if not exe:
        return "not installed"
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return (
        (done.stdout or done.stderr).splitlines()[0].strip() if done.stdout or done.stderr else ""
    )


def _lua_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid Lua string here


def _lua_headers(headers: dict[str, str]) -> str:
    return (
        "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()) + "}"
    )


_COMMON = r"""
local threads = {}
local next_index = 0

function setup(thread)
  thread:set("tindex", next_index)
  next_index = next_index + 1
  table.insert(threads, thread)
end

statuses = {}

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then
      for k, v in pairs(s) do merged[k] = (merged[k] or 0) + v end
    end
  end
  local parts = {}
  for k, v in pairs(merged) do table.insert(parts, string.format('"%d":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"statuses":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"mean_us":%f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, table.concat(parts, ","),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""

_CYCLE = r"""
local reqs = {}
local i = 0
function init(args)
  for _, item in ipairs(items) do
    table.insert(reqs, wrk.format(item[1], item[2], item[3], item[4]))
  end
  i = tindex * 7919
end
function request()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end
"""

_CUSTOMER = r"""
local n = 0
local prefixes = {PREFIXES}
local firsts = {FIRSTS}
local lasts = {LASTS}
function init(args)
  n = cfg.base + tindex * cfg.stride
end
local function q(s)
  return '"' .. s .. '"'
end
function request()
  local k = n
  n = n + 1
  local t = tenants[(k % #tenants) + 1]
  local p = k % PHONE_SPACE
  local digits = prefixes[math.floor(p / 10000000) + 1] .. string.format("%07d", p % 10000000)
  local phone = "+48 " .. digits:sub(1, 3) .. " " .. digits:sub(4, 6) .. " " .. digits:sub(7, 9)
  local body = "{" ..
    q("_id") .. ":" .. q(cfg.tag .. string.format("%014x", k)) .. "," ..
    q("firstName") .. ":" .. q(firsts[(k % #firsts) + 1]) .. "," ..
    q("lastName") .. ":" .. q(lasts[(math.floor(k / #firsts) % #lasts) + 1]) .. "," ..
    q("email") .. ":" ..
      q("c" .. string.format("%d", k) .. "." .. cfg.tag .. "@" .. cfg.domain) .. "," ..
    q("phone") .. ":" .. q(phone) .. "}"
  local headers = {
    ["Authorization"] = "Bearer " .. t[2],
    ["x-business-tenant-id"] = t[1],
    ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", cfg.path, headers, body)
end
"""


def _lua_list(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(_lua_string(v) for v in values)


def script(spec: dict[str, Any]) -> str:
    req = spec["requests"]
    if req["kind"] == "cycle":
        items = ",\n".join(
            "{"
            + ", ".join(
                [
                    _lua_string(m),
                    _lua_string(p),
                    _lua_headers(h),
                    _lua_string(b) if b is not None else "nil",
                ]
            )
            + "}"
            for m, p, h, b in req["items"]
        )
        return f"items = {{\n{items}\n}}\n" + _CYCLE + _COMMON
    tenants = ",\n".join(f"{{{_lua_string(t)}, {_lua_string(k)}}}" for t, k in req["tenants"])
    cfg = (
        f"cfg = {{base = {int(req['base'])}, stride = {int(req['stride'])}, "
        f"tag = {_lua_string(req['tag'])}, domain = {_lua_string(data.EMAIL_DOMAIN)}, "
        f"path = {_lua_string(req.get('path', '/api/v1/customer'))}}}\n"
    )
    body = (
        _CUSTOMER.replace("{PREFIXES}", "{" + _lua_list(data.PHONE_PREFIXES) + "}")
        .replace("{FIRSTS}", "{" + _lua_list(data.FIRST_NAMES) + "}")
        .replace("{LASTS}", "{" + _lua_list(data.LAST_NAMES) + "}")
        .replace("PHONE_SPACE", str(data.PHONE_SPACE))
    )
    return f"tenants = {{\n{tenants}\n}}\n" + cfg + body + _COMMON


def run(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    exe = available()
    if exe is None:
        msg = "wrk is not installed"
        raise RuntimeError(msg)
    lua = workdir / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    lua.write_text(script(spec))
    threads = max(1, min(spec.get("threads", 2), spec["connections"]))
    duration = max(1, round(spec["duration_s"]))
    args = [
        exe,
        "-t",
        str(threads),
        "-c",
        str(spec["connections"]),
        "-d",
        f"{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        f"http://{spec['host']}:{spec['port']}/",
    ]
    warmup = spec.get("warmup_s", 0)
    if warmup >= 1:
        # its own customers: the upper half of each connection's block of sequence numbers
        warm_spec = json.loads(json.dumps(spec))
        if warm_spec["requests"]["kind"] == "customer":
            warm_spec["requests"]["base"] += warm_spec["requests"]["stride"] // 2
        warm_lua = workdir / f"wrk-{uuid.uuid4().hex[:8]}.lua"
        warm_lua.write_text(script(warm_spec))
        warm = [*args[:6], f"{round(warmup)}s", *args[7:-2], str(warm_lua), args[-1]]
        subprocess.run(warm, capture_output=True, text=True, timeout=warmup + 30, check=False)
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith(MARK)), None)
    if done.returncode != 0 or line is None:
        msg = f"wrk failed ({done.returncode}): {done.stderr.strip()[:500]} {done.stdout[-500:]}"
        raise RuntimeError(msg)
    raw = json.loads(line[len(MARK) :])
    seconds = raw["duration_us"] / 1e6
    ok = sum(c for s, c in raw["statuses"].items() if s.startswith("2"))
    counted = sum(raw["statuses"].values())
    return {
        "generator": "wrk",
        "connections": spec["connections"],
        "threads": threads,
        "duration_s": round(seconds, 3),
        "requests": counted,
        "rps": round(counted / seconds, 1),
        "ok_rps": round(ok / seconds, 1),
        "statuses": dict(sorted(raw["statuses"].items())),
        "errors": {k: v for k, v in raw["errors"].items() if v and k != "status"},
        "count": counted,
        "mean_ms": round(raw["mean_us"] / 1000, 3),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "p999_ms": raw["p999_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
    }
