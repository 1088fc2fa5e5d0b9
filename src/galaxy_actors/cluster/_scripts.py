"""The Lua scripts that make the cluster's multi-key steps atomic in Redis.

Every script takes all the keys it touches in KEYS (one fleet's keys share a hash tag, so
they are legal on Redis Cluster). A lease's value is ``"<node> <epoch>"``; a task's
``owner`` is the token of the node that took it last (``"<node> <epoch or incarnation>"``).
Writes on behalf of a task check both, so a node that lost a device or a task cannot write.
"""

from __future__ import annotations

__all__ = [
    "CLAIM_STREAMS",
    "DEFINE",
    "DEFINITIONS",
    "FINISH",
    "HEARTBEAT",
    "LIVE",
    "MARK_SENT",
    "REQUEUE",
    "ROUND",
    "SUBMIT",
    "TAKE",
]

#: KEYS: devices, devices version. ARGV: device, definition (JSON, or '' to remove it), a
#: fresh token. Writes the definition and the token together: a reader that saw the token
#: saw the definitions as they were when it was written. Returns 1 if anything changed.
DEFINE = """
local changed
if ARGV[2] == '' then
  changed = redis.call('HDEL', KEYS[1], ARGV[1])
else
  if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 0 end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  changed = 1
end
if changed > 0 then redis.call('SET', KEYS[2], ARGV[3]) end
return changed
"""

#: KEYS: devices, devices version. ARGV: the token the caller holds ('' for none). Returns
#: {token} when it is still current, else {token or '', the definitions (HGETALL)}. A fleet
#: with no token (defined before there was one, or Redis restarted empty) is read each time.
DEFINITIONS = """
local token = redis.call('GET', KEYS[2])
if token and token == ARGV[1] then return {token} end
return {token or '', redis.call('HGETALL', KEYS[1])}
"""

#: KEYS: nodes, incarnation. ARGV: node, ttl_ms. Returns {fresh, incarnation, live nodes}.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local fresh = 0
if not score or tonumber(score) <= now then
  fresh = 1
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
return {fresh, tonumber(redis.call('HGET', KEYS[2], ARGV[1])), live}
"""

#: KEYS: epochs, then one lease key per device renewed, released, acquired (in that order).
#: ARGV: node, ttl_ms, #renew, #release, #acquire, then (device, epoch) per renewal and per
#: release, then device per acquisition. Returns 1/0 per renewal, then the new epoch (0: the
#: lease is held) per acquisition.
ROUND = """
local node, ttl = ARGV[1], ARGV[2]
local nr, nl, na = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
local k, a = 2, 6
for _ = 1, nr do
  if redis.call('GET', KEYS[k]) == node .. ' ' .. ARGV[a + 1] then
    redis.call('PEXPIRE', KEYS[k], ttl)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  k, a = k + 1, a + 2
end
for _ = 1, nl do
  if redis.call('GET', KEYS[k]) == node .. ' ' .. ARGV[a + 1] then
    redis.call('DEL', KEYS[k])
  end
  k, a = k + 1, a + 2
