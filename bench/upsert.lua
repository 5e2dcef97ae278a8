-- wrk -t1 -c32 -d10s -s bench/upsert.lua URL -- BASE ACCOUNTS TOKEN THREADS EXPECT
--
-- Each request is the API page's example body for account_user%09d of (sequence mod
-- ACCOUNTS), with strategy_version = BASE + sequence (over all threads): versions only grow.
-- response() counts answers that are not 200, and 200s whose status is not EXPECT
-- (upserted, or ignored_stale when every account was stored first at a higher version);
-- done() prints one line "BENCH_JSON {...}" for python -m bench.

local threads = {}

function setup(thread)
   thread:set("thread_id", #threads)
   table.insert(threads, thread)
end

function init(args)
   base, accounts = tonumber(args[1]), tonumber(args[2])
   thread_count, expected = tonumber(args[4]), '"' .. args[5] .. '"'
   sequence, non_200, unexpected = 0, 0, 0
   headers = {["Authorization"] = "Bearer " .. args[3], ["Content-Type"] = "application/json"}
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
      'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non_200":%d,'
      .. '"unexpected":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,'
      .. '"timeouts":%d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      bad, other, e.connect, e.read, e.write, e.timeout))
end
