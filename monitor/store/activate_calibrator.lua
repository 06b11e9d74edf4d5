#!lua
-- Make a new calibrator version a stream's active one and announce it, atomically
-- (monitor/store/_calibrators.py).
-- KEYS: 1 the stream's state hash, 2 its view hash, 3 its calibrator versions hash,
--       4 its outbox stream, 5 its audit stream, 6 its pool of probe pairs (a list).
-- ARGV: 1 the calibrator record, 2 the view of the fresh statistics, 3 their gates, then
--       the field names: 4 revision, 5 calibrator, 6 calibrator version, 7 state, 8 view,
--       9 gates, 10 history prefix, 11 latest version, 12 version prefix; 13 the new
--       version and 14 the active (retiring) version the caller built the view for;
--       the announcement: 15 the gate's published field, 16 its published record, 17 the
--       decision counter field, 18 the outbox consumer group, 19 the audit max length;
--       the calibration pairs: 20 the new version's pairs field, 21 its pairs (empty:
--       none kept), 22 the retiring version's pairs field, 23 the pairs fields' prefix,
--       24 the number of pool entries the fit used (taken from the pool's head);
--       25 the number of field-value pairs of the outbox entry, then those pairs, then
--       the audit entry's pairs.
-- The retired version's view is kept as history, its statistics start afresh, the
-- decision announcing the new version goes to the outbox and the audit log and becomes
-- the gate's published verdict, and the revision moves, so a batch computed under the
-- old calibrator is recomputed (and judged against the announced verdict). The pairs of
-- the new and the retiring version are kept, older versions' pairs are dropped (the new
-- version's hold what a pooled refit used of them), and the pooled probes the fit used
-- leave the pool (a probe pooled meanwhile stays).
-- Returns the new version; {0} when another calibrator took that version first (or the
-- active version moved); {-2, length} when the pool lost entries the fit used (another
-- refit took them); {-1, key, type} when a key has the wrong type.
local expected = {'hash', 'hash', 'hash', 'stream', 'stream', 'list'}
for i = 1, 6 do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= 'none' and kind ~= expected[i] then return {-1, KEYS[i], kind} end
end
local version = tonumber(redis.call('HGET', KEYS[3], ARGV[11]) or '0') + 1
local old = redis.call('HGET', KEYS[1], ARGV[6]) or '0'
if version ~= tonumber(ARGV[13]) or tonumber(old) ~= tonumber(ARGV[14]) then return {0} end
local pooled = tonumber(ARGV[24])
local pool_length = redis.call('LLEN', KEYS[6])
if pool_length < pooled then return {-2, pool_length} end
local pairs_in_outbox = tonumber(ARGV[25])
local outbox_entry, audit_entry = {}, {}
for i = 26, 25 + 2 * pairs_in_outbox do outbox_entry[#outbox_entry + 1] = ARGV[i] end
for i = 26 + 2 * pairs_in_outbox, #ARGV do audit_entry[#audit_entry + 1] = ARGV[i] end

redis.call('HSET', KEYS[3], ARGV[11], version)
redis.call('HSET', KEYS[3], ARGV[12] .. version, ARGV[1])
local prefix = ARGV[23]
for _, name in ipairs(redis.call('HKEYS', KEYS[3])) do
  if string.sub(name, 1, #prefix) == prefix and name ~= ARGV[22] then
    redis.call('HDEL', KEYS[3], name)
  end
end
if ARGV[21] ~= '' then redis.call('HSET', KEYS[3], ARGV[20], ARGV[21]) end
if pooled > 0 then redis.call('LTRIM', KEYS[6], pooled, -1) end
local view = redis.call('HGET', KEYS[2], ARGV[8])
if view then redis.call('HSET', KEYS[2], ARGV[10] .. old, view) end
redis.call('HSET', KEYS[2], ARGV[8], ARGV[2], ARGV[9], ARGV[3])
redis.call('HDEL', KEYS[1], ARGV[7])
redis.call('HSET', KEYS[1], ARGV[5], ARGV[1], ARGV[6], version, ARGV[15], ARGV[16])
-- The drainers' group exists from the first entry on ('0': it sees every entry).
redis.pcall('XGROUP', 'CREATE', KEYS[4], ARGV[18], '0', 'MKSTREAM')
redis.call('XADD', KEYS[4], '*', unpack(outbox_entry))
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[19], '*', unpack(audit_entry))
redis.call('HINCRBY', KEYS[2], ARGV[17], 1)
redis.call('HINCRBY', KEYS[1], ARGV[4], 1)
return version
