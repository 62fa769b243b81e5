-- wrk script: POST /api/v1/identities/ with the traits of an identity body
-- file and an identifier that changes on every request.
--
--   wrk -t2 -c64 -d10s --latency -s identities-post.lua \
--       -H 'X-Environment-Key: KEY' -H 'Content-Type: application/json' \
--       http://127.0.0.1:8000/api/v1/identities/ -- identity-body.json [pool]
--
-- Each thread prebuilds `pool` (default 10000) requests, identifiers
-- "wrk_user_<thread>_<n>", and cycles through them, so the load generator
-- spends no time formatting JSON during the run (it shares the cores with the
-- server) while consecutive requests still carry distinct identities.

local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
end

local requests = {}
local n = 0
local i = 0

function init(args)
   local path = args[1] or error("usage: -- IDENTITY_BODY.json [pool]")
   local f = assert(io.open(path, "r"))
   local body = f:read("*a")
   f:close()
   local pool = tonumber(args[2] or "10000")
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
   n = pool
end

function request()
   i = i % n + 1
   return requests[i]
end
