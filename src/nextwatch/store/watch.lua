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
-- The user's state (store/users.py): uint32 n, n uint32 history codes, then the cached
-- prediction if any (uint32 stamp, uint32 codes). A watch appends to the history and drops the
-- prediction.
-- Returns {'duplicate', stored answer or pending marker}
--      or {'recorded', history codes after the append, previous cached prediction, stream id}
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
local state = redis.call('GET', KEYS[1]) or ''
local history, previous = '', ''
if #state >= 4 then
  local count = struct.unpack('<I4', state)
  history = string.sub(state, 5, 4 + 4 * count)
  previous = string.sub(state, 5 + 4 * count)
end
history = history .. ARGV[1]
local cap = 4 * tonumber(ARGV[2])
if #history > cap then
  history = string.sub(history, #history - cap + 1)
end
redis.call('SET', KEYS[1], struct.pack('<I4', #history / 4) .. history)
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
return {'recorded', history, previous, stream_id}
