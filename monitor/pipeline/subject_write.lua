#!lua
-- One subject's share of a batch, applied atomically (built by monitor/pipeline/_write.py).
--
-- KEYS: 1 state hash, 2 view hash, 3 outbox stream, 4 audit stream, then the
--       duplicate-window buckets to append to, then the buckets to delete. All of them
--       carry the subject's hash tag: one slot, so this works on Redis Cluster.
-- ARGV: revision field, expected revision ('' for a new subject), new revision,
--       outbox consumer group, audit max length, then counted lists: fences (field,
--       'epoch:offset'), state fields (field, value), view fields (field, value),
--       counters (field, integer), maxima (field, number), digests (one blob of 8-byte
--       digests per bucket to append to), deletions (a count only: the keys say which),
--       outbox entries and audit entries (each a count of pairs, then the pairs).
--
-- Nothing is written unless every input and every key's type checks out, so a batch is
-- all or nothing; the fences and the revision are written last, and a fence never
-- moves backwards.
-- Returns {1} applied; {0, revision} when the revision moved since the caller read it;
-- {-1, key, type} for a key of the wrong type; {-2, reason} for bad input.

local function bad(reason) return {-2, reason} end

local cursor = 1
local function take()
  local value = ARGV[cursor]
  cursor = cursor + 1
  return value
end
local function take_count()
  local n = tonumber(take())
  if n == nil or n < 0 or n ~= math.floor(n) then return nil end
  return n
end
local function is_integer(text) return type(text) == 'string' and string.match(text, '^-?%d+$') ~= nil end
local function is_number(text)
  local n = tonumber(text)
  return n ~= nil and n == n and n ~= math.huge and n ~= -math.huge
end
local function parse_fence(text)
  if type(text) ~= 'string' then return nil end
  local epoch, offset = string.match(text, '^(%d+):(%d+)$')
  if epoch == nil then return nil end
  return tonumber(epoch), tonumber(offset)
end
-- A counted list of (field, value) pairs, flattened; nil and a reason when malformed.
local function take_pairs(what, valid)
  local count = take_count()
  if count == nil then return nil, what .. ': bad count' end
  local flat = {}
  for _ = 1, count do
    local name, value = take(), take()
    if name == nil or value == nil or name == '' then return nil, what .. ': missing field' end
    if valid ~= nil and not valid(value) then return nil, what .. ': bad value for ' .. name end
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  return flat
end

-- 1. Read and check every input.
local rev_field, expected_rev, new_rev = take(), take(), take()
local group, audit_maxlen = take(), take()
if rev_field == nil or rev_field == '' then return bad('revision field') end
if expected_rev == nil or (expected_rev ~= '' and string.match(expected_rev, '^%d+$') == nil) then
  return bad('expected revision')
end
if new_rev == nil or string.match(new_rev, '^%d+$') == nil then return bad('new revision') end
if group == nil or group == '' or not is_integer(audit_maxlen) then return bad('outbox settings') end

local fences, why = take_pairs('fences', function(value) return parse_fence(value) ~= nil end)
if fences == nil then return bad(why) end
local state_fields; state_fields, why = take_pairs('state fields')
if state_fields == nil then return bad(why) end
local view_fields; view_fields, why = take_pairs('view fields')
if view_fields == nil then return bad(why) end
local counters; counters, why = take_pairs('counters', is_integer)
if counters == nil then return bad(why) end
local maxima; maxima, why = take_pairs('maxima', is_number)
if maxima == nil then return bad(why) end

local appends = take_count()
if appends == nil then return bad('digests: bad count') end
local digests = {}
for i = 1, appends do
  local blob = take()
  if blob == nil or #blob == 0 or #blob % 8 ~= 0 then return bad('digests: bad blob') end
  digests[i] = blob
end
local deletions = take_count()
if deletions == nil then return bad('deletions: bad count') end

local function take_entries(what)
  local count = take_count()
  if count == nil then return nil, what .. ': bad count' end
  local entries = {}
  for i = 1, count do
    local flat, reason = take_pairs(what)
    if flat == nil or #flat == 0 then return nil, reason or (what .. ': empty entry') end
    entries[i] = flat
  end
  return entries
end
local outbox; outbox, why = take_entries('outbox')
if outbox == nil then return bad(why) end
local audit; audit, why = take_entries('audit')
if audit == nil then return bad(why) end

if cursor - 1 ~= #ARGV then return bad('trailing arguments') end
if #KEYS ~= 4 + appends + deletions then return bad('key count') end

-- 2. Check every key's type.
local wanted = {'hash', 'hash', 'stream', 'stream'}
for i = 1, #KEYS do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= 'none' and kind ~= (wanted[i] or 'string') then return {-1, KEYS[i], kind} end
end

-- 3. The revision: the caller computed this write from that state, or nothing happens.
local current = redis.call('HGET', KEYS[1], rev_field)
if current == false then current = '' end
if current ~= expected_rev then return {0, current} end

for i = 1, #fences, 2 do
  local stored = redis.call('HGET', KEYS[1], fences[i])
  if stored then
    local old_epoch, old_offset = parse_fence(stored)
    local new_epoch, new_offset = parse_fence(fences[i + 1])
    if old_epoch == nil then return bad('stored fence ' .. fences[i]) end
    if new_epoch < old_epoch or (new_epoch == old_epoch and new_offset < old_offset) then
      return bad('fence ' .. fences[i] .. ' would move backwards')
    end
  end
end

-- 4. Write: statistics, view, duplicates, outbox, audit; fences and revision last.
if #state_fields > 0 then redis.call('HSET', KEYS[1], unpack(state_fields)) end
if #view_fields > 0 then redis.call('HSET', KEYS[2], unpack(view_fields)) end
for i = 1, #counters, 2 do redis.call('HINCRBY', KEYS[2], counters[i], counters[i + 1]) end
for i = 1, #maxima, 2 do
  local stored = redis.call('HGET', KEYS[2], maxima[i])
  if (not stored) or tonumber(stored) < tonumber(maxima[i + 1]) then
    redis.call('HSET', KEYS[2], maxima[i], maxima[i + 1])
  end
end
for i = 1, appends do redis.call('APPEND', KEYS[4 + i], digests[i]) end
for i = 1, deletions do redis.call('DEL', KEYS[4 + appends + i]) end
if #outbox > 0 then
  -- The drainers' group exists from the first entry on ('0': it sees every entry).
  redis.pcall('XGROUP', 'CREATE', KEYS[3], group, '0', 'MKSTREAM')
  for _, entry in ipairs(outbox) do redis.call('XADD', KEYS[3], '*', unpack(entry)) end
end
for _, entry in ipairs(audit) do
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', audit_maxlen, '*', unpack(entry))
end
if #fences > 0 then redis.call('HSET', KEYS[1], unpack(fences)) end
redis.call('HSET', KEYS[1], rev_field, new_rev)
return {1}
