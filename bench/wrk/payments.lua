-- wrk script for bench/realtime.py: POST payments (or the no-op endpoint) with a unique
-- Idempotency-Key per request and payer/payee ids chosen from a list the driver wrote.
--
--   wrk -t32 -c32 -d15s --timeout 30s -s bench/wrk/payments.lua URL -- IDS MIX NONCE [PATH] [AMOUNT]
--
-- With PAYLEDGER_BENCH_AUTHORIZATION set (e.g. "Bearer pl_live_..."), every request sends it.
--
-- IDS: a file of lines "payer UUID", "payee UUID", "merchant UUID", "hotpayer UUID".
-- MIX: uniform (random payer -> random payee), hot_merchant (every payment credits the merchant),
--      hot_payer (70% of payments debit the hot payer, the rest a random payer).
--
-- Run it with one connection per thread (-t N -c N): then every answer belongs to the thread's
-- last request, so the script knows exactly which requests got no answer when wrk stopped (or
-- lost a connection) and prints them; the driver replays them with the same key and body, which
-- makes the balance check after the run exact.
--
-- At the end it prints one line "WRKJSON {...}" with counters and latency percentiles (us).

local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local payers, payees = {}, {}
local merchant, hotpayer = nil, nil
local mix, nonce, path, amount = "uniform", "x", "/v1/payments", "1.00"
local counter = 0
local BODY = '{"amount":"%s","currency":"CNY","channel":"internal",'
          .. '"payer_account_id":"%s","payee_account_id":"%s"}'

-- per-thread counters (read by done() through thread:get)
ok, ok_merchant, ok_hotpayer, failed, other2xx, non2xx = 0, 0, 0, 0, 0, 0
sent = 0
pending = nil      -- "KEY PAYER PAYEE" of the request awaiting its answer
orphans = {}       -- requests whose connection was reset (or verified) before an answer
statuses = {}
local pending_merchant, pending_hotpayer = false, false

function init(args)
  local f = assert(io.open(args[1], "r"), "cannot open ids file " .. tostring(args[1]))
  for line in f:lines() do
    local kind, id = line:match("^(%S+)%s+(%S+)$")
    if kind == "payer" then table.insert(payers, id)
    elseif kind == "payee" then table.insert(payees, id)
    elseif kind == "merchant" then merchant = id
    elseif kind == "hotpayer" then hotpayer = id end
  end
  f:close()
  mix = args[2] or mix
  nonce = args[3] or nonce
  path = args[4] or path
  amount = args[5] or amount
  math.randomseed(tid * 7919 + os.time())
  wrk.method = "POST"
  wrk.path = path
  wrk.headers["Content-Type"] = "application/json"
  -- An API key for every request (bench/auth_overhead.py), when the driver gives one.
  local authorization = os.getenv("PAYLEDGER_BENCH_AUTHORIZATION")
  if authorization ~= nil and authorization ~= "" then
    wrk.headers["Authorization"] = authorization
  end
end

function request()
  if pending ~= nil then
    table.insert(orphans, pending)
  end
  counter = counter + 1
  local payer, payee
  local is_hot = false
  if mix == "hot_payer" and math.random() < 0.7 then
    payer = hotpayer
    is_hot = true
  else
    payer = payers[math.random(#payers)]
  end
  if mix == "hot_merchant" then
    payee = merchant
  else
    payee = payees[math.random(#payees)]
  end
  local key = nonce .. "-" .. tid .. "-" .. counter
  pending = key .. " " .. payer .. " " .. payee
  pending_merchant = (payee == merchant)
  pending_hotpayer = is_hot
  sent = sent + 1
  wrk.headers["Idempotency-Key"] = key
  return wrk.format(nil, nil, nil, string.format(BODY, amount, payer, payee))
end

function response(status, headers, body)
  local was_merchant, was_hot = pending_merchant, pending_hotpayer
  pending = nil
  pending_merchant, pending_hotpayer = false, false
  statuses[status] = (statuses[status] or 0) + 1
  if status == 201 and body:find('"status"%s*:%s*"succeeded"') then
    ok = ok + 1
    if was_merchant then ok_merchant = ok_merchant + 1 end
    if was_hot then ok_hotpayer = ok_hotpayer + 1 end
  elseif status >= 200 and status < 300 then
    if body:find('"status"%s*:%s*"failed"') then failed = failed + 1
    else other2xx = other2xx + 1 end
  else
    non2xx = non2xx + 1
  end
end

local function list(t)
  local parts = {}
  for _, v in ipairs(t) do table.insert(parts, '"' .. v .. '"') end
  return "[" .. table.concat(parts, ",") .. "]"
end

function done(summary, latency, requests)
  local c = {ok = 0, ok_merchant = 0, ok_hotpayer = 0, failed = 0, other2xx = 0, non2xx = 0, sent = 0}
  local unanswered = {}
  local st = {}
  for _, t in ipairs(threads) do
    for k, _ in pairs(c) do c[k] = c[k] + (t:get(k) or 0) end
    local p = t:get("pending")
    if p ~= nil then table.insert(unanswered, p) end
    for _, o in ipairs(t:get("orphans") or {}) do table.insert(unanswered, o) end
    for s, n in pairs(t:get("statuses") or {}) do st[s] = (st[s] or 0) + n end
  end
  local sparts = {}
  for s, n in pairs(st) do table.insert(sparts, string.format('"%d":%d', s, n)) end
  local e = summary.errors
  local out = string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
    .. '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,'
    .. '"p50":%d,"p75":%d,"p90":%d,"p95":%d,"p99":%d,"p999":%d},'
    .. '"ok":%d,"ok_merchant":%d,"ok_hotpayer":%d,"failed":%d,"other2xx":%d,"non2xx":%d,'
    .. '"sent":%d,"statuses":{%s},"unanswered":%s}',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency:percentile(99.9),
    c.ok, c.ok_merchant, c.ok_hotpayer, c.failed, c.other2xx, c.non2xx, c.sent,
    table.concat(sparts, ","), list(unanswered))
  io.write("WRKJSON " .. out .. "\n")
end
