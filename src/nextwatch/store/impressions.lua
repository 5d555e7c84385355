-- Record titles shown to one user (POST /impressions), atomically, in one round trip.
-- KEYS[1] the user's state (user_state.lua)   KEYS[2] the event log stream of the user's shard
-- KEYS[3] event-id answer key (only read/written if ARGV[7] ~= '')
-- ARGV[1] the shown titles' codes, 4 little-endian bytes each   ARGV[2] now (unix seconds)
-- ARGV[3] shows before a title is demoted   ARGV[4] how long it stays demoted (seconds)
-- ARGV[5] impressions kept per user at most   ARGV[6] user id   ARGV[7] event id or ''
-- ARGV[8] event-id TTL seconds   ARGV[9] event log cap (approximate)
-- ARGV[10 ...] the shown titles' content ids, in the order of ARGV[1]
-- Returns {'duplicate', stored answer} or {'recorded', the answer (JSON), stream ids ...}
-- A title shown ARGV[3] times without being watched (a watch forgets its impressions,
-- watch.lua) is demoted until now + ARGV[4], and its count starts again. Beyond ARGV[5]
-- impressions the oldest shown of those not demoted go first, so memory per user is bounded.
if ARGV[7] ~= '' then
  local answered = redis.call('GET', KEYS[3])
  if answered then
    return {'duplicate', answered}
  end
end
local now = math.floor(tonumber(ARGV[2]))
local cap, demotion, kept = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local history, impressions, prediction = read_state(redis.call('GET', KEYS[1]))
local list = impression_list(impressions)
local position = {}
for i, entry in ipairs(list) do
  position[entry[1]] = i
end
local demoted = {}
for at = 1, #ARGV[1], 4 do
  local code = struct.unpack('<I4', ARGV[1], at)
  local i = position[code]
  if not i then
    list[#list + 1] = {code, 0, now, 0}
    i = #list
    position[code] = i
  end
  local entry = list[i]
  if entry[4] ~= 0 and entry[4] <= now then
    entry[4] = 0  -- a demotion that ran out: counting starts again
  end
  entry[2] = entry[2] + 1
  entry[3] = now
  if entry[4] == 0 and entry[2] >= cap then
    entry[4] = now + demotion
    entry[2] = 0
    demoted[#demoted + 1] = ARGV[9 + (at + 3) / 4]
  end
end
while #list > kept do
  local drop, best = nil, nil
  for i, entry in ipairs(list) do
    -- Not demoted before demoted; then the least recently shown.
    local rank = (entry[4] > now and 1e12 or 0) + entry[3]
    if not best or rank < best then
      drop, best = i, rank
    end
  end
  table.remove(list, drop)
end
redis.call('SET', KEYS[1], write_state(history, impression_bytes(list), prediction))
local stream_ids = {}
local log_cap = ARGV[9]
for n = 10, #ARGV do
  local fields = {'user_id', ARGV[6], 'content_id', ARGV[n], 'ts', ARGV[2], 'kind', 'impression'}
  if ARGV[7] ~= '' then
    table.insert(fields, 'event_id')
    table.insert(fields, ARGV[7])
  end
  stream_ids[#stream_ids + 1] = redis.call('XADD', KEYS[2], 'MAXLEN', '~', log_cap, '*', unpack(fields))
end
local answer = cjson.encode({user_id = ARGV[6], shown = #ARGV - 9, demoted = demoted})
if ARGV[7] ~= '' then
  redis.call('SET', KEYS[3], answer, 'EX', tonumber(ARGV[8]))
end
local reply = {'recorded', answer}
for _, id in ipairs(stream_ids) do
  reply[#reply + 1] = id
end
return reply
