-- wrk script: GET /api/v1/identities/?identifier=<varying>.
--
--   wrk -t2 -c64 -d10s --latency -s identities-get.lua \
--       -H 'X-Environment-Key: KEY' http://127.0.0.1:8000/api/v1/identities/ -- [pool]
--
-- Each thread prebuilds `pool` (default 10000) requests, identifiers
-- "wrk_user_<thread>_<n>", and cycles through them.

local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
end

local requests = {}
local n = 0
local i = 0

function init(args)
   local pool = tonumber(args[1] or "10000")
   local sep = wrk.path:find("?", 1, true) and "&" or "?"
   for k = 1, pool do
      local path = string.format("%s%sidentifier=wrk_user_%d_%d", wrk.path, sep, tid or 0, k)
      requests[k] = wrk.format("GET", path)
   end
   n = pool
end

function request()
   i = i % n + 1
   return requests[i]
end
