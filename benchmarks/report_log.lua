-- POST one operation log record per request, each with its own uuid (the gateway's accept rate).
-- The records are shaped like the adapter's: an "in" and a billed "out" record per operation, with
-- the same fields and about the same size, so that wrk and the adapter load the gateway alike.
-- Their uuids and request ids are random hex, as the adapter's are (uuid5 of a span, a trace id):
-- keys that grow in order would make the gateway's index inserts cheaper than the adapter's.
local counter = 0
local request_id = ""
math.randomseed(os.time())

local function hex(n)
  local digits = {}
  for i = 1, n do
    digits[i] = string.format("%x", math.random(0, 15))
  end
  return table.concat(digits)
end

request = function()
  counter = counter + 1
  local kind, extra = "in", ''
  if counter % 2 == 1 then
    request_id = hex(32)  -- one request id per operation: its in and out records
  else
    kind, extra = "out", string.format(',"response":%d', counter)
  end
  local uuid = hex(8) .. "-" .. hex(4) .. "-5" .. hex(3) .. "-" .. hex(4) .. "-" .. hex(12)
  local body = string.format(
    '{"uuid":"%s","requestId":"%s","callerId":"alice","requestUrl":"http://bench/v1/bill",' ..
    '"opLogType":"%s","opType":"bill","isCostLog":true,"operationStatus":"success",' ..
    '"startTimeMillis":1795453797476,"durationMillis":0,"request":{"i":%d},' ..
    '"extraInfo":{"traceId":"%s","spanId":"30123de49011f5d8",' ..
    '"service":"unknown_service:python"}%s}',
    uuid, request_id, kind, counter, request_id, extra)
  return wrk.format("POST", "/v1/openapi/report/log", {["Content-Type"] = "application/json"}, body)
end
