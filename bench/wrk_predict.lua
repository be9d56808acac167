-- wrk script for bench/serving.py: POSTs the given JPEG files in turn and prints one JSON summary line.
local bodies = {}
local next_index = 0

function init(args)
  for _, path in ipairs(args) do
    local file = assert(io.open(path, "rb"))
    bodies[#bodies + 1] = file:read("*all")
    file:close()
  end
end

function request()
  next_index = next_index % #bodies + 1
  return wrk.format("POST", nil, { ["Content-Type"] = "image/jpeg" }, bodies[next_index])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
