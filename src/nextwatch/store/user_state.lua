-- The codec of a user's state, shared by every script that reads or writes it (users.py puts
-- this text before each one). One string of little-endian uint32 (store/user_state.py):
--   n, the last n watched title codes (oldest first),
--   m, m impressions of 4 uint32 each: code, times shown, last shown (unix s), demoted until
--      (unix s, 0: not demoted),
--   then the cached prediction if any: stamp, codes.
local IMPRESSION_BYTES = 16

local function read_state(raw)
  if not raw or #raw < 8 then
    return '', '', ''
  end
  local n = struct.unpack('<I4', raw)
  local history = string.sub(raw, 5, 4 + 4 * n)
  local m = struct.unpack('<I4', raw, 5 + 4 * n)
  local first = 9 + 4 * n
  local impressions = string.sub(raw, first, first + IMPRESSION_BYTES * m - 1)
  local prediction = string.sub(raw, first + IMPRESSION_BYTES * m)
  return history, impressions, prediction
end

local function write_state(history, impressions, prediction)
  return struct.pack('<I4', #history / 4) .. history .. struct.pack('<I4', #impressions / IMPRESSION_BYTES)
    .. impressions .. prediction
end

-- The impressions as a list of {code, shown, last, until} tables, and back.
local function impression_list(impressions)
  local list = {}
  for at = 1, #impressions, IMPRESSION_BYTES do
    local code, shown, last, demoted = struct.unpack('<I4I4I4I4', impressions, at)
    list[#list + 1] = {code, shown, last, demoted}
  end
  return list
end

local function impression_bytes(list)
  local parts = {}
  for i, entry in ipairs(list) do
    parts[i] = struct.pack('<I4I4I4I4', entry[1], entry[2], entry[3], entry[4])
  end
  return table.concat(parts)
end
