-- wrk script of the portcullis-full scenario (and NGINX's plain proxying of the same load): every
-- request is POST /orders with a ~2 KiB JSON body and a bearer token, the body rotating over the
-- documents of bench/bodies.py and the token over the 256 principals of bench/mint.py, so no verdict
-- could be cached. Usage: wrk -s bench/full.lua URL -- DIR (holding bodies.jsonl and es256.tokens)
local tokens, bodies = {}, {}
local n = 0

function init(args)
  for line in io.lines(args[1] .. "/es256.tokens") do
    tokens[#tokens + 1] = line
  end
  for line in io.lines(args[1] .. "/bodies.jsonl") do
    bodies[#bodies + 1] = line
  end
end

function request()
  n = n + 1
  local body = bodies[(n % #bodies) + 1]
  local token = tokens[(n * 7 % #tokens) + 1]
  return wrk.format("POST", "/orders", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }, body)
end
