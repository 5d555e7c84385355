-- GET /recommend/<user> for a user drawn at random per request.
-- Arguments (after `--`): users, user id prefix, seed, optional query string.   e.g.  -- 10000 r 1 ?k=10
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

function init(args)
  users = tonumber(args[1] or "10000")
  prefix = args[2] or "r"
  math.randomseed(tonumber(args[3] or "1") * 1000 + thread_number)
  query = args[4] or ""
end

function request()
  return wrk.format("GET", "/recommend/" .. prefix .. math.random(0, users - 1) .. query)
end
