"""The Lua script `RedisSink` writes outcome records with, and the arguments it is given.

One call of `WRITE_SCRIPT` per experiment and batch stores the records in the experiment's
stream (deduplicated by `record_id`), keeps the label indexes beside it (the `records` and
`units` hashes, which `gateway.stores.redis_label_store` reads) and applies the stream's
retention to all three, within a trim budget (`TRIM_PER_RECORD`, `TRIM_PER_CALL`) and never
past what the exporter has not acknowledged. The caller computes each record's units field
(`units_field`, `units_field_of_json`). The keys it works on are named in
`gateway.stores.keys`; `gateway.stores.redis_sink` calls it.
"""

from __future__ import annotations

import json
from typing import Final

from gateway.outcomes.labels import unit_target
from gateway.outcomes.record import OutcomeRecord

# The most stream entries one script call trims, and so the most records it removes from
# the records and units hashes: this many per record it writes (so retention catches up
# after a burst), plus a constant well above a stream node's 100 entries (XTRIM ~ removes
# whole nodes only, and none larger than its LIMIT). See WRITE_SCRIPT.
TRIM_PER_RECORD: Final = 2
TRIM_PER_CALL: Final = 1000

# KEYS: the experiment's outcomes stream, seen zset, records hash, units hash, indexed list
#       (one hash tag: one slot).
# ARGV: maxlen (0: none), min-id age in ms (0: none), dedup window in ms, the entry field,
#       record ids kept per units entry, the most entries to trim (the budget), the export
#       consumer group, then per record: record_id, record JSON, units field
#       ("<unit>:<utterance_index>", or "" for a record no label by unit can name).
# Returns {records added, 1 if retention kept entries for the export group else 0}.
# Server time, so that the dedup window and MINID agree with the stream's own entry ids.
# The units field comes from the caller: decoding each record's JSON here would triple the
# script's cost per record.
#
# Retention covers the label indexes too. Each record put in the records (and units) hash
# is also pushed to the indexed list as "<entry id> <record id> <units field>", so that
# list is in stream order. After writing, the script trims the stream (MAXLEN ~, MINID ~,
# at most `budget` entries: a burst that aged out is trimmed over the next calls, never in
# one long stall of Redis), then pops the list up to the stream's first entry, removing
# those records from the hashes. So after every call the hashes index exactly what the
# stream holds: a trimmed record is gone from them, a kept one is in them. If something
# else trimmed the stream (an operator's XTRIM or DEL), the same pop catches up, `budget`
# records per call. A record id stored again after its dedup window points at its newer
# entry, and the older entry's line leaves it alone.
#
# The export guard: when the stream has the export consumer group (`speech-gateway export
# --follow`, gateway.stores.lake_follower), retention never trims an entry the group has not
# acknowledged: MAXLEN and the age become one MINID, capped at the group's first pending
# (else first undelivered) entry. Without the group, trimming is as above.
WRITE_SCRIPT: Final = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local maxlen = tonumber(ARGV[1])
local min_age = tonumber(ARGV[2])
local keep = tonumber(ARGV[5]) * 33 - 1  -- the newest ids: 32 hex digits and a space each
local added = 0
for i = 8, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('ZADD', KEYS[2], 'NX', now, id) == 1 then
    local entry = redis.call('XADD', KEYS[1], '*', ARGV[4], ARGV[i + 1])
    redis.call('HSET', KEYS[3], id, entry)
    local field = ARGV[i + 2]
    if field ~= '' and redis.call('HSETNX', KEYS[4], field, id) == 0 then
      local ids = redis.call('HGET', KEYS[4], field)
      if not string.find(' ' .. ids .. ' ', ' ' .. id .. ' ', 1, true) then
        ids = ids .. ' ' .. id
        if #ids > keep then
          ids = string.sub(ids, #ids - keep + 1)
        end
        redis.call('HSET', KEYS[4], field, ids)
      end
    end
    redis.call('RPUSH', KEYS[5], entry .. ' ' .. id .. ' ' .. field)
    added = added + 1
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf',
  '(' .. string.format('%d', now - tonumber(ARGV[3])))
local budget = tonumber(ARGV[6])
local trimmed = 0
local held = 0

