-- POST JSON with the demo token; every request's body is the same small chat payload.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer demo-alice"
wrk.body = '{"prompt": "hello gateway", "temperature": 0.5}'
