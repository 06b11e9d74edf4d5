-- One atomic write of a processed batch, fenced by compare-and-set checks.
-- ARGV[1] is a JSON plan built by monitor/_state.py; Lua never formats a float:
-- every value arrives as the string Python wrote, so state round-trips exactly.
-- Returns {1} when applied, {0, why} when a check failed (the caller re-reads and retries).
local plan = cjson.decode(ARGV[1])
local CHUNK = 1000  -- keeps unpack() far below Lua's stack limit

for _, check in ipairs(plan.checks) do
  local current = redis.call('HGET', check[1], check[2])
  local expected = check[3]
  if expected == cjson.null then expected = false end
  if current ~= expected then
    return {0, 'changed: ' .. check[1] .. ' ' .. check[2]}
  end
end

local seen = plan.seen
if seen and #seen.ids > 0 then
  for start = 1, #seen.ids, CHUNK do
    local stop = math.min(start + CHUNK - 1, #seen.ids)
    local scores = redis.call('ZMSCORE', seen.key, unpack(seen.ids, start, stop))
    for _, score in ipairs(scores) do
      if score then return {0, 'seen: ' .. seen.key} end
    end
  end
  for start = 1, #seen.ids, CHUNK do
    local stop = math.min(start + CHUNK - 1, #seen.ids)
    local args = {}
    for i = start, stop do
      args[#args + 1] = seen.score
      args[#args + 1] = seen.ids[i]
    end
    redis.call('ZADD', seen.key, unpack(args))
  end
end
if seen then
  redis.call('ZREMRANGEBYSCORE', seen.key, '-inf', '(' .. seen.prune_before)
end

for _, item in ipairs(plan.hset) do redis.call('HSET', item[1], item[2], item[3]) end
for _, item in ipairs(plan.hincrby) do redis.call('HINCRBY', item[1], item[2], item[3]) end
for _, item in ipairs(plan.hmax) do
  local current = redis.call('HGET', item[1], item[2])
  if (not current) or tonumber(current) < tonumber(item[3]) then
    redis.call('HSET', item[1], item[2], item[3])
  end
end
for _, item in ipairs(plan.sadd) do redis.call('SADD', item[1], item[2]) end
for _, item in ipairs(plan.rpush) do redis.call('RPUSH', item[1], item[2]) end
for _, item in ipairs(plan.xadd) do
  local args = {item[1], 'MAXLEN', '~', item[2], '*'}
  for _, value in ipairs(item[3]) do args[#args + 1] = value end
  redis.call('XADD', unpack(args))
end
return {1}
