-- wrk script: identities-post.lua with flag analytics mixed in. Every
-- `every`-th request (default 100) is a POST /api/v1/analytics/flags/ with
-- five feature counts, as an SDK with analytics on sends; the others are
-- POST /api/v1/identities/ as in identities-post.lua.
--
--   wrk -t2 -c64 -d10s --latency -s identities-analytics.lua \
--       -H 'X-Environment-Key: KEY' -H 'Content-Type: application/json' \
--       http://127.0.0.1:8000/api/v1/identities/ -- identity-body.json [pool] [every]
--
-- done() prints "identity requests: N" and "analytics posts: M" (summed over
-- threads) so the identity throughput can be read apart from the analytics.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

local requests = {}
local analytics
local n, i, every = 0, 0, 100
identities, posts = 0, 0

function init(args)
   local path = args[1] or error("usage: -- IDENTITY_BODY.json [pool] [every]")
   local f = assert(io.open(path, "r"))
   local body = f:read("*a")
   f:close()
   local pool = tonumber(args[2] or "10000")
   every = tonumber(args[3] or "100")
   local pattern = '"identifier"%s*:%s*"[^"]*"'
   assert(body:find(pattern), path .. ": no \"identifier\" string")
   local headers = {}
   for k, v in pairs(wrk.headers) do headers[k] = v end
   headers["Content-Type"] = headers["Content-Type"] or "application/json"
   for k = 1, pool do
      local id = string.format("wrk_user_%d_%d", tid or 0, k)
      local b = body:gsub(pattern, '"identifier": "' .. id .. '"', 1)
      requests[k] = wrk.format("POST", wrk.path, headers, b)
   end
   headers["User-Agent"] = "flagsmith-nodejs-sdk/8.1.2"
   analytics = wrk.format("POST", "/api/v1/analytics/flags/", headers,
      '{"banner": 3, "dark_mode": 1, "checkout": 2, "search": 7, "onboarding": 1}')
   n = pool
end

function request()
   i = i + 1
   if i % every == 0 then
      posts = posts + 1
      return analytics
   end
   identities = identities + 1
   return requests[(i - 1) % n + 1]
end

function done(summary, latency, reqs)
   local ids, ps = 0, 0
   for _, t in ipairs(threads) do
      ids = ids + t:get("identities")
      ps = ps + t:get("posts")
   end
   io.write(string.format("identity requests: %d\nanalytics posts: %d\n", ids, ps))
end
