-- Cache a prediction in a user's state, only while it is still about that user's history.
-- KEYS[1] the user's state (user_state.lua)
-- ARGV[1] the history codes the prediction was computed from (their exact bytes)
-- ARGV[2] the encoded prediction (uint32 stamp, uint32 codes)
-- ARGV[3] '1': only if no prediction is cached (after a watch, which dropped it: one that is
--         there now was written since, for this same history or a newer watch)
-- Returns 1 if written, 0 if the history changed (a newer watch came first) or one was there.
-- Why a script: the history and its prediction share one key (one key a user, not two, saves
-- about 100 bytes of Redis memory per user), so caching is a check and a rewrite, atomically.
local state = redis.call('GET', KEYS[1])
if not state then
  return 0
end
local history, impressions, cached = read_state(state)
if history ~= ARGV[1] then
  return 0
end
if ARGV[3] == '1' and #cached > 0 then
  return 0
end
redis.call('SET', KEYS[1], write_state(history, impressions, ARGV[2]))
return 1
