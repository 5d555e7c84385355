-- Record one watch event for one user, atomically, in one round trip.
-- KEYS[1] the user's state   KEYS[2] the event log stream of the user's shard
-- KEYS[3] event-id answer key (only read/written if ARGV[6] ~= '')
-- Every key carries the user's shard tag: one hash slot, so this runs on one Redis Cluster node.
-- ARGV[1] title code as 4 little-endian bytes   ARGV[2] history cap in codes
-- ARGV[3] user id   ARGV[4] content id   ARGV[5] timestamp (unix seconds)
-- ARGV[6] event id or ''   ARGV[7] event-id TTL seconds   ARGV[8] event log cap (approximate)
-- ARGV[9] the model version the caller will predict with (for the pending marker)
-- ARGV[10] '1' when the caller then WAITs for replicas: a duplicate then writes too (the event
--          id's TTL, unchanged), so that the WAIT covers the original event's replication
-- ARGV[11] the impression window in seconds: a watch of a title shown to the user within it is
--          a hit of that impression
-- The user's state (user_state.lua): a watch appends to the history, forgets the title's
-- impressions (it is watched, no longer only shown) and drops the cached prediction.
-- Returns {'duplicate', stored answer or pending marker}
--      or {'recorded', history codes after the append, previous cached prediction, stream id,
--          1 if the title was shown to the user within the impression window else 0}
-- The pending marker is 'pending:<timestamp>:<model version>:<history after the append>': all
-- the answer is computed from, so that a retry can give the same answer if the request that
-- recorded the event never stored it (Redis or the worker went away in between).
-- No key name or command text is built from user input: keys come in KEYS, values in ARGV.
if ARGV[6] ~= '' then
  local answered = redis.call('GET', KEYS[3])
  if answered then
    if ARGV[10] == '1' then
      local left = redis.call('PTTL', KEYS[3])
      if left > 0 then
        redis.call('PEXPIRE', KEYS[3], left)
      end
    end
    return {'duplicate', answered}
  end
end
local history, impressions, previous = read_state(redis.call('GET', KEYS[1]))
history = history .. ARGV[1]
local cap = 4 * tonumber(ARGV[2])
if #history > cap then
  history = string.sub(history, #history - cap + 1)
end
local watched = struct.unpack('<I4', ARGV[1])
local shown_lately = 0
local kept = {}
for _, entry in ipairs(impression_list(impressions)) do
  if entry[1] == watched then
    if entry[3] >= tonumber(ARGV[5]) - tonumber(ARGV[11]) then
      shown_lately = 1
    end
  else
    kept[#kept + 1] = entry
  end
end
redis.call('SET', KEYS[1], write_state(history, impression_bytes(kept), ''))
local fields = {'user_id', ARGV[3], 'content_id', ARGV[4], 'ts', ARGV[5]}
if ARGV[6] ~= '' then
  table.insert(fields, 'event_id')
  table.insert(fields, ARGV[6])
  -- Claimed now so that a retry racing this request is not recorded twice; the answer
  -- replaces this marker once the prediction is computed.
  local marker = 'pending:' .. ARGV[5] .. ':' .. ARGV[9] .. ':' .. history
  redis.call('SET', KEYS[3], marker, 'EX', tonumber(ARGV[7]))
end
local stream_id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', unpack(fields))
return {'recorded', history, previous, stream_id, shown_lately}
