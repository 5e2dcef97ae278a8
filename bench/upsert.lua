-- wrk script for POST /runtime-snapshots/upsert (used by bench/run.py).
--
--   wrk -t1 -c32 -d10s -s bench/upsert.lua URL -- BASE ACCOUNTS TOKEN
--
-- Every request sends the API page's example body with
--   account_id       = account_user%09d of (sequence mod ACCOUNTS): accounts round-robin,
--   strategy_version = BASE + sequence,
-- where the sequence counts the requests of all wrk threads (thread t of n sends t, t+n, ...).
-- Versions therefore only grow: a request for an account carries a higher version than every
-- earlier request for that account (ACCOUNTS requests earlier), so every request takes the
-- applied path. bench/run.py passes a BASE above every version of its earlier wrk runs against
-- the same store. The response() hook counts answers that are not 200, and 200 answers
-- that are not "upserted" (which would mean a request took the stale path).
-- done() prints one line "BENCH_JSON {...}" for bench/run.py to read.

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
   sequence = 0
   non_200 = 0
   not_upserted = 0
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
   elseif not string.find(body, '"upserted"', 1, true) then
      not_upserted = not_upserted + 1
   end
end

function done(summary, latency, requests)
   local bad, stale = 0, 0
   for _, thread in ipairs(threads) do
      bad = bad + thread:get("non_200")
      stale = stale + thread:get("not_upserted")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"mean_us":%.1f,"non_200":%d,"not_upserted":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"timeouts":%d,"status_errors":%d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, latency.mean, bad, stale, e.connect, e.read,
      e.write, e.timeout, e.status))
end
