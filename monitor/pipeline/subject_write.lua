-- One atomic write of a processed batch, fenced by compare-and-set checks.
-- ARGV[1] is a JSON plan built by monitor/_state.py, ARGV[2] the event-id digests; Lua never formats a float:
-- every value arrives as the string Python wrote, so state round-trips exactly.
-- Returns {1} when applied, {0, why} when a check failed, {0, why, ids} when some event
-- ids were already remembered (the caller counts those as duplicates and retries).
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
if seen and seen.count > 0 then
  -- ARGV[2]: the event-id digests, seen.size bytes each, back to back. Ids live in one
  -- set per window-long bucket; the current and the previous bucket are consulted, so an
  -- id is remembered for at least one window and at most two.
  local ids, blob, size = {}, ARGV[2], seen.size
  for i = 1, seen.count do ids[i] = string.sub(blob, (i - 1) * size + 1, i * size) end
  local already = {}
  for _, key in ipairs({seen.current, seen.previous}) do
    for start = 1, #ids, CHUNK do
      local stop = math.min(start + CHUNK - 1, #ids)
      local members = redis.call('SMISMEMBER', key, unpack(ids, start, stop))
      for offset, member in ipairs(members) do
        if member == 1 then already[#already + 1] = ids[start + offset - 1] end
      end
    end
  end
  if #already > 0 then return {0, 'seen', already} end
  for start = 1, #ids, CHUNK do
    redis.call('SADD', seen.current, unpack(ids, start, math.min(start + CHUNK - 1, #ids)))
  end
  redis.call('EXPIRE', seen.current, seen.expire_seconds)
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
