-- Take one token from an API key's token bucket, in one round trip.
-- KEYS[1] the key's bucket (hash: tokens, ts)
-- ARGV[1] rate (tokens added per second)   ARGV[2] burst (tokens the bucket holds)
-- Returns {1, '0'} when a token was taken, else {0, seconds until one is available}.
-- The clock is Redis's own, so every worker and replica fills the bucket at the same pace.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local taken, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
-- A bucket left alone this long is full again: letting it expire changes nothing.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {taken, tostring(wait)}
