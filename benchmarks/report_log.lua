-- POST one operation log record per request, each with its own uuid (the gateway's accept rate).
-- The records are shaped like the adapter's: an "in" and a billed "out" record per operation, with
-- the same fields and about the same size, so that wrk and the adapter load the gateway alike.
local counter = 0
math.randomseed(os.time())
local run = math.random(1, 1000000000)
request = function()
  counter = counter + 1
  local kind, extra = "in", ''
  if counter % 2 == 0 then
    kind, extra = "out", string.format(',"response":%d', counter)
  end
  local body = string.format(
    '{"uuid":"wrk-%d-%d","requestId":"wrk-bench","callerId":"alice","requestUrl":"http://bench/v1/bill",' ..
    '"opLogType":"%s","opType":"bill","isCostLog":true,"operationStatus":"success",' ..
    '"startTimeMillis":1795453797476,"durationMillis":0,"request":{"i":%d},' ..
    '"extraInfo":{"traceId":"454abc10f0c23351ca1339f08101e6ba","spanId":"30123de49011f5d8",' ..
    '"service":"unknown_service:python"}%s}',
    run, counter, kind, counter, extra)
  return wrk.format("POST", "/v1/openapi/report/log", {["Content-Type"] = "application/json"}, body)
end
