-- POST operation log records, each with its own uuid (the gateway's accept rate): one a request to
-- /v1/openapi/report/log, or, with a count after wrk's "--", that many a request to
-- /v1/openapi/report/logs (the batch endpoint).
-- The records are shaped like the adapter's: an "in" and a billed "out" record per operation, with
-- the same fields and about the same size, so that wrk and the adapter load the gateway alike.
-- Their uuids and request ids are random hex, as the adapter's are (uuid5 of a span, a trace id):
-- keys that grow in order would make the gateway's index inserts cheaper than the adapter's.
local counter = 0
local request_id = ""
local batch = nil
math.randomseed(os.time())

init = function(args)
  batch = tonumber(args[1])
end

local function hex(n)
  local digits = {}
  for i = 1, n do
    digits[i] = string.format("%x", math.random(0, 15))
  end
  return table.concat(digits)
end

local function record()
  counter = counter + 1
  local kind, extra = "in", ''
  if counter % 2 == 1 then
    request_id = hex(32)  -- one request id per operation: its in and out records
  else
    kind, extra = "out", string.format(',"response":%d', counter)
  end
  local uuid = hex(8) .. "-" .. hex(4) .. "-5" .. hex(3) .. "-" .. hex(4) .. "-" .. hex(12)
  return string.format(
    '{"uuid":"%s","requestId":"%s","callerId":"alice","requestUrl":"http://bench/v1/bill",' ..
    '"opLogType":"%s","opType":"bill","isCostLog":true,"operationStatus":"success",' ..
    '"startTimeMillis":1795453797476,"durationMillis":0,"request":{"i":%d},' ..
    '"extraInfo":{"traceId":"%s","spanId":"30123de49011f5d8",' ..
    '"service":"unknown_service:python"}%s}',
    uuid, request_id, kind, counter, request_id, extra)
end

request = function()
  local headers = {["Content-Type"] = "application/json"}
  if batch == nil then
    return wrk.format("POST", "/v1/openapi/report/log", headers, record())
  end
  local records = {}
  for i = 1, batch do
    records[i] = record()
  end
  return wrk.format("POST", "/v1/openapi/report/logs", headers, "[" .. table.concat(records, ",") .. "]")
end
