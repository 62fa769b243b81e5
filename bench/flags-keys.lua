-- wrk script: GET the URL (e.g. /api/v1/flags/) cycling X-Environment-Key
-- over the keys given after `--`, so every loaded environment is exercised.
--
--   wrk -t2 -c64 -d5s -s flags-keys.lua http://127.0.0.1:8000/api/v1/flags/ -- KEY1 KEY2 ...

local requests = {}
local n = 0
local i = 0

function init(args)
   for k = 1, #args do
      local headers = {}
      for h, v in pairs(wrk.headers) do headers[h] = v end
      headers["X-Environment-Key"] = args[k]
      requests[k] = wrk.format("GET", wrk.path, headers)
   end
   n = #args
   assert(n > 0, "usage: -- KEY1 [KEY2 ...]")
end

function request()
   i = i % n + 1
   return requests[i]
end
