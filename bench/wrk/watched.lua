-- POST /watched {"user_id", "content_id"[, "event_id"]} with a random user and a random title.
-- Arguments (after `--`): users, user id prefix, titles, seed, with event ids (0 or 1).
--   e.g.  -- 10000 w 5000 1 0
-- Without event ids, each thread builds POOL requests at start and sends them in turn: building
-- one per request (string.format, then wrk.format over the headers) cost wrk about 10 us of
-- CPU a request, on the same cores as the servers it measures. With event ids, every request
-- needs its own id, so each is built when it is sent.
local thread_count = 0
local POOL = 20000

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

local function body(sent)
  if event_ids then
    return string.format('{"user_id":"%s%d","content_id":"T%05d","event_id":"e%d-%d-%d"}',
      prefix, math.random(0, users - 1), math.random(0, titles - 1), seed, thread_number, sent)
  end
  return string.format('{"user_id":"%s%d","content_id":"T%05d"}',
    prefix, math.random(0, users - 1), math.random(0, titles - 1))
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
  pool = {}
  if not event_ids then
    for i = 1, POOL do
      pool[i] = wrk.format("POST", "/watched", headers, body(i))
    end
  end
end

function request()
  sent = sent + 1
  if event_ids then
    return wrk.format("POST", "/watched", headers, body(sent))
  end
  return pool[(sent - 1) % POOL + 1]
end
