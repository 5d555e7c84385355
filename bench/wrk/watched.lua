-- POST /watched {"user_id", "content_id"[, "event_id"]} with a random user and a random title.
-- Arguments (after `--`): users, user id prefix, titles, seed, with event ids (0 or 1).
--   e.g.  -- 10000 w 5000 1 0
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

function init(args)
  users = tonumber(args[1] or "10000")
  prefix = args[2] or "w"
  titles = tonumber(args[3] or "5000")
  seed = tonumber(args[4] or "1")
  event_ids = (args[5] or "0") == "1"
  sent = 0
  math.randomseed(seed * 1000 + thread_number)
  headers = {["Content-Type"] = "application/json"}
end

function request()
  sent = sent + 1
  local body
  if event_ids then
    body = string.format('{"user_id":"%s%d","content_id":"T%05d","event_id":"e%d-%d-%d"}',
      prefix, math.random(0, users - 1), math.random(0, titles - 1), seed, thread_number, sent)
  else
    body = string.format('{"user_id":"%s%d","content_id":"T%05d"}',
      prefix, math.random(0, users - 1), math.random(0, titles - 1))
  end
  return wrk.format("POST", "/watched", headers, body)
end
