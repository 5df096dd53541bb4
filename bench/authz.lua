-- wrk script of the portcullis-authz scenario: every request is GET /users/user-K/orders/N with user-K's
-- own token, K rotating over the 256 principals of bench/mint.py's es256.tokens and N random, so no
-- verdict could be cached per request line. Usage: wrk -s bench/authz.lua URL -- TOKENS_FILE
local tokens = {}
local n = 0

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
  math.randomseed(7)
end

function request()
  n = n + 1
  local k = n % #tokens
  local path = "/users/user-" .. k .. "/orders/" .. math.random(1, 1000000)
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. tokens[k + 1] })
end
