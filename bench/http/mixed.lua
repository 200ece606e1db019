-- wrk script: POST /v1/forward with token-id requests of mixed lengths, bounded in requests.
--   wrk -t2 -c4 -d20s -s bench/http/mixed.lua http://127.0.0.1:PORT -- MAX_LENGTH VOCAB PER_THREAD SEED
-- Lengths are uniform in 1..MAX_LENGTH and ids in 1..VOCAB-1, drawn from SEED and the thread's
-- number (the same arguments give every run the same requests). Each thread stops after
-- PER_THREAD answers (0: no bound); wrk's -d bounds the time. done() prints one line:
--   wrk-summary requests=N errors=E non2xx=X p50_ms=.. p99_ms=.. seconds=..
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

local bodies = {}
local next_body = 1
local answered = 0
local limit = 0

function init(args)
  local max_length = tonumber(args[1] or "64")
  local vocab = tonumber(args[2] or "100")
  limit = tonumber(args[3] or "0")
  local seed = tonumber(args[4] or "1")
  math.randomseed(seed * 1000 + id)
  for i = 1, 512 do
    local n = math.random(1, max_length)
    local ids = {}
    for t = 1, n do ids[t] = tostring(math.random(1, vocab - 1)) end
    bodies[i] = '{"ids":[' .. table.concat(ids, ",") .. '],"return":"summary"}'
  end
end

function request()
  local body = bodies[next_body]
  next_body = next_body % #bodies + 1
  return wrk.format("POST", "/v1/forward", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  answered = answered + 1
  if limit > 0 and answered >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  io.write(string.format(
    "wrk-summary requests=%d errors=%d non2xx=%d p50_ms=%.3f p99_ms=%.3f seconds=%.3f\n",
    summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.duration / 1e6))
end