local function entry_id(text)  -- "<ms>-<seq>" as two numbers, to compare
  local ms, seq = string.match(text, '^(%d+)%-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)  -- entry ids as {ms, seq}
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end

-- The oldest entry the export group has not acknowledged (the first pending one, else the
-- one after its last delivered), or nil without such a group.
local function export_guard()
  local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
  if ARGV[7] == '' or groups.err then
    return nil
  end
  for _, flat in ipairs(groups) do
    local info = {}
    for j = 1, #flat, 2 do
      info[flat[j]] = flat[j + 1]
    end
    if info['name'] == ARGV[7] then
      local ms, seq = entry_id(info['last-delivered-id'])
      local guard = {ms, seq + 1}
      if tonumber(info['pending']) > 0 then
        local pms, pseq = entry_id(redis.call('XPENDING', KEYS[1], ARGV[7])[2])
        if before({pms, pseq}, guard) then
          guard = {pms, pseq}
        end
      end
      return guard
    end
  end
  return nil
end

local guard = export_guard()
if guard == nil then
  if maxlen > 0 then
    trimmed = redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', maxlen, 'LIMIT', budget)
  end
  if min_age > 0 and budget > trimmed then  -- (LIMIT 0 would mean no limit)
    trimmed = trimmed + redis.call('XTRIM', KEYS[1], 'MINID', '~',
      string.format('%d', now - min_age), 'LIMIT', budget - trimmed)
  end
else
  -- Retention as one MINID: the first entry that MAXLEN or the age keeps, whichever is
  -- later; but never past the export guard, so that nothing unexported is trimmed.
  local bound = nil
  if min_age > 0 then
    bound = {now - min_age, 0}
  end
  if maxlen > 0 then
    local excess = redis.call('XLEN', KEYS[1]) - maxlen
    if excess > 0 then
      local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(excess, budget) + 1)
      local ms, seq = entry_id(oldest[#oldest][1])
      if bound == nil or before(bound, {ms, seq}) then
        bound = {ms, seq}
      end
    end
  end
  if bound ~= nil then
    if before(guard, bound) then
      -- Retention waits for the exporter if an unexported entry is due to be trimmed.
      local due = redis.call('XRANGE', KEYS[1], string.format('%d-%d', guard[1], guard[2]),
        string.format('(%d-%d', bound[1], bound[2]), 'COUNT', 1)
      if #due > 0 then
        held = 1
      end
      bound = guard
    end
    trimmed = redis.call('XTRIM', KEYS[1], 'MINID', '~',
      string.format('%d-%d', bound[1], bound[2]), 'LIMIT', budget)
  end
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
local first_ms, first_seq
if first then
  first_ms, first_seq = entry_id(first[1])
end

-- Forget one line of the indexed list; false if its entry is still in the stream.
local function forget(line)
  local id_at = string.find(line, ' ', 1, true)
  local entry = string.sub(line, 1, id_at - 1)
  if first then
    local ms, seq = entry_id(entry)
    if ms > first_ms or (ms == first_ms and seq >= first_seq) then
      return false
    end
  end
  local field_at = string.find(line, ' ', id_at + 1, true)
  local id = string.sub(line, id_at + 1, field_at - 1)
  if redis.call('HGET', KEYS[3], id) ~= entry then
    return true  -- stored again since: its newer entry's line forgets it
  end
  redis.call('HDEL', KEYS[3], id)
  local field = string.sub(line, field_at + 1)
  local ids = field ~= '' and redis.call('HGET', KEYS[4], field)
  if not ids then
    return true
  end
  local padded = ' ' .. ids .. ' '
  local from, to = string.find(padded, ' ' .. id .. ' ', 1, true)
  if from then
    local before = string.sub(padded, 2, from - 1)
    local after = string.sub(padded, to + 1, -2)
    if before == '' and after == '' then
      redis.call('HDEL', KEYS[4], field)
    elseif before == '' or after == '' then
      redis.call('HSET', KEYS[4], field, before .. after)
    else
      redis.call('HSET', KEYS[4], field, before .. ' ' .. after)
    end
  end
  return true
end

while budget > 0 do
  local lines = redis.call('LRANGE', KEYS[5], 0, math.min(budget, 100) - 1)
  local done = 0
  for _, line in ipairs(lines) do
    if not forget(line) then
      break
    end
    done = done + 1
  end
  if done > 0 then
    redis.call('LTRIM', KEYS[5], done, -1)
  end
  if done < #lines or #lines == 0 then
    break  -- the rest is still in the stream, or nothing is left
  end
  budget = budget - done
end
return {added, held}
"""


def units_field(record: OutcomeRecord) -> str:
    """The record's field in the units hash, "" if a label by unit cannot name it."""
    target = unit_target(record.kind, record.role, record.unit, record.utterance_index)
    return target or ""


def units_field_of_json(text: str) -> str:
    """As `units_field`, for a journalled record (only its JSON is at hand)."""
    try:
        data = json.loads(text)
    except ValueError:
        return ""  # stored all the same; the journal's reader decides about bad records
    if not isinstance(data, dict):
        return ""
    target = unit_target(
        data.get("kind"), data.get("role"), data.get("unit"), data.get("utterance_index")
    )
    return target or ""
