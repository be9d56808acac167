-- wrk script for bench/orchestrator.py: POSTs triggers on a fixed schedule (an open loop at a constant
-- offered rate, not wrk's usual closed loop) and prints one JSON summary line.
-- Script args: rate_per_s max_requests part_id_prefix. The API key comes from BENCH_API_KEY (never argv).
-- Each connection claims the next slot of one shared schedule when it is free, so a slow answer on one
-- connection does not delay the others; a slot taken late is counted (the generator fell behind).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local interval_ms, limit, prefix, headers
local next_due = nil
local threads = {}

-- Per-thread counters, read back by done() through thread:get().
scheduled, accepted, refused, other, late, late_max_ms = 0, 0, 0, 0, 0, 0

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  interval_ms = 1000 / tonumber(args[1])
  limit = tonumber(args[2])
  prefix = args[3]
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. assert(os.getenv("BENCH_API_KEY"), "BENCH_API_KEY is not set"),
  }
end

function delay()
  local now = now_ms()
  if next_due == nil then next_due = now end
  if scheduled >= limit then return 3600 * 1000 end -- done: idle until wrk's duration ends
  local due = next_due
  next_due = next_due + interval_ms
  scheduled = scheduled + 1
  local wait = due - now
  if wait < 0 then
    if -wait > late_max_ms then late_max_ms = -wait end
    if -wait > 5 then late = late + 1 end
    return 0
  end
  return math.floor(wait)
end

function request()
  return wrk.format("POST", nil, headers, string.format('{"part_id": "%s-%d"}', prefix, scheduled))
end

function response(status, headers, body)
  if status == 202 then
    accepted = accepted + 1
  elseif status == 429 then
    refused = refused + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local totals = { scheduled = 0, accepted = 0, refused = 0, other = 0, late = 0, late_max_ms = 0 }
  for _, thread in ipairs(threads) do
    for name, value in pairs(totals) do
      local v = thread:get(name)
      if name == "late_max_ms" then totals[name] = math.max(value, v) else totals[name] = value + v end
    end
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, "scheduled": %d, '
      .. '"accepted": %d, "refused": %d, "other_status": %d, "late_slots": %d, "late_max_ms": %.1f, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    totals.scheduled, totals.accepted, totals.refused, totals.other, totals.late, totals.late_max_ms,
    e.connect, e.read, e.write, e.status, e.timeout))
end
