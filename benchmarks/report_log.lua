-- POST one operation log record per request, each with its own uuid (the gateway's accept rate).
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"uuid":"wrk-%d-%d","requestId":"wrk-bench","callerId":"alice","requestUrl":"/x","opLogType":"out",' ..
    '"opType":"bench","isCostLog":false,"operationStatus":"success","startTimeMillis":1,"durationMillis":1,' ..
    '"request":{"i":%d}}', math.random(1, 1000000000), counter, counter)
  return wrk.format("POST", "/v1/openapi/report/log", {["Content-Type"] = "application/json"}, body)
end
