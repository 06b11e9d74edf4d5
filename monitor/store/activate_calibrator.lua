#!lua
-- Make a new calibrator version a stream's active one, atomically (monitor/store/_calibrators.py).
-- KEYS: 1 the stream's state hash, 2 its view hash, 3 its calibrator versions hash.
-- ARGV: 1 the calibrator record, 2 the view of the fresh statistics, 3 their gates, then
--       the field names: 4 revision, 5 calibrator, 6 calibrator version, 7 state, 8 view,
--       9 gates, 10 history prefix, 11 latest version, 12 version prefix; 13 the new
--       version the caller built the view for.
-- The retired version's view is kept as history, its statistics start afresh, and the
-- revision moves, so a batch computed under the old calibrator is recomputed.
-- Returns the new version; {0} when another calibrator took that version first;
-- {-1, key, type} when a key has the wrong type.
for i = 1, 3 do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= 'none' and kind ~= 'hash' then return {-1, KEYS[i], kind} end
end
local version = tonumber(redis.call('HGET', KEYS[3], ARGV[11]) or '0') + 1
if version ~= tonumber(ARGV[13]) then return {0} end
local old = redis.call('HGET', KEYS[1], ARGV[6]) or '0'
redis.call('HSET', KEYS[3], ARGV[11], version)
redis.call('HSET', KEYS[3], ARGV[12] .. version, ARGV[1])
local view = redis.call('HGET', KEYS[2], ARGV[8])
if view then redis.call('HSET', KEYS[2], ARGV[10] .. old, view) end
redis.call('HSET', KEYS[2], ARGV[8], ARGV[2], ARGV[9], ARGV[3])
redis.call('HDEL', KEYS[1], ARGV[7])
redis.call('HSET', KEYS[1], ARGV[5], ARGV[1], ARGV[6], version)
redis.call('HINCRBY', KEYS[1], ARGV[4], 1)
return version
