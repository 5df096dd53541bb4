-- wrk script of the portcullis-events and portcullis-events-off scenarios: GET / with the API key, except
-- every 10th request, which has none and is refused (401), so that authentication failures, and with
-- them security events and audit records, are produced at a tenth of the request rate.
-- Usage: wrk -s bench/events.lua URL -- API_KEY
local key
local n = 0

function init(args)
  key = args[1]
end

function request()
  n = n + 1
  if n % 10 == 0 then
    return wrk.format("GET", "/", {})
  end
  return wrk.format("GET", "/", { ["X-API-Key"] = key })
end