end
for _ = 1, na do
  if redis.call('EXISTS', KEYS[k]) == 0 then
    local epoch = redis.call('HINCRBY', KEYS[1], ARGV[a], 1)
    redis.call('SET', KEYS[k], node .. ' ' .. epoch, 'PX', ttl)
    out[#out + 1] = epoch
  else
    out[#out + 1] = 0
  end
  k, a = k + 1, a + 1
end
return out
"""

#: KEYS: streams. ARGV: consumer, how many of the streams (the first ones) to claim. Makes
#: each stream's group unless it exists; every pending entry of the claimed streams,
#: whoever held it, is the consumer's from now on. Returns, per entry claimed, the stream's
#: position in KEYS, the entry id and its task id (flat). The claimed streams' other
#: consumers, holding nothing after it, are deleted. One call takes a batch of newly won
#: devices: their streams are read only after it.
CLAIM_STREAMS = """
local out = {}
local claim = tonumber(ARGV[2])
for i, stream in ipairs(KEYS) do
  pcall(redis.call, 'XGROUP', 'CREATE', stream, 'nodes', '0', 'MKSTREAM')
  if i <= claim then
    local cursor = '0-0'
    repeat
      local reply = redis.call('XAUTOCLAIM', stream, 'nodes', ARGV[1], 0, cursor, 'COUNT', 100)
      cursor = reply[1]
      for _, entry in ipairs(reply[2]) do
        local task = ''
        local fields = entry[2]
        if type(fields) == 'table' then
          for j = 1, #fields, 2 do
            if fields[j] == 'task' then task = fields[j + 1] end
          end
        end
        out[#out + 1] = i
        out[#out + 1] = entry[1]
        out[#out + 1] = task
      end
    until cursor == '0-0'
    -- Every other consumer holds nothing now: forget them (a dead node's name would
    -- otherwise stay in the group for ever; a live one is made again by its next read).
    for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', stream, 'nodes')) do
      local name, pending
      for j = 1, #consumer, 2 do
        if consumer[j] == 'name' then name = consumer[j + 1] end
        if consumer[j] == 'pending' then pending = consumer[j + 1] end
      end
      if name ~= ARGV[1] and pending == 0 then
        redis.call('XGROUP', 'DELCONSUMER', stream, 'nodes', name)
      end
    end
  end
end
return out
"""

#: KEYS: task, stream. ARGV: task id, description, device, then field, value pairs.
#: Returns 1 (new), 0 (the same request again: nothing done), -1 (the id names another task).
SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local known = redis.call('HMGET', KEYS[1], 'description', 'device')
  if known[1] == ARGV[2] and known[2] == ARGV[3] then return 0 end
  return -1
end
pcall(redis.call, 'XGROUP', 'CREATE', KEYS[2], 'nodes', '0', 'MKSTREAM')
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'description', ARGV[2], 'device', ARGV[3], unpack(fields, 3))
local entry = redis.call('XADD', KEYS[2], '*', 'task', ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'queued', 'stream', KEYS[2], 'entry', entry, 'owner', '')
return 1
"""

#: KEYS: task[, lease]. ARGV: owner token[, lease value]. The task is this owner's from now
#: on (a claim fences the previous owner out). Returns the record's fields, or {} when the
#: lease is not this node's or the task is unknown.
TAKE = """
if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[2] then return {} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

#: KEYS: task[, lease]. ARGV: owner token[, lease value]. Returns 1 when marked sent.
MARK_SENT = """
if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
local known = redis.call('HMGET', KEYS[1], 'owner', 'state')
if known[1] ~= ARGV[1] or known[2] == 'ended' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'sent')
return 1
"""

#: KEYS: task, stream, outcomes[, lease]. ARGV: owner token, lease value, entry, outcome,
#: retention_ms, device, task id, outcome stream cap. Returns 1 (written), 2 (it had ended
#: already: only acknowledged), 0 (fenced: nothing written).
FINISH = """
local known = redis.call('HMGET', KEYS[1], 'owner', 'state')
if known[2] ~= 'ended' then
  if KEYS[4] and redis.call('GET', KEYS[4]) ~= ARGV[2] then return 0 end
  if known[1] ~= ARGV[1] then return 0 end
  redis.call('HSET', KEYS[1], 'state', 'ended', 'outcome', ARGV[4], 'ran_on', ARGV[6])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*',
             'task', ARGV[7], 'device', ARGV[6], 'outcome', ARGV[4])
end
redis.call('XACK', KEYS[2], 'nodes', ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
if known[2] == 'ended' then return 2 end
return 1
"""

#: KEYS: task, old stream, new stream. ARGV: owner token, entry, task id. Puts a task the
#: node cannot run back on a stream (a capability's) for any node. Returns 1, or 0 (fenced).
REQUEUE = """
local known = redis.call('HMGET', KEYS[1], 'owner', 'state')
if known[1] ~= ARGV[1] or known[2] == 'ended' then return 0 end
local entry = redis.call('XADD', KEYS[3], '*', 'task', ARGV[3])
redis.call('HSET', KEYS[1], 'state', 'queued', 'stream', KEYS[3], 'entry', entry, 'owner', '')
redis.call('XACK', KEYS[2], 'nodes', ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
return 1
"""

#: KEYS: nodes. Returns the live nodes (membership not expired on the server's clock).
LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""
