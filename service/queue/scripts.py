"""The queue's Lua scripts. Each runs atomically in Redis, so no state change is ever half done."""

from __future__ import annotations

from string import Template

from synthgen.core.jobs import JobStatus


def _lua(source: str) -> str:
    """A script with the job statuses filled in from the enum (``$succeeded`` ...): no status is spelled here."""
    return Template(source).substitute({s.value: s.value for s in JobStatus})


# Shared by both completion scripts: store a chunk's result, count it done exactly once, and add its
# predicted labels (a JSON object {"name=value": images}, or '' without a classifier) to the job's histogram.
_COMMON = """
local function count_labels(histogram, counts, expire_at)
  if counts == '' then return end
  for field, images in pairs(cjson.decode(counts)) do
    redis.call('HINCRBY', histogram, field, images)
  end
  redis.call('EXPIREAT', histogram, expire_at)
end
local function store_result(result, done_set, tar, offsets, expire_at)
  if tar ~= '' then
    redis.call('HSET', result, 'tar', tar, 'offsets', offsets)
  else
    redis.call('HSET', result, 'offsets', offsets)
  end
  redis.call('EXPIREAT', result, expire_at)
  redis.call('EXPIREAT', done_set, expire_at)
end
local function count_done(job, progress, queued, chunk, images, now)
  redis.call('DECRBY', queued, images)
  redis.call('RPUSH', progress, chunk)
  redis.call('LTRIM', progress, -64, -1)
  redis.call('EXPIRE', progress, 60)
  local done = redis.call('HINCRBY', job, 'done', images)
  local finished = 0
  if done >= tonumber(redis.call('HGET', job, 'count')) then
    redis.call('HSET', job, 'status', '$succeeded', 'finished_at', now)
    finished = 1
  end
  return done, finished
end
"""

# Complete a chunk: store its result, mark it done (SADD: progress counts each chunk once), update the
# statistics that admission control reads, and only then XACK and XDEL its entry.
# KEYS: job, done set, result, stream, result-bytes bucket, drained bucket, queued-images counter,
#       progress list (wakes readers waiting on the job), predicted-label histogram
# ARGV: chunk, images, tar ('' when the bytes live in a directory store), offsets, results expire at
#       (unix s), group, entry id, now, result bytes, bytes bucket expires at (unix s), label counts
COMPLETE_CHUNK = _lua(
    _COMMON
    + """
local function ack()
  redis.call('XACK', KEYS[4], ARGV[6], ARGV[7])
  redis.call('XDEL', KEYS[4], ARGV[7])
end
if redis.call('EXISTS', KEYS[1]) == 0 then ack() return {-1, 0} end
local status = redis.call('HGET', KEYS[1], 'status')
if status == '$cancelled' or status == '$failed' then ack() return {-2, 0} end
if tonumber(ARGV[8]) >= tonumber(redis.call('HGET', KEYS[1], 'expires_at')) then
  redis.call('DECRBY', KEYS[7], ARGV[2])
  ack()
  return {-3, 0}
end
local done = tonumber(redis.call('HGET', KEYS[1], 'done'))
local finished = 0
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  store_result(KEYS[3], KEYS[2], ARGV[3], ARGV[4], ARGV[5])
  redis.call('INCRBY', KEYS[5], ARGV[9])
  redis.call('EXPIREAT', KEYS[5], ARGV[10])
  redis.call('INCRBY', KEYS[6], ARGV[2])
  redis.call('EXPIRE', KEYS[6], 120)
  count_labels(KEYS[9], ARGV[11], ARGV[5])
  done, finished = count_done(KEYS[1], KEYS[8], KEYS[7], ARGV[1], ARGV[2], ARGV[8])
end
ack()
return {done, finished}
"""
)

# Mark a queued job running, once.  KEYS: job.  ARGV: now.
MARK_RUNNING = _lua("""
if redis.call('HGET', KEYS[1], 'status') == '$queued' then
  redis.call('HSET', KEYS[1], 'status', '$running', 'started_at', ARGV[1])
  return 1
end
return 0
""")

# Cancel (or fail) a job that has not finished, and release its images not yet done from the
# queued-images counter. Returns the status afterwards, or nil when there is no such job.
# KEYS: job, queued-images counter.  ARGV: now, new status, error message.
STOP_JOB = _lua("""
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return nil end
if status == '$queued' or status == '$running' then
  local remaining = tonumber(redis.call('HGET', KEYS[1], 'count')) - tonumber(redis.call('HGET', KEYS[1], 'done'))
  redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[1], 'error', ARGV[3])
  redis.call('DECRBY', KEYS[2], remaining)
  return ARGV[2]
end
return status
""")

# Complete one chunk of a unique job, which a single worker computes in order: like COMPLETE_CHUNK,
# but it also records the chunk's acceptance state (its accepted embeddings and the next candidate
# latent index) and appends the embeddings to the job's collection, and it does not ack the entry,
# which covers the whole job. KEYS: job, done set, result, state hash, collection list (or the state
# hash again when there is no collection), progress list, queued-images counter, predicted-label histogram.
# ARGV: chunk, images, tar, offsets, results expire at, now, embeddings, next candidate, has collection,
#       label counts
COMPLETE_UNIQUE_CHUNK = _lua(
    _COMMON
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local status = redis.call('HGET', KEYS[1], 'status')
if status == '$cancelled' or status == '$failed' then return {-2, 0} end
local done = tonumber(redis.call('HGET', KEYS[1], 'done'))
local finished = 0
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  store_result(KEYS[3], KEYS[2], ARGV[3], ARGV[4], ARGV[5])
  redis.call('HSET', KEYS[4], 'emb:' .. ARGV[1], ARGV[7], 'next:' .. ARGV[1], ARGV[8])
  redis.call('EXPIREAT', KEYS[4], ARGV[5])
  if ARGV[9] == '1' then redis.call('RPUSH', KEYS[5], ARGV[7]) end
  count_labels(KEYS[8], ARGV[10], ARGV[5])
  done, finished = count_done(KEYS[1], KEYS[6], KEYS[7], ARGV[1], ARGV[2], ARGV[6])
end
return {done, finished}
"""
)
