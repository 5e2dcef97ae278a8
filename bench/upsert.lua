-- wrk script for POST /runtime-snapshots/upsert (used by bench/run.py).
--
--   wrk -t1 -c32 -d10s -s bench/upsert.lua URL -- BASE ACCOUNTS TOKEN THREADS EXPECT
--
-- Every request sends the API page's example body with
--   account_id       = account_user%09d of (sequence mod ACCOUNTS): accounts round-robin,
--   strategy_version = BASE + sequence,
-- where the sequence counts the requests of all wrk threads (thread t of n sends t, t+n, ...).
-- Versions therefore only grow: a request for an account carries a higher version than every
-- earlier request for that account (ACCOUNTS requests earlier).
--   EXPECT = upserted (the applied load): bench/run.py passes a BASE above every version of
--     its earlier wrk runs against the same store, so every request is applied.
--   EXPECT = ignored_stale (the stale load): bench/run.py has first stored every account's
--     snapshot with a version far above any BASE + sequence, so every request is ignored.
-- The response() hook counts answers that are not 200, and 200 answers whose status is not
-- EXPECT ("unexpected": in the applied load, a request overtaken by a later one for its
-- account). done() prints one line "BENCH_JSON {...}" for bench/run.py to read.

local threads = {}

function setup(thread)
   thread:set("thread_id", #threads)
   table.insert(threads, thread)
end

function init(args)
   base = tonumber(args[1] or "1000000000")
   accounts = tonumber(args[2] or "1000")
   local token = args[3] or "bench-token"
   thread_count = tonumber(args[4] or "1")
   expected = '"' .. (args[5] or "upserted") .. '"'
   sequence = 0
   non_200 = 0
   unexpected = 0
   headers = {
      ["Authorization"] = "Bearer " .. token,
      ["Content-Type"] = "application/json",
   }
   head = '{"account_id":"account_user'
   middle = '","ugc_account_id":"ugc_123","snapshot_id":"snapshot-2026-03-22-001",'
      .. '"strategy_version":'
   tail = ',"content_hash":"sha256:abc123","strategy_synced_at":"2026-03-22T08:30:00.000Z",'
      .. '"stage":"warmup","active_action":"keyword_warmup",'
      .. '"active_skills":["warmup","commenting"],'
      .. '"personality":{"comment_style":"casual, validating",'
      .. '"interests":["healthy recipes","meal prep"]}}'
end

function request()
   local s = sequence * thread_count + thread_id
   sequence = sequence + 1
   local body = head .. string.format("%09d", s % accounts) .. middle
      .. string.format("%.0f", base + s) .. tail
   return wrk.format("POST", nil, headers, body)
end

function response(status, response_headers, body)
   if status ~= 200 then
      non_200 = non_200 + 1
   elseif not string.find(body, expected, 1, true) then
      unexpected = unexpected + 1
   end
end

function done(summary, latency, requests)
   local bad, other = 0, 0
   for _, thread in ipairs(threads) do
      bad = bad + thread:get("non_200")
      other = other + thread:get("unexpected")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"mean_us":%.1f,"non_200":%d,"unexpected":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"timeouts":%d,"status_errors":%d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, latency.mean, bad, other, e.connect, e.read,
      e.write, e.timeout, e.status))
end
