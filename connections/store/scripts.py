"""The Lua scripts behind every conditional write of the connection store.

Each exists for one reason: the check and the write must be one atomic step, so nothing is
read, changed in Python and written back, and nothing retries. Above all a write must not
resurrect a connection that was just disconnected (a late `last_signal` landing after the DEL
would leave a zombie hash), and a bind must not overwrite another player's binding.

Scripts name their keys in KEYS except the keys derived from stored values or allocated handles
(the player index in REMOVE, the connection hashes in CREATE); on Redis Cluster that is allowed
because every key of the layout shares the `{conn}` hash tag, hence one slot (see `keys`).
"""

# KEYS: conn, legacy, handles, player index.  ARGV: handle, player id, player name, state.
# Returns 1 bound, 0 no such connection, -1 bound to another player.
BIND = """
local current = redis.call('HGET', KEYS[1], 'player')
local exists = redis.call('EXISTS', KEYS[1]) == 1
if not exists or not current then
  local raw = redis.call('GET', KEYS[2])
  if raw then
    exists = true
    local ok, doc = pcall(cjson.decode, raw)
    if not current and ok and type(doc) == 'table' and type(doc['player']) == 'string' then
      current = doc['player']
    end
  end
end
if not exists then return 0 end
if current and current ~= ARGV[2] then return -1 end
redis.call('HSET', KEYS[1], 'player', ARGV[2], 'player_name', ARGV[3], 'state', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return 1
"""

# KEYS: conn, legacy, handles.  ARGV: handle, state.  Returns 1 set, 0 no such connection.
SET_STATE = """
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# KEYS: conn, meta, legacy, handles.  ARGV: handle, player index prefix, cutoff ('' = always).
# Returns 1 removed, 0 no such connection, -1 kept because its last signal is newer than cutoff.
REMOVE = """
local player = redis.call('HGET', KEYS[1], 'player')
local signal = redis.call('HGET', KEYS[1], 'last_signal')
local legacy = redis.call('GET', KEYS[3])
if legacy then
  local ok, doc = pcall(cjson.decode, legacy)
  if ok and type(doc) == 'table' then
    if not player and type(doc['player']) == 'string' then player = doc['player'] end
    if not signal and type(doc['metadata']) == 'table' then
      signal = doc['metadata']['LastConnectionSignal']
    end
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 and not legacy then
  redis.call('SREM', KEYS[4], ARGV[1])
  return 0
end
if ARGV[3] ~= '' and signal and tonumber(signal) and tonumber(signal) >= tonumber(ARGV[3]) then
  return -1
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
if player then redis.call('SREM', ARGV[2] .. player, ARGV[1]) end
return 1
"""

# KEYS: conn 1, meta 1, conn 2, meta 2, ...  Returns the HGETALL replies in the same order: one
# command per batch instead of two per connection (redis-py's per-command cost dominates).
LOAD = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
"""

# KEYS: conn, meta, legacy.  ARGV: n, n field/value pairs for conn, then pairs for meta.
# Returns 1 written, 0 the connection is gone (the write is dropped on purpose).
WRITE_IF_LIVE = """
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
local n = tonumber(ARGV[1])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 2, 1 + 2 * n)) end
if #ARGV > 1 + 2 * n then redis.call('HSET', KEYS[2], unpack(ARGV, 2 + 2 * n)) end
return 1
"""

# The web tier's registration: allocate the handle and register it in one step, optionally
# under an idempotency key so that a retried request lands on the same handle.
# KEYS: seq, handles[, idem].  ARGV: connection key prefix, idem TTL (seconds), request digest,
# state, protocol, remote_addr, connected_at, last_signal.
# Returns {handle, created (1/0), connection fields, metadata}, or {-1} when the idempotency key
# is held by a registration with another request digest.
CREATE = """
local handle
if KEYS[3] then
  local held = redis.call('GET', KEYS[3])
  if held then
    local h, digest = string.match(held, '^(%d+) (.*)$')
    if digest ~= ARGV[3] then return {-1} end
    handle = h
  end
end
if not handle then
  handle = tostring(redis.call('INCR', KEYS[1]))
  if KEYS[3] then redis.call('SET', KEYS[3], handle .. ' ' .. ARGV[3], 'EX', ARGV[2]) end
end
local key = ARGV[1] .. handle
local created = 0
if redis.call('EXISTS', key) == 0 then
  redis.call('HSET', key, 'state', ARGV[4], 'protocol', ARGV[5], 'remote_addr', ARGV[6],
             'connected_at', ARGV[7], 'last_signal', ARGV[8])
  redis.call('SADD', KEYS[2], handle)
  created = 1
end
return {tonumber(handle), created, redis.call('HGETALL', key),
        redis.call('HGETALL', key .. ':meta')}
"""

# A synchronous metadata merge (the web tier's PATCH): refuse past the key limit, write, and
# answer with what Redis now holds, in one round trip.
# KEYS: conn, meta, legacy.  ARGV: key limit, then field/value pairs.
# Returns {0} no such connection, {-1} too many keys, or {1, fields, metadata, legacy or nil}.
UPDATE_METADATA = """
local legacy = redis.call('GET', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 0 and not legacy then return {0} end
local added = 0
for i = 2, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then added = added + 1 end
end
if redis.call('HLEN', KEYS[2]) + added > tonumber(ARGV[1]) then return {-1} end
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
return {1, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), legacy or false}
"""

# Raise the handle allocator above every converted legacy handle so no new connection reuses
# one.  KEYS: seq.  ARGV: the largest converted handle.
RAISE_SEQ = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
