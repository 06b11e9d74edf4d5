#!lua
-- One subject's share of a batch, applied atomically (built by monitor/pipeline/_write.py).
--
-- KEYS: 1 state hash, 2 view hash, 3 outbox stream, 4 audit stream, then the buckets
--       to append to (duplicate windows, pending halves), then the buckets to delete,
--       then the strings to overwrite a range of (rings, such as the residual history).
--       All of them carry the subject's hash tag: one slot, so this works on Redis
--       Cluster.
-- ARGV: 1 the plan's shape, 2 its values back to back (two arguments, whatever the
--       plan's size: redis-py would encode dozens of small arguments in Python; Redis
--       slices them here in C, byte-exact). The shape is comma-separated integers: the
--       numbers of fences, state fields, view fields, counters, maxima (pairs each),
--       digest blobs, deletions and overwrites, the number of outbox entries then the pairs of each,
--       the number of audit entries then the pairs of each, and then the length of
--       every value. The values, in order: revision field, expected revision ('' for a
--       new subject), new revision, outbox consumer group, audit max length; the fence
--       (field, 'epoch:offset'), state, view, counter (field, integer) and maximum
--       (field, number) pairs; the blobs to append, one per key to append to (whole
--       8-byte words: digests of event ids, records of a stream's pending halves); the
--       overwrites' (offset, bytes) pairs; the outbox entries' and the audit entries'
--       field-value pairs.
--
-- Nothing is written unless every input and every key's type checks out, so a batch is
-- all or nothing; the fences and the revision are written last, and a fence never
-- moves backwards.
-- Returns {1} applied; {0, revision} when the revision moved since the caller read it;
-- {-1, key, type} for a key of the wrong type; {-2, reason} for bad input.

local function bad(reason) return {-2, reason} end
local function is_integer(text) return string.match(text, '^-?%d+$') ~= nil end
local function is_number(text)
  local n = tonumber(text)
  return n ~= nil and n == n and n ~= math.huge and n ~= -math.huge
end
local function parse_fence(text)
  local epoch, offset = string.match(text, '^(%d+):(%d+)$')
  if epoch == nil then return nil end
  return tonumber(epoch), tonumber(offset)
end
-- 1. Read and check every input.
if #ARGV ~= 2 then return bad('arguments') end
local shape = {}
for number in string.gmatch(ARGV[1], '[^,]+') do
  local n = tonumber(number)
  if n == nil or n < 0 or n ~= math.floor(n) then return bad('shape') end
  shape[#shape + 1] = n
end
local at = 0
local function count()
  at = at + 1
  return shape[at]
end
local counts = {}
for i = 1, 8 do counts[i] = count() end
local outbox_sizes, audit_sizes = {}, {}
local entries = count()
if entries == nil then return bad('shape') end
for i = 1, entries do outbox_sizes[i] = count() end
entries = count()
if entries == nil then return bad('shape') end
for i = 1, entries do audit_sizes[i] = count() end
for i = 1, 8 do if counts[i] == nil then return bad('shape') end end
for _, size in ipairs(outbox_sizes) do if size == nil or size == 0 then return bad('outbox: empty entry') end end
for _, size in ipairs(audit_sizes) do if size == nil or size == 0 then return bad('audit: empty entry') end end

local blob, offset = ARGV[2], 1
local function value()
  local length = count()
  if length == nil or offset + length - 1 > #blob then return nil end
  local text = string.sub(blob, offset, offset + length - 1)
  offset = offset + length
  return text
end
local function values(n)
  local list = {}
  for i = 1, n do
    local text = value()
    if text == nil then return nil end
    list[i] = text
  end
  return list
end
-- A flat list of (field, value) pairs: nil and a reason when malformed.
local function take_pairs(n, what, valid)
  local flat = values(2 * n)
  if flat == nil then return nil, what .. ': values missing' end
  for i = 1, #flat, 2 do
    if flat[i] == '' then return nil, what .. ': missing field' end
    if valid ~= nil and not valid(flat[i + 1]) then
      return nil, what .. ': bad value for ' .. flat[i]
    end
  end
  return flat
end

local head = values(5)
if head == nil then return bad('plan head') end
local rev_field, expected_rev, new_rev, group, audit_maxlen = head[1], head[2], head[3], head[4], head[5]
if rev_field == '' then return bad('revision field') end
if expected_rev ~= '' and string.match(expected_rev, '^%d+$') == nil then
  return bad('expected revision')
end
if string.match(new_rev, '^%d+$') == nil then return bad('new revision') end
if group == '' or not is_integer(audit_maxlen) then return bad('outbox settings') end

local fences, why = take_pairs(counts[1], 'fences', function(text) return parse_fence(text) ~= nil end)
if fences == nil then return bad(why) end
local state_fields; state_fields, why = take_pairs(counts[2], 'state fields')
if state_fields == nil then return bad(why) end
local view_fields; view_fields, why = take_pairs(counts[3], 'view fields')
if view_fields == nil then return bad(why) end
local counters; counters, why = take_pairs(counts[4], 'counters', is_integer)
if counters == nil then return bad(why) end
local maxima; maxima, why = take_pairs(counts[5], 'maxima', is_number)
if maxima == nil then return bad(why) end
local digests = values(counts[6])
if digests == nil then return bad('digests: values missing') end
for _, digest_blob in ipairs(digests) do
  if #digest_blob == 0 or #digest_blob % 8 ~= 0 then return bad('digests: bad blob') end
end
local appends, deletions, overwrites = counts[6], counts[7], counts[8]
-- A ring's records: written in place, at most 64 MB into the string.
local ranges = values(2 * overwrites)
if ranges == nil then return bad('overwrites: values missing') end
for i = 1, #ranges, 2 do
  local at_byte = tonumber(ranges[i])
  if string.match(ranges[i], '^%d+$') == nil or at_byte > 67108864 or #ranges[i + 1] == 0 then
    return bad('overwrites: bad range')
  end
end
local outbox, audit = {}, {}
for i, size in ipairs(outbox_sizes) do
  outbox[i], why = take_pairs(size, 'outbox')
  if outbox[i] == nil then return bad(why) end
end
for i, size in ipairs(audit_sizes) do
  audit[i], why = take_pairs(size, 'audit')
  if audit[i] == nil then return bad(why) end
end
if at ~= #shape or offset ~= #blob + 1 then return bad('trailing values') end
if #KEYS ~= 4 + appends + deletions + overwrites then return bad('key count') end

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

-- 4. Write: statistics, view, duplicates, rings, outbox, audit; fences and revision last.
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
for i = 1, overwrites do
  redis.call('SETRANGE', KEYS[4 + appends + deletions + i], ranges[2 * i - 1], ranges[2 * i])
end
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
