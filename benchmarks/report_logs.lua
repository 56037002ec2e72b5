-- POST batches of 500 records to /v1/openapi/report/logs (the gateway's accept rate for batches).
-- The records are report_log.lua's: shaped like the adapter's, random uuids and request ids.
local BATCH = 500
local counter = 0
math.randomseed(os.time())

local function hex(n)
  local digits = {}
  for i = 1, n do
    digits[i] = string.format("%x", math.random(0, 15))
  end
  return table.concat(digits)
end

request = function()
  local records = {}
  local request_id = ""
  for i = 1, BATCH do
    counter = counter + 1
    local kind, extra = "in", ''
    if counter % 2 == 1 then
      request_id = hex(32)
    else
      kind, extra = "out", string.format(',"response":%d', counter)
    end
    local uuid = hex(8) .. "-" .. hex(4) .. "-5" .. hex(3) .. "-" .. hex(4) .. "-" .. hex(12)
    records[i] = string.format(
      '{"uuid":"%s","requestId":"%s","callerId":"alice","requestUrl":"http://bench/v1/bill",' ..
      '"opLogType":"%s","opType":"bill","isCostLog":true,"operationStatus":"success",' ..
      '"startTimeMillis":1795453797476,"durationMillis":0,"request":{"i":%d},' ..
      '"extraInfo":{"traceId":"%s","spanId":"30123de49011f5d8",' ..
      '"service":"unknown_service:python"}%s}',
      uuid, request_id, kind, counter, request_id, extra)
  end
  local body = "[" .. table.concat(records, ",") .. "]"
  return wrk.format("POST", "/v1/openapi/report/logs", {["Content-Type"] = "application/json"}, body)
end
