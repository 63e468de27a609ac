-- Replays a plan file for wrk: one request per line, tab-separated
--   METHOD  PATH  TOKEN  IDEMPOTENCY-KEY  BODY
-- (empty fields are "-"). Thread t of n sends lines t, t+n, t+2n, ... so no two connections
-- send the same line. A line sent again after the plan wrapped gets its key suffixed, so a
-- keyed request stays a new request. done() prints one JSON line: requests, seconds, latency
-- percentiles (microseconds), errors and the count of each status code.

local plan_path = os.getenv("WRK_PLAN")
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  lines = {}
  for line in io.lines(plan_path) do
    local method, path, token, key, body = line:match("^(%S+)\t(%S+)\t(%S+)\t(%S+)\t(.+)$")
    table.insert(lines, { method, path, token, key, body })
  end
  step = tonumber(os.getenv("WRK_THREADS") or "1")
  next_line = tid
  statuses = {}
end

function request()
  local index = ((next_line - 1) % #lines) + 1
  local lap = math.floor((next_line - 1) / #lines)
  next_line = next_line + step
  local method, path, token, key, body = unpack(lines[index])
  local headers = {}
  if token ~= "-" then
    headers["Authorization"] = "Token " .. token
  end
  if key ~= "-" then
    headers["Idempotency-Key"] = lap == 0 and key or (key .. "-" .. lap)
  end
  if body ~= "-" then
    headers["Content-Type"] = "application/json"
  else
    body = nil
  end
  return wrk.format(method, path, headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK-RESULT {"requests": %d, "seconds": %.3f, "p50_us": %d, "p99_us": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, '
      .. '"statuses": {%s}}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, table.concat(parts, ", ")))
end
