-- Cache a prediction that the refiner computed off the request path, only if it is still current.
-- KEYS[1] history   KEYS[2] cached prediction   KEYS[3] current model pointer
-- ARGV[1] the history the prediction was computed from (its exact bytes)
-- ARGV[2] the model version it was computed with   ARGV[3] the encoded prediction
-- ARGV[4] the prediction's TTL in seconds (save_prediction's)
-- Returns 1 if written, 0 if a newer watch or a newer model came first (nothing is written).
-- Why a script: between the refiner's read and this write, a watch can append to the history
-- and cache the table's answer for it; that answer must not be replaced by a refinement of the
-- older history. Checking and writing in one call leaves no gap for the watch to fall into.
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then
  return 0
end
if tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[4]))
return 1
