-- wrk script: POST an OFREP evaluation (bulk, or one flag when the URL names
-- it) with the traits of an identity body file as the evaluation context and
-- a targetingKey that changes on every request.
--
--   wrk -t2 -c64 -d10s --latency -s ofrep-post.lua -H 'X-Environment-Key: KEY' \
--       http://127.0.0.1:8000/ofrep/v1/evaluate/flags -- identity-body.json [pool]
--
-- The identity body is POST /api/v1/identities/'s ({"identifier", "traits":
-- [{"trait_key", "trait_value"}]}); its traits become context members
-- verbatim, so both endpoints evaluate the same identity. As in
-- identities-post.lua, each thread prebuilds `pool` (default 10000)
-- requests, targeting keys "wrk_user_<thread>_<n>".

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
   -- Each trait object becomes "key": value; values are copied as JSON text.
   local members = {}
   for key, value in body:gmatch('{%s*"trait_key"%s*:%s*("[^"]*")%s*,%s*"trait_value"%s*:%s*([^}]-)%s*}') do
      members[#members + 1] = key .. ": " .. value
   end
   assert(#members > 0, path .. ": no traits found")
   local traits = table.concat(members, ", ")
   local headers = {}
   for k, v in pairs(wrk.headers) do headers[k] = v end
   headers["Content-Type"] = headers["Content-Type"] or "application/json"
   for k = 1, pool do
      local id = string.format("wrk_user_%d_%d", tid or 0, k)
      local b = '{"context": {"targetingKey": "' .. id .. '", ' .. traits .. '}}'
      requests[k] = wrk.format("POST", wrk.path, headers, b)
   end
   n = pool
end

function request()
   i = i % n + 1
   return requests[i]
end
