-- GET /recommend/<user> for a user drawn at random per request.
-- Arguments (after `--`): users, user id prefix, seed, optional query string.   e.g.  -- 10000 r 1 ?k=10
-- Each thread builds POOL requests at start and sends them in turn (as watched.lua does, and
-- why): building one per request cost wrk CPU on the same cores as the servers it measures.
local thread_count = 0
local POOL = 20000

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

function init(args)
  local users = tonumber(args[1] or "10000")
  local prefix = args[2] or "r"
  math.randomseed(tonumber(args[3] or "1") * 1000 + thread_number)
  local query = args[4] or ""
  pool = {}
  for i = 1, POOL do
    pool[i] = wrk.format("GET", "/recommend/" .. prefix .. math.random(0, users - 1) .. query)
  end
  sent = 0
end

function request()
  sent = sent + 1
  return pool[(sent - 1) % POOL + 1]
end
