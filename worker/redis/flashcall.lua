#!lua name=flashcall

--[[
The flashcall library: the producer contract and every state transition of a
verification. Producers call the five public functions (flashcall_start, _check,
_status, _cancel, _version); the rest are the workers' own.

Each transition is one atomic call: it checks the verification's state, changes it,
appends to the event stream and, where work follows, enqueues the Dramatiq message in
the same step, so a crash can never leave a state change without its event or its
next message.

Keys are built here from the same prefix as worker/core/keys.py; the functions take no
declared keys, which standalone Redis and Sentinel allow (Redis Cluster could not host
Dramatiq's broker anyway).
]]

local VERSION = '19'

local PREFIX = 'flashcall:'
local NAMESPACE = 'flashcall:'          -- Dramatiq's broker namespace
local VERIFY_QUEUE = 'verifications'
local CHECK_QUEUE = 'checks'
local K_EVENTS = PREFIX .. 'events'
local K_SEQ = PREFIX .. 'seq'
local K_STEP_TIMERS = PREFIX .. 'timers:step'
local K_EXPIRY_TIMERS = PREFIX .. 'timers:expire'
local K_POLL_TIMERS = PREFIX .. 'timers:poll'
local K_POLICIES = PREFIX .. 'config:policies'
local K_LIMITS = PREFIX .. 'config:limits'
-- What else routing.yaml has a start checked against, when it sets any: {limits = {kind:
-- [[limit, per ms], ...]} (the limits on more than the number), lists = true (K_LISTS
-- holds entries)}; and the number ranges' operators (prefix -> operator) limits count by.
local K_GUARDS = PREFIX .. 'config:guards'
local K_OPERATORS = PREFIX .. 'config:operators'
-- routing.yaml's fraud lists: number prefixes (a whole number is one) -> 'safe' or 'blocked'.
local K_LISTS = PREFIX .. 'config:lists'
-- A refused start's reasons: what its record and the forgetting of refused ids know it by.
local REFUSALS = {rate_limited = true, blocked = true, fraud_suspected = true}
-- Refused starts, oldest first ('<ms> <id>'): what bounds them (refuse_start).
local K_REFUSED = PREFIX .. 'refused'
-- Counts of what the library does, drained into the workers' Prometheus counters.
local K_METRICS = PREFIX .. 'metrics'
-- The choice learned routing leads with, per policy:channel:operator (a provider, or '-'
-- for a step it skips).
local K_LEADERS = PREFIX .. 'learn:leaders'

local EVENTS_MAXLEN = '1000000'
local MAX_REQUEST_BYTES = 4096
local MAX_METADATA_BYTES = 1024
local DEFAULT_CODE_LENGTH = 4
local MIN_CODE_LENGTH, MAX_CODE_LENGTH = 4, 6
local DEFAULT_TTL = 600
local MIN_TTL, MAX_TTL = 30, 86400
local MAX_CHECKS = 3
local MAX_CHECKS_TEXT = MAX_CHECKS .. ''
-- A verification stays readable (status, idempotent start) this long after its lifetime.
local RETENTION_MS = 86400 * 1000
-- A refused start (rate_limited) is remembered this long, and at most this many at once
-- (the oldest forgotten first), in K_REFUSED's order: a flood of refused ids stays bounded.
local REFUSED_RETENTION_MS = 3600 * 1000
local REFUSED_MAX = 100000
local REPLY_TTL = '60'
-- A start whose first message was lost is picked up again after this long.
local START_RECOVERY_MS = 30000
local WAKE_TOKENS = 16
-- Per-number limits until a worker publishes routing.yaml's: 1 per 2 minutes, 10 per day.
local DEFAULT_LIMITS = {{1, 120000}, {10, 86400000}}
-- Health is counted in buckets of this many milliseconds, kept for an hour.
local HEALTH_BUCKET_MS = 10000
local HEALTH_TTL = 3600
-- How far workers' clocks may run from Redis's and from each other's: the running sums of
-- health (health_window) are rebuilt before a bucket they hold could have expired, with
-- this much to spare.
local HEALTH_SKEW_MS = 60000
-- A day's spend (flashcall:spent:<provider>:<day>) is kept two days.
local SPENT_TTL = '172800'

local FINAL = {approved = true, failed = true, expired = true, canceled = true, max_attempts = true}
local CHANNELS = {flashcall = true, voice = true, sms = true}
-- An attempt still owns the verification: its call is being placed (calling), reached the
-- user (delivered), or may have (unknown: its worker died mid-call, docs/reliability.md).
local IN_FLIGHT = {calling = true, delivered = true, unknown = true}

local function vkey(id) return PREFIX .. 'v:' .. id end
-- A callback token's record is found by the token's digest: the verification keeps only the
-- digest (field `callback`), so that reading a verification gives no usable token.
local function token_digest(token) return redis.sha1hex(token) end
local function callback_key_of(digest) return PREFIX .. 'callback:' .. digest end
local function callback_key(token) return callback_key_of(token_digest(token)) end
local function breaker_key(name) return PREFIX .. 'breaker:' .. name end
local function provider_key(name) return PREFIX .. 'provider:' .. name end
local function spent_key(name, day) return PREFIX .. 'spent:' .. name .. ':' .. day end

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fmt_int(n) return string.format('%d', n) end

-- Numbers handed to redis.call are formatted with %.17g, which costs more than the command:
-- what the functions write is text already (arguments as they came, or formatted once).
local function count(field) redis.call('HINCRBY', K_METRICS, field, '1') end

local function refuse(message)
    return redis.error_reply('ERR flashcall: ' .. message)
end

local function json_string(value) return cjson.encode(value) end

-- A JSON string of text that needs no escaping: a verification id (valid_id), a phone, a
-- policy, channel, queue or actor name, a code, a reply key.
local function quoted(text) return '"' .. text .. '"' end

-- Dramatiq's Redis broker: message data in <queue>.msgs, its id pushed on <queue>. `seq`, a
-- number the caller took from K_SEQ for something else of the same call (as text), names the
-- message too; `at` is `now` as text, when the caller has it.
local function enqueue(queue, actor, args_json, now, seq, at)
    seq = seq or fmt_int(redis.call('INCR', K_SEQ))
    at = at or fmt_int(now)
    local mid = 'fc-' .. at .. '-' .. seq
    local message = '{"queue_name":"' .. queue .. '","actor_name":"' .. actor
        .. '","args":' .. args_json
        .. ',"kwargs":{},"options":{"redis_message_id":"' .. mid .. '"}'
        .. ',"message_id":"' .. mid .. '","message_timestamp":' .. at .. '}'
    redis.call('HSET', NAMESPACE .. queue .. '.msgs', mid, message)
    redis.call('RPUSH', NAMESPACE .. queue, mid)
    -- Idle consumers block on this list instead of polling (see worker/redis/broker.py); they
    -- take the tokens, and busy ones leave them: trimmed back to WAKE_TOKENS once there are
    -- twice as many, it costs a command in WAKE_TOKENS enqueues at most.
    local wake = PREFIX .. 'wake:' .. queue
    if redis.call('RPUSH', wake, '1') > 2 * WAKE_TOKENS then redis.call('LTRIM', wake, 0, WAKE_TOKENS - 1) end
    return mid
end

-- `first`, for a verification's first attempt, carries what the worker needs to make it,
-- so that the worker need not read the verification back first.
local function enqueue_advance(id, attempt, cause, now, first, at)
    return enqueue(VERIFY_QUEUE, 'advance',
        '[' .. quoted(id) .. ',' .. fmt_int(attempt) .. ',' .. quoted(cause)
        .. (first and (',' .. first) or '') .. ']', now, nil, at)
end

local function hgetall(key)
    local flat = redis.call('HGETALL', key)
    if #flat == 0 then return nil end
    local v = {}
    for i = 1, #flat, 2 do v[flat[i]] = flat[i + 1] end
    return v
end

-- Reads the fields `names` (then `extra`) of verification v.id into v. Each function reads
-- what its common path needs, and more only on the paths that need it: a field read costs
-- about as much as a command (HMGET searches the hash's listpack for each), and an HGETALL
-- of the thirty and more fields a verification holds cost a third of a transition.
local function read(v, names, extra)
    local asked = names
    if extra then
        asked = {unpack(names)}
        for _, name in ipairs(extra) do asked[#asked + 1] = name end
    end
    local values = redis.call('HMGET', vkey(v.id), unpack(asked))
    for i, name in ipairs(asked) do v[name] = values[i] or nil end
    return v
end

-- A verification with the fields `names` (then `extra`), or nil when there is none. `names`
-- starts with 'status', which every record (a refused start's too) has.
local function load(id, names, extra)
    local v = read({id = id}, names, extra)
    if not v.status then return nil end
    return v
end

-- The names of both lists, each once, in their order. (Built as the library loads, when
-- Redis offers no ipairs.)
local function fields_of(first, second)
    local out, seen = {}, {}
    local function add(name)
        if not seen[name] then
            seen[name] = true
            out[#out + 1] = name
        end
    end
    for i = 1, #first do add(first[i]) end
    for i = 1, #second do add(second[i]) end
    return out
end

-- The names of `list` that `taken` lacks.
local function fields_besides(list, taken)
    local out, skip = {}, {}
    for i = 1, #taken do skip[taken[i]] = true end
    for i = 1, #list do
        if not skip[list[i]] then out[#out + 1] = list[i] end
    end
    return out
end

-- What ending a verification reads of it (expire_if_due, finish, learn_miss, emit).
local ENDING = {'status', 'expires_at', 'attempt', 'attempt_state', 'step', 'channel', 'provider',
                'metadata', 'learn', 'operator', 'poll_timer'}
-- What flashcall_status shows.
local SHOWN = {'status', 'expires_at', 'phone', 'policy', 'attempt', 'checks', 'max_checks', 'cost_e4',
               'created_at', 'updated_at', 'reason', 'channel', 'step', 'provider', 'metadata'}

local EXTRA_EVENT_FIELDS = {'reason', 'limit', 'error_code', 'from_provider', 'from_channel', 'from_step',
                            'attempts_left', 'cost', 'client_ip'}

-- One entry on the event stream; fields left nil are left out. `at` is `now` as text, when
-- the caller has it.
local function emit(event, v, now, extra, at)
    local fields = {'event', event, 'id', v.id, 'status', v.status or '', 'at', at or fmt_int(now)}
    local function add(name, value)
        if value ~= nil and value ~= '' then
            fields[#fields + 1] = name
            fields[#fields + 1] = tostring(value)
        end
    end
    add('step', v.step)
    add('channel', v.channel)
    add('provider', v.provider)
    add('attempt', v.attempt)
    if extra then
        for _, name in ipairs(EXTRA_EVENT_FIELDS) do add(name, extra[name]) end
    end
    add('metadata', v.metadata ~= '{}' and v.metadata or nil)
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', unpack(fields))
end

local function learn_key(provider) return PREFIX .. 'learn:' .. provider end

-- Fold one observation into '<attempts> <approvals> <ms to approval> <updated at>': each
-- new observation weighs 1/memory, and time unobserved fades all by half-life.
local function fold(raw, memory, half_life, now, trial, approval, approval_ms)
    local n, s, ms, at = 0, 0, 0, now
    if raw then
        local a, b, c, d = string.match(raw, '^(%S+) (%S+) (%S+) (%S+)$')
        n, s, ms, at = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
    end
    local keep = 2 ^ (-math.max(0, now - at) / half_life)
    if trial > 0 then keep = keep * (1 - 1 / memory) end
    n, s, ms = n * keep + trial, s * keep + approval, ms * keep + approval_ms
    return string.format('%.6f %.6f %.1f %d', n, s, ms, math.max(now, at))
end

-- One settled, delivered attempt in the learned conversion of its provider x channel x
-- operator range ('<channel>|<operator>'), and in the provider's recent conversion on the
-- channel over every range ('<channel>|*', a short memory: what changed lately).
-- `spec` ('<memory>:<half_life_ms>:<recent memory>', stored with the attempt) is empty
-- when learning is off.
local function learn(spec, provider, channel, operator, now, trial, approval, approval_ms)
    local memory, half_life, recent = string.match(spec or '', '^(%d+):(%d+):(%d+)$')
    if not memory or (provider or '') == '' then return end
    local key, field, everywhere = learn_key(provider), channel .. '|' .. operator, channel .. '|*'
    local raw = redis.call('HMGET', key, field, everywhere)
    redis.call('HSET', key,
        field, fold(raw[1], tonumber(memory), tonumber(half_life), now, trial, approval, approval_ms),
        everywhere, fold(raw[2], tonumber(recent), tonumber(half_life), now, trial, approval, approval_ms))
end

-- The current attempt, delivered, settled without the code being typed.
local function learn_miss(v, now)
    if v.attempt_state == 'delivered' then
        learn(v.learn, v.provider, v.channel, v.operator or 'other', now, 1, 0, 0)
    end
end

-- `poll_timer` is '0' until a poll timer is set (start writes it, attempt_delivered sets '1');
-- a verification started by a library before version 12 lacks it, and may have one.
local function clear_timers(v)
    redis.call('ZREM', K_STEP_TIMERS, v.id)
    redis.call('ZREM', K_EXPIRY_TIMERS, v.id)
    if v.poll_timer ~= '0' then redis.call('ZREM', K_POLL_TIMERS, v.id) end
end

-- `at` is `now` as text, when the caller has it.
local function finish(v, status, reason, now, event, extra, at)
    at = at or fmt_int(now)
    if status == 'expired' or status == 'max_attempts' then learn_miss(v, now) end
    v.status, v.reason, v.updated_at = status, reason or '', at
    count('finished|' .. status .. '|' .. (status == 'failed' and (reason or '') or ''))
    redis.call('HSET', vkey(v.id), 'status', status, 'reason', reason or '', 'updated_at', at, 'finished_at', at)
    clear_timers(v)
    emit(event, v, now, extra, at)
end

-- Ends a verification past its lifetime; `rest`, the fields of ENDING its caller has not
-- read, are read first. Answers whether it ended it.
local function expire_if_due(v, now, at, rest)
    if FINAL[v.status] or now < tonumber(v.expires_at) then return false end
    if rest then read(v, rest) end
    finish(v, 'expired', 'ttl', now, 'expired', nil, at)
    return true
end

local function format_cost(e4)
    local cost = string.format('%d.%04d', math.floor(e4 / 10000), e4 % 10000)
    return (cost:gsub('0+$', ''):gsub('%.$', '.00'):gsub('%.(%d)$', '.%10'))
end

local function mask_phone(phone)
    if #phone < 6 then return '***' end
    return '+' .. phone:sub(1, 4) .. string.rep('*', #phone - 6) .. phone:sub(-2)
end

local function public_status(id, v, now)
    if not v then
        return cjson.encode({id = id, status = 'not_found'})
    end
    local status = v.status
    if not FINAL[status] and now >= tonumber(v.expires_at) then status = 'expired' end
    local checks = tonumber(v.checks) or 0
    local max_checks = tonumber(v.max_checks) or MAX_CHECKS
    local out = {
        id = id,
        status = status,
        phone = mask_phone(v.phone),
        policy = v.policy,
        attempts = tonumber(v.attempt) or 0,
        checks_left = math.max(0, max_checks - checks),
        cost = format_cost(tonumber(v.cost_e4) or 0),
        created_at = tonumber(v.created_at),
        updated_at = tonumber(v.updated_at),
        expires_at = tonumber(v.expires_at),
    }
    if v.reason and v.reason ~= '' then out.reason = v.reason end
    if v.channel and v.channel ~= '' then
        out.step = tonumber(v.step)
        out.channel = v.channel
        out.provider = v.provider
    end
    if v.metadata and v.metadata ~= '{}' then out.metadata = cjson.decode(v.metadata) end
    return cjson.encode(out)
end

---------------------------------------------------------------------------
-- Request validation (producer side)
---------------------------------------------------------------------------

local function json_number(token)
    local int, rest = token:match('^%-?(%d+)(.*)$')
    if not int or (#int > 1 and int:sub(1, 1) == '0') then return false end
    rest = rest:gsub('^%.%d+', '', 1)
    rest = rest:gsub('^[eE][%+%-]?%d+', '', 1)
    return rest == ''
end

-- cjson reads numbers with strtod, so it also takes what JSON does not: 0x40, +1, 012, 1.,
-- NaN, Infinity. The first such numeral outside strings in text cjson decoded, shortened.
local function non_json_numeral(payload)
    local i = 1
    while true do
        local at, _, found = payload:find('(["%w%+%-%.])', i)
        if not at then return nil end
        if found == '"' then
            -- Skip the string: to the next quote that no backslash escapes.
            local j = at + 1
            while true do
                local stop, _, c = payload:find('([\\"])', j)
                if not stop then return nil end
                if c == '"' then i = stop + 1 break end
                j = stop + 2
            end
        else
            local token = payload:match('^[%w%+%-%.]+', at)
            if token ~= 'true' and token ~= 'false' and token ~= 'null' and not json_number(token) then
                return #token > 24 and (token:sub(1, 24) .. '...') or token
            end
            i = at + #token
        end
    end
end

local function decode_request(args, fields, most_args)
    local payload = args[1]
    if #args < 1 or #args > (most_args or 1) or type(payload) ~= 'string' or payload == '' then
        return nil, 'expected one argument: a JSON object'
    end
    if #payload > MAX_REQUEST_BYTES then
        return nil, 'request is ' .. #payload .. ' bytes, the limit is ' .. MAX_REQUEST_BYTES
    end
    local ok, request = pcall(cjson.decode, payload)
    if not ok or type(request) ~= 'table' or payload:match('^%s*{') == nil then
        return nil, 'request is not a JSON object'
    end
    local numeral = non_json_numeral(payload)
    if numeral then
        return nil, 'request is not a JSON object: ' .. numeral .. ' is not a JSON number'
    end
    local unknown = {}
    for name, _ in pairs(request) do
        if type(name) ~= 'string' or not fields[name] then unknown[#unknown + 1] = tostring(name) end
    end
    if #unknown > 0 then
        table.sort(unknown)
        -- Control characters escaped: a NUL would cut the error reply short.
        local shown = string.gsub(unknown[1], '%c', function(c) return string.format('\\u%04x', c:byte()) end)
        return nil, "unknown field '" .. shown .. "'"
    end
    return request
end

local function valid_id(id)
    if type(id) ~= 'string' then return nil, "'id' is required and must be a string" end
    if #id < 1 or #id > 128 or not id:match('^[%w][%w%._:%-]*$') then
        return nil, "'id' must be 1 to 128 characters of letters, digits and . _ : - (starting with a letter or digit)"
    end
    return id
end

-- One definition with worker/core/phone.py, tested against the same table (tests/cases/phones.json):
-- only the ASCII space, '-', '(' and ')' are dropped, and the digits are ASCII.
local function normalise_phone(phone)
    if type(phone) ~= 'string' then return nil, "'phone' is required and must be a string" end
    local compact = phone:gsub('[ %-%(%)]', '')
    local national = compact:match('^%+7(%d+)$') or compact:match('^[78](%d+)$')
    if not national or #national ~= 10 then
        return nil, "'phone' must be a Russian number: +7XXXXXXXXXX, 7XXXXXXXXXX or 8XXXXXXXXXX"
    end
    return '7' .. national
end

-- Client addresses: one definition with worker/core/addresses.py, tested against the same table
-- (tests/cases/ips.json). IPv4 as a dotted quad without leading zeros; IPv6 as RFC 4291
-- writes it (eight groups of 1 to 4 hex digits, one '::' for one or more zero groups, the
-- last two groups optionally as a dotted quad); no zone id.
local function valid_ipv4(text)
    local parts = {text:match('^(%d+)%.(%d+)%.(%d+)%.(%d+)$')}
    if #parts ~= 4 then return false end
    for _, part in ipairs(parts) do
        if #part > 3 or tonumber(part) > 255 or (#part > 1 and part:sub(1, 1) == '0') then return false end
    end
    return true
end

-- How many hex groups 'a:b:c' holds ('' holds none), or nil if it is not such a list.
local function hex_groups(text)
    if text == '' then return 0 end
    local n = 0
    for group in (text .. ':'):gmatch('([^:]*):') do
        if not group:match('^%x%x?%x?%x?$') then return nil end
        n = n + 1
    end
    return n
end

local function valid_ipv6(text)
    local needed = 8
    local v4 = text:match(':(%d+%.%d+%.%d+%.%d+)$')
    if v4 then
        if not valid_ipv4(v4) then return false end
        needed = 6
        text = text:sub(1, #text - #v4)
        if text:sub(-2) ~= '::' then text = text:sub(1, -2) end
    end
    local first, last = text:find('::', 1, true)
    if not first then return hex_groups(text) == needed end
    local before, after = hex_groups(text:sub(1, first - 1)), hex_groups(text:sub(last + 1))
    return before ~= nil and after ~= nil and before + after < needed
end

local function valid_ip(text)
    if type(text) ~= 'string' or #text > 45 then return false end
    return valid_ipv4(text) or valid_ipv6(text)
end

local function integer_in(value, name, low, high)
    if type(value) ~= 'number' or value ~= math.floor(value) or value < low or value > high then
        return nil, "'" .. name .. "' must be an integer from " .. low .. ' to ' .. high
    end
    return value
end

local START_FIELDS = {id = true, phone = true, policy = true, channels = true, code_length = true,
                      ttl = true, client_ip = true, limit_key = true, metadata = true}

local API_KEY_NAME = '^[%w_%-]+$'
local VIA_START = {id = true, api_key = true}
local VIA_CHECK = {id = true, reply = true}
local BAD_VIA = 'the second argument must be a JSON object of what the HTTP API adds (docs/protocol.md)'
local REPLY_TOKEN_MIN, REPLY_TOKEN_MAX = 16, 64

-- The HTTP API's second argument (worker/api), decoded, or nil and why not. `reply` (check
-- only) is a token the API drew for the check's reply key, so that it can send its BLPOP in
-- the same round trip as the FCALL.
local function decode_via(payload, allowed)
    local ok, via = pcall(cjson.decode, payload)
    if not ok or type(via) ~= 'table' or payload:match('^%s*{') == nil then return nil, BAD_VIA end
    for name, _ in pairs(via) do
        if not allowed[name] then return nil, BAD_VIA end
    end
    if via.reply ~= nil then
        local token = via.reply
        if type(token) ~= 'string' or #token < REPLY_TOKEN_MIN or #token > REPLY_TOKEN_MAX
            or not token:match('^%w+$') then
            return nil, "'reply' must be " .. REPLY_TOKEN_MIN .. ' to ' .. REPLY_TOKEN_MAX .. ' letters and digits'
        end
        via.reply_key = PREFIX .. 'reply:api:' .. token
    end
    return via
end

-- What the second argument brought beside the body: `id` is the id the request's URL or its
-- Idempotency-Key header names, which stands for the body's; `api_key` names the key it came
-- with, written into the metadata where the client cannot choose it.
local function apply_via(request, via)
    if via.id ~= nil then
        if request.id == nil then
            request.id = via.id
        elseif request.id ~= via.id then
            return "'id' differs from the id the request names in its URL or its Idempotency-Key header"
        end
    end
    if via.api_key ~= nil then
        if type(via.api_key) ~= 'string' or #via.api_key > 64 or not via.api_key:match(API_KEY_NAME) then
            return "'api_key' must be 1 to 64 letters, digits, _ and -"
        end
        if request.metadata == nil then request.metadata = {} end
        if type(request.metadata) == 'table' then request.metadata.api_key = via.api_key end
    end
    return nil
end

-- A request and, from the HTTP API, what it brought beside its body.
local function decode_with_via(args, fields, via_fields)
    local request, err = decode_request(args, fields, 2)
    if request and args[2] ~= nil then
        local via
        via, err = decode_via(args[2], via_fields)
        err = err or apply_via(request, via)
        if err then return nil, err end
        request.reply_key = via.reply_key
    end
    return request, err
end

local function validate_start(args)
    local request, err = decode_with_via(args, START_FIELDS, VIA_START)
    if not request then return nil, err end
    local out = {}
    out.id, err = valid_id(request.id)
    if not out.id then return nil, err end
    out.phone, err = normalise_phone(request.phone)
    if not out.phone then return nil, err end

    out.policy = 'default'
    if request.policy ~= nil then
        if type(request.policy) ~= 'string' or not request.policy:match('^[%w_%-]+$') or #request.policy > 64 then
            return nil, "'policy' must be a policy name from routing.yaml"
        end
        if redis.call('EXISTS', K_POLICIES) == 1
            and redis.call('SISMEMBER', K_POLICIES, request.policy) == 0 then
            return nil, "unknown policy '" .. request.policy .. "': it is not in routing.yaml"
        end
        out.policy = request.policy
    end

    out.channels = ''
    if request.channels ~= nil then
        if type(request.channels) ~= 'table' or #request.channels == 0 then
            return nil, "'channels' must be a non-empty list of flashcall, voice, sms"
        end
        local seen, list = {}, {}
        for i, channel in pairs(request.channels) do
            if type(i) ~= 'number' or type(channel) ~= 'string' or not CHANNELS[channel] then
                return nil, "'channels' may hold only flashcall, voice and sms"
            end
            if seen[channel] then return nil, "'channels' names " .. channel .. ' twice' end
            seen[channel] = true
            list[#list + 1] = channel
        end
        out.channels = table.concat(list, ',')
    end

    out.code_length = DEFAULT_CODE_LENGTH
    if request.code_length ~= nil then
        out.code_length, err = integer_in(request.code_length, 'code_length', MIN_CODE_LENGTH, MAX_CODE_LENGTH)
        if not out.code_length then return nil, err end
    end

    out.ttl = DEFAULT_TTL
    if request.ttl ~= nil then
        out.ttl, err = integer_in(request.ttl, 'ttl', MIN_TTL, MAX_TTL)
        if not out.ttl then return nil, err end
    end

    out.client_ip = ''
    if request.client_ip ~= nil then
        if not valid_ip(request.client_ip) then
            return nil, "'client_ip' must be an IPv4 or IPv6 address"
        end
        out.client_ip = request.client_ip
    end

    out.limit_key = ''
    if request.limit_key ~= nil then
        if type(request.limit_key) ~= 'string' or #request.limit_key < 1 or #request.limit_key > 128
            or not request.limit_key:match('^[%w%._:@/%-]+$') then
            return nil, "'limit_key' must be 1 to 128 characters of letters, digits and . _ : @ / -"
        end
        out.limit_key = request.limit_key
    end

    out.metadata = '{}'
    if request.metadata ~= nil then
        if type(request.metadata) ~= 'table' then
            return nil, "'metadata' must be a JSON object"
        end
        for key, _ in pairs(request.metadata) do
            if type(key) ~= 'string' then return nil, "'metadata' must be a JSON object" end
        end
        if next(request.metadata) ~= nil then
            local encoded, metadata = pcall(cjson.encode, request.metadata)
            -- cjson reads NaN, Infinity and 1e999 but cannot write them back.
            if not encoded then return nil, "'metadata' may hold only finite numbers" end
            out.metadata = metadata
            if #out.metadata > MAX_METADATA_BYTES then
                return nil, "'metadata' is " .. #out.metadata .. ' bytes, the limit is ' .. MAX_METADATA_BYTES
            end
        end
    end
    return out
end

---------------------------------------------------------------------------
-- Producer functions
---------------------------------------------------------------------------

-- A number's starts ('flashcall:phone:<number>', scored by when) and the published limits,
-- each read once: {key, limits, longest window, scores oldest first}. The record holds no
-- more than the limits allow in the longest window, and what aged out of it since the last
-- start.
local function phone_starts(phone, published)
    local limits = published and cjson.decode(published) or DEFAULT_LIMITS
    local longest = 0
    for _, rule in ipairs(limits) do longest = math.max(longest, rule[2]) end
    local key = PREFIX .. 'phone:' .. phone
    local flat = redis.call('ZRANGEBYSCORE', key, '-inf', '+inf', 'WITHSCORES')
    local scores = {}
    for i = 2, #flat, 2 do scores[#scores + 1] = tonumber(flat[i]) end
    return {key = key, limits = limits, longest = longest, scores = scores}
end

-- Milliseconds until this number may start another verification, or nil if it may now.
-- Counts each start in every window of the published limits.
local function phone_limited(starts, now)
    local scores, wait = starts.scores, nil
    for _, rule in ipairs(starts.limits) do
        local limit, per = rule[1], rule[2]
        local first = #scores + 1
        while first > 1 and scores[first - 1] >= now - per do first = first - 1 end
        local count = #scores - first + 1
        if count >= limit then
            -- The window frees up when the oldest start that still counts leaves it.
            local until_free = scores[first + count - limit] + per - now
            if not wait or until_free > wait then wait = until_free end
        end
    end
    return wait
end

local function remember_start(starts, id, now, at)
    local key, longest = starts.key, starts.longest
    redis.call('ZADD', key, at, id)
    if #starts.scores > 0 and starts.scores[1] <= now - longest then
        redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt_int(now - longest))
    end
    redis.call('PEXPIRE', key, fmt_int(longest))
end

-- Limits on more than the number (routing.yaml's limits.per_ip ... overall): each window
-- counts a subject's accepted starts in buckets as long as the window, and weighs the
-- previous bucket by the share of it still inside the window (a sliding window, two
-- counts per subject and window, whatever the rate). Subjects and their order:
local KEYED_KINDS = {'per_key', 'per_ip', 'per_network', 'per_range', 'per_operator', 'overall'}

-- An address's groups as numbers: 4 octets of IPv4, 8 groups of IPv6 (valid_ip holds).
local function ip_numbers(text)
    local v4 = {text:match('^(%d+)%.(%d+)%.(%d+)%.(%d+)$')}
    if #v4 == 4 then
        for i = 1, 4 do v4[i] = tonumber(v4[i]) end
        return v4, 'v4'
    end
    local tail = {}
    local quad = text:match(':(%d+%.%d+%.%d+%.%d+)$')
    if quad then
        local a, b, c, d = quad:match('^(%d+)%.(%d+)%.(%d+)%.(%d+)$')
        tail = {tonumber(a) * 256 + tonumber(b), tonumber(c) * 256 + tonumber(d)}
        text = text:sub(1, #text - #quad)
        if text:sub(-2) ~= '::' then text = text:sub(1, -2) end
    end
    local function groups(part)
        local out = {}
        if part == '' then return out end
        for group in (part .. ':'):gmatch('([^:]*):') do out[#out + 1] = tonumber(group, 16) end
        return out
    end
    local head, rest
    local first, last = text:find('::', 1, true)
    if first then
        head, rest = groups(text:sub(1, first - 1)), groups(text:sub(last + 1))
    else
        head, rest = groups(text), {}
    end
    for _, group in ipairs(tail) do rest[#rest + 1] = group end
    local out = {}
    for _, group in ipairs(head) do out[#out + 1] = group end
    for _ = 1, 8 - #head - #rest do out[#out + 1] = 0 end
    for _, group in ipairs(rest) do out[#out + 1] = group end
    -- An IPv4-mapped address (::ffff:a.b.c.d) is that IPv4 address.
    if out[1] == 0 and out[2] == 0 and out[3] == 0 and out[4] == 0 and out[5] == 0 and out[6] == 0xffff then
        return {math.floor(out[7] / 256), out[7] % 256, math.floor(out[8] / 256), out[8] % 256}, 'v4'
    end
    return out, 'v6'
end

-- One text per address, and per network (/24, /64): however the producer wrote it.
local function ip_subjects(text)
    local n, family = ip_numbers(text)
    if family == 'v4' then
        return string.format('%d.%d.%d.%d', n[1], n[2], n[3], n[4]),
            string.format('%d.%d.%d.0/24', n[1], n[2], n[3])
    end
    return string.format('%x:%x:%x:%x:%x:%x:%x:%x', unpack(n)),
        string.format('%x:%x:%x:%x::/64', n[1], n[2], n[3], n[4])
end

-- The value of a number's longest prefix in a published prefix table, or nil.
local function longest_prefix(key, phone)
    local asked = {}
    for length = #phone, 1, -1 do asked[#asked + 1] = phone:sub(1, length) end
    local found = redis.call('HMGET', key, unpack(asked))
    for i = 1, #asked do
        if found[i] then return found[i] end
    end
    return nil
end

-- The operator of a number's range, as worker/routing/operators.py tells it, from the
-- longest prefix the workers published (routing.yaml's `operators` win over carriers').
local function operator_of(phone)
    return longest_prefix(K_OPERATORS, phone) or 'other'
end

local function keyed_subject(kind, request)
    if kind == 'per_key' then return request.limit_key ~= '' and request.limit_key or nil end
    if kind == 'per_ip' or kind == 'per_network' then
        if request.client_ip == '' then return nil end
        local address, network = ip_subjects(request.client_ip)
        return kind == 'per_ip' and address or network
    end
    if kind == 'per_range' then return request.phone:sub(1, #request.phone - 4) end
    if kind == 'per_operator' then return operator_of(request.phone) end
    return 'all'
end

-- Milliseconds until a window with `current` and `previous` counts admits a start, or nil.
local function window_wait(current, previous, limit, per, now)
    local into = now % per
    if current + previous * (1 - into / per) < limit then return nil end
    if current < limit then
        -- The previous bucket's weight falls until the sum is below the limit.
        return math.floor(per * (1 - (limit - current) / previous)) - into + 1
    end
    -- Only once this bucket is the previous one, and weighs little enough.
    return per - into + math.floor(per * (1 - limit / current)) + 1
end

-- Each keyed limit the start is subject to: {kind, key, rules, fields, counts}; the
-- counts read in one command per subject.
local function keyed_limits(request, now, limits)
    local subjects = {}
    if not limits then return subjects end
    for _, kind in ipairs(KEYED_KINDS) do
        local rules = limits[kind]
        local value = rules and keyed_subject(kind, request)
        if value then
            local fields = {}
            for _, rule in ipairs(rules) do
                local bucket = math.floor(now / rule[2])
                fields[#fields + 1] = fmt_int(rule[2]) .. ':' .. fmt_int(bucket)
                fields[#fields + 1] = fmt_int(rule[2]) .. ':' .. fmt_int(bucket - 1)
            end
            local key = PREFIX .. 'limit:' .. kind .. ':' .. value
            subjects[#subjects + 1] = {kind = kind, key = key, rules = rules, fields = fields,
                                       counts = redis.call('HMGET', key, unpack(fields))}
        end
    end
    return subjects
end

-- The longest wait any keyed limit imposes, and its kind; nil when every one admits.
local function keyed_limited(subjects, now)
    local wait, kind = nil, nil
    for _, subject in ipairs(subjects) do
        for i, rule in ipairs(subject.rules) do
            local current = tonumber(subject.counts[2 * i - 1]) or 0
            local previous = tonumber(subject.counts[2 * i]) or 0
            local until_free = window_wait(current, previous, rule[1], rule[2], now)
            if until_free and (not wait or until_free > wait) then wait, kind = until_free, subject.kind end
        end
    end
    return wait, kind
end

-- One more in a sliding-window counter's current bucket, field '<name>:<bucket>' of `key`;
-- a new bucket drops the one before the previous, which no window reads any more. True
-- when the bucket is new.
local function bump(key, name, bucket)
    if redis.call('HINCRBY', key, name .. ':' .. fmt_int(bucket), '1') ~= 1 then return false end
    redis.call('HDEL', key, name .. ':' .. fmt_int(bucket - 2))
    return true
end

local function count_keyed(subjects, now)
    for _, subject in ipairs(subjects) do
        local longest = 0
        for _, rule in ipairs(subject.rules) do
            bump(subject.key, fmt_int(rule[2]), math.floor(now / rule[2]))
            longest = math.max(longest, rule[2])
        end
        redis.call('PEXPIRE', subject.key, fmt_int(2 * longest))
    end
end

-- The conversion guard (routing.yaml's fraud.guard): per number range (the number less its
-- last 4 digits), starts counted over a recent window and over a longer history, and the
-- approvals of the window's starts. A range whose window starts at `rise` times its
-- history's rate, at least `min_starts` of them, while fewer than `min_conversion` of them
-- are approved, is held: its starts are refused (fraud_suspected) for `hold`, doubled each
-- time it is held again within the history, up to `max_hold`. All in the range's hash
-- 'flashcall:guard:<range>': 'w:<bucket>', 'h:<bucket>', 'a:<bucket>' counts, and while it
-- is held 'held_until' and 'level' (how many holds within the history).
local K_HELD = PREFIX .. 'guard:held'
-- Holds and releases not yet taken by a worker's reporter ('held <range> <until> <level>',
-- 'released <range> <reason>'): each is logged once, by whichever reporter takes it.
local K_GUARD_CHANGES = PREFIX .. 'guard:changes'
local GUARD_CHANGES_MAX = 1000

local function guard_change(entry)
    if redis.call('RPUSH', K_GUARD_CHANGES, entry) > GUARD_CHANGES_MAX then
        redis.call('LTRIM', K_GUARD_CHANGES, -GUARD_CHANGES_MAX, -1)
    end
end

local function guard_key(range) return PREFIX .. 'guard:' .. range end

local function sliding(current, previous, into, per)
    return (tonumber(current) or 0) + (tonumber(previous) or 0) * (1 - into / per)
end

-- The range's counts and marks: {key, range, fields, w, h, a, held_until, level}.
local function guard_read(guard, phone, now)
    local range = phone:sub(1, #phone - 4)
    local key = guard_key(range)
    local w, h = math.floor(now / guard.window), math.floor(now / guard.history)
    local fields = {'w:' .. fmt_int(w), 'w:' .. fmt_int(w - 1), 'h:' .. fmt_int(h), 'h:' .. fmt_int(h - 1),
                    'a:' .. fmt_int(w), 'a:' .. fmt_int(w - 1), 'held_until', 'level'}
    local got = redis.call('HMGET', key, unpack(fields))
    return {key = key, range = range, fields = fields,
            starts = sliding(got[1], got[2], now % guard.window, guard.window),
            history = sliding(got[3], got[4], now % guard.history, guard.history),
            approved = sliding(got[5], got[6], now % guard.window, guard.window),
            held_until = tonumber(got[7]), level = tonumber(got[8]) or 0}
end

local function guard_event(event, range, now, extra)
    -- Not about one verification, as `demoted`: no id, status or attempt.
    local fields = {'event', event, 'at', fmt_int(now), 'range', range}
    for name, value in pairs(extra or {}) do
        fields[#fields + 1] = name
        fields[#fields + 1] = tostring(value)
    end
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', unpack(fields))
end

local function guard_release(key, range, now, why)
    redis.call('HDEL', key, 'held_until')
    redis.call('SREM', K_HELD, range)
    count('fraud_released|' .. range)
    guard_event('fraud_released', range, now, {reason = why})
    guard_change('released ' .. range .. ' ' .. why)
end

-- Milliseconds the range stays held, or nil; with `write`, a hold that ran out is released
-- here (without, it is only not held, as it would be once released).
local function guard_held(state, now, write)
    if not state.held_until then return nil end
    if now < state.held_until then return state.held_until - now end
    if write then guard_release(state.key, state.range, now, 'expired') end
    return nil
end

-- Whether this start, counted with the range's, makes it suspect: then the milliseconds of
-- the hold are returned and, with `write`, the range is held.
local function guard_judge(guard, state, now, write)
    local starts = state.starts + 1
    local history = state.history + 1
    if starts < guard.min_starts then return nil end
    if starts / guard.window <= guard.rise * history / guard.history then return nil end
    if state.approved / starts >= guard.min_conversion then return nil end
    local level = state.level + 1
    local hold = math.min(guard.max_hold, guard.hold * 2 ^ (level - 1))
    if not write then return hold end
    redis.call('HSET', state.key, 'held_until', fmt_int(now + hold), 'level', level)
    redis.call('PEXPIRE', state.key, fmt_int(2 * guard.history))
    redis.call('SADD', K_HELD, state.range)
    count('fraud_held|' .. state.range)
    guard_change('held ' .. state.range .. ' ' .. fmt_int(now + hold) .. ' ' .. level)
    guard_event('fraud_held', state.range, now,
        {['until'] = fmt_int(now + hold), level = level, starts = math.floor(starts),
         approved = math.floor(state.approved)})
    return hold
end

local function guard_count(guard, state, now)
    local window = math.floor(now / guard.window)
    -- The window's approvals age out with its starts.
    if bump(state.key, 'w', window) then redis.call('HDEL', state.key, 'a:' .. fmt_int(window - 2)) end
    bump(state.key, 'h', math.floor(now / guard.history))
    redis.call('PEXPIRE', state.key, fmt_int(2 * guard.history))
end

-- A start refused for its number's limits keeps only what the contract needs: the status
-- (failed, rate_limited) and an idempotent repeat of the id (its phone), for an hour, and one
-- small `failed` event; no metadata. Refused ids are forgotten oldest first past REFUSED_MAX.
local function refuse_start(request, now, reason, limit)
    local at = fmt_int(now)
    local fields = {'phone', request.phone, 'policy', request.policy, 'status', 'failed', 'reason', reason,
                    'created_at', at, 'updated_at', at, 'expires_at', at}
    if limit then
        fields[#fields + 1] = 'limit'
        fields[#fields + 1] = limit
    end
    redis.call('HSET', vkey(request.id), unpack(fields))
    redis.call('PEXPIREAT', vkey(request.id), now + REFUSED_RETENTION_MS)
    local length = redis.call('RPUSH', K_REFUSED, at .. ' ' .. request.id)
    -- One over the cap at most, and a few that aged out: each call's work stays small.
    local aged = 0
    while length > 0 do
        local since, id = string.match(redis.call('LINDEX', K_REFUSED, 0) or '', '^(%d+) (.+)$')
        local stale = not since or now - tonumber(since) >= REFUSED_RETENTION_MS
        if length <= REFUSED_MAX then
            if aged >= 4 or not stale then break end
            aged = aged + 1
        end
        redis.call('LPOP', K_REFUSED)
        length = length - 1
        -- Only the refused record itself (the id may have started for real since), and with
        -- the producer's own rights: an expiry in the past deletes the key at once.
        local record = since and redis.call('HMGET', vkey(id), 'reason', 'created_at') or {}
        if REFUSALS[record[1]] and record[2] == since then redis.call('PEXPIREAT', vkey(id), 1) end
    end
    redis.call('PEXPIRE', K_REFUSED, REFUSED_RETENTION_MS)
    count('started|' .. request.policy)
    count('finished|failed|' .. reason)
    emit('failed', {id = request.id, status = 'failed', attempt = 0}, now,
        {reason = reason, limit = limit, client_ip = request.client_ip})
end

-- refuse_start, and the producer's answer: why, and for limits and holds when to try again.
local function refused(request, now, reason, wait_ms, limit)
    refuse_start(request, now, reason, limit)
    return cjson.encode({id = request.id, status = 'failed', reason = reason, limit = limit, created = true,
                         retry_after = wait_ms and math.ceil(wait_ms / 1000) or nil})
end

-- Why flashcall_start refuses a new verification of this request now (blocked,
-- fraud_suspected, rate_limited), with the milliseconds to wait and the limit for limits and
-- holds; nil and what the start counts itself in when it takes it. The per-number limits and
-- the other guards are read in one go. With `write` as the start itself: a hold that ran
-- out is released, a held range counts the start, a hold this start triggers is recorded.
-- Without, the same decision from the same reads, and nothing written (flashcall_admission).
local function admission(request, now, write)
    local published = redis.call('MGET', K_LIMITS, K_GUARDS)
    local guards = published[2] and cjson.decode(published[2]) or {}
    -- A number on the block list is never called; one on the safe list passes every limit
    -- but its own number's. The longest prefix listed decides.
    local listed = guards.lists and longest_prefix(K_LISTS, request.phone)
    if listed == 'blocked' then return 'blocked' end
    local guard = listed ~= 'safe' and guards.guard or nil
    local range = guard and guard_read(guard, request.phone, now)
    local held = range and guard_held(range, now, write)
    if held then
        -- Counted all the same: a pump that goes on while its range is held finds the
        -- range's window full of starts nobody approved once the hold ends, and is held
        -- again at once, for longer.
        if write then guard_count(guard, range, now) end
        return 'fraud_suspected', held
    end
    local starts = phone_starts(request.phone, published[1])
    local keyed = keyed_limits(request, now, listed ~= 'safe' and guards.limits or nil)
    local retry_after, limit = phone_limited(starts, now), 'per_phone'
    local keyed_wait, keyed_kind = keyed_limited(keyed, now)
    if keyed_wait and (not retry_after or keyed_wait > retry_after) then retry_after, limit = keyed_wait, keyed_kind end
    if retry_after then return 'rate_limited', retry_after, limit end
    local hold = range and guard_judge(guard, range, now, write)
    if hold then
        if write then guard_count(guard, range, now) end
        return 'fraud_suspected', hold
    end
    return nil, nil, nil, {starts = starts, keyed = keyed, guard = guard, range = range}
end

local function start(_, args)
    local request, err = validate_start(args)
    if not request then return refuse(err) end
    local key = vkey(request.id)
    local existing = redis.call('HMGET', key, 'phone', 'status', 'expires_at', 'reason')
    local now = now_ms()
    if existing[1] then
        if existing[1] ~= request.phone then
            return refuse("id '" .. request.id .. "' is already used by a verification of another phone")
        end
        local current = existing[2]
        if not FINAL[current] and now >= tonumber(existing[3]) then current = 'expired' end
        return cjson.encode({id = request.id, status = current, created = false,
                             reason = REFUSALS[existing[4]] and existing[4] or nil})
    end

    local reason, wait_ms, limit, admitted = admission(request, now, true)
    if reason then return refused(request, now, reason, wait_ms, limit) end
    local starts, keyed, guard, range = admitted.starts, admitted.keyed, admitted.guard, admitted.range
    local at = fmt_int(now)
    local expires_at = fmt_int(now + request.ttl * 1000)
    local code_length = fmt_int(request.code_length)
    -- The fields the transitions read most come first: HMGET finds a field by walking the
    -- hash's listpack from its start. Each field written costs a walk too: those the readers
    -- take as empty when missing (provider_ref, cost_e4, client_ip) are written when set.
    local fields = {
        'status', 'pending', 'expires_at', expires_at, 'attempt', '0', 'attempt_state', '', 'step', '',
        'channel', '', 'provider', '', 'metadata', request.metadata, 'codes', '', 'checks', '0',
        'max_checks', MAX_CHECKS_TEXT, 'tried', '', 'poll_timer', '0', 'delivered', '0', 'reason', '',
        'updated_at', at, 'id', request.id, 'phone', request.phone, 'policy', request.policy,
        'channels', request.channels, 'code_length', code_length, 'ttl', fmt_int(request.ttl), 'created_at', at}
    if request.client_ip ~= '' then
        fields[#fields + 1] = 'client_ip'
        fields[#fields + 1] = request.client_ip
    end
    if range then
        -- Where the approval is counted: the range's hash and the window's length.
        fields[#fields + 1] = 'guard'
        fields[#fields + 1] = range.key .. '|' .. fmt_int(guard.window) .. '|' .. fmt_int(guard.history)
        guard_count(guard, range, now)
    end
    redis.call('HSET', key, unpack(fields))
    redis.call('PEXPIREAT', key, fmt_int(now + request.ttl * 1000 + RETENTION_MS))
    remember_start(starts, request.id, now, at)
    count_keyed(keyed, now)
    count('started|' .. request.policy)
    redis.call('ZADD', K_EXPIRY_TIMERS, expires_at, request.id)
    redis.call('ZADD', K_STEP_TIMERS, fmt_int(now + START_RECOVERY_MS), request.id)
    emit('created', {id = request.id, status = 'pending', metadata = request.metadata}, now,
        {client_ip = request.client_ip}, at)
    -- The names and the phone need no escaping (validate_start).
    enqueue_advance(request.id, 0, 'start', now,
        '{"code_length":' .. code_length .. ',"channels":' .. quoted(request.channels)
        .. ',"phone":' .. quoted(request.phone) .. ',"policy":' .. quoted(request.policy)
        .. ',"expires_at":' .. expires_at .. '}', at)
    return '{"id":' .. quoted(request.id) .. ',"status":"pending","created":true}'
end

-- What flashcall_start would answer a new verification of this request now, without
-- starting it or counting anything: {"admitted": true}, or a refusal as flashcall_start
-- answers it ({"status": "failed", "reason", "limit", "retry_after"}). The request's id is
-- not looked up: `flashcall routing explain` asks about a number, not a verification.
local function admission_of(_, args)
    local request, err = validate_start(args)
    if not request then return refuse(err) end
    local now = now_ms()
    local reason, wait_ms, limit = admission(request, now, false)
    if not reason then return '{"admitted":true}' end
    return cjson.encode({status = 'failed', reason = reason, limit = limit,
                         retry_after = wait_ms and math.ceil(wait_ms / 1000) or nil})
end

local CHECK_FIELDS = {id = true, code = true}
local CHECKED = {'status', 'expires_at', 'checks', 'max_checks'}
local CHECKED_REST = fields_besides(ENDING, CHECKED)
local CANCELED = fields_of(SHOWN, ENDING)

-- A check's answer on its reply key: {"id", "attempts_left", "result", "status"}, without
-- the fields left nil.
local function reply(key, id, result, status, attempts_left)
    count('checks|' .. result)
    local body = '{"id":' .. json_string(id)
    if attempts_left then body = body .. ',"attempts_left":' .. fmt_int(attempts_left) end
    body = body .. ',"result":"' .. result .. '"'
    if status then body = body .. ',"status":"' .. status .. '"' end
    redis.call('LPUSH', key, body .. '}')
    redis.call('EXPIRE', key, REPLY_TTL)
end

local function check(_, args)
    local request, err = decode_with_via(args, CHECK_FIELDS, VIA_CHECK)
    if not request then return refuse(err) end
    local id
    id, err = valid_id(request.id)
    if not id then return refuse(err) end
    local code = request.code
    if type(code) ~= 'string' or not code:match('^%d+$') or #code < MIN_CODE_LENGTH or #code > 8 then
        return refuse("'code' is required: a string of " .. MIN_CODE_LENGTH .. ' to 8 digits')
    end

    local now = now_ms()
    local at = fmt_int(now)
    -- A wrong code counts once per reply key (apply_check): a named key used before would
    -- let a wrong code go uncounted.
    local compared = request.reply_key and {'compared:' .. request.reply_key}
    local v = load(id, CHECKED, compared)
    if v and compared and v[compared[1]] then
        return refuse("'reply' was used by an earlier check of this verification: draw a new one")
    end
    -- One number names both the reply key and the message, unless the HTTP API named the key.
    local seq = fmt_int(redis.call('INCR', K_SEQ))
    local reply_key = request.reply_key or PREFIX .. 'reply:' .. seq
    if not v then
        reply(reply_key, id, 'not_found')
        return reply_key
    end
    expire_if_due(v, now, at, CHECKED_REST)
    local status = v.status
    if status == 'expired' or status == 'canceled' or status == 'max_attempts' then
        reply(reply_key, id, status, status)
        return reply_key
    end
    local checks, max_checks = tonumber(v.checks) or 0, tonumber(v.max_checks) or MAX_CHECKS
    if status == 'failed' then
        reply(reply_key, id, 'rejected', status, math.max(0, max_checks - checks))
        return reply_key
    end
    if checks >= max_checks then
        reply(reply_key, id, 'max_attempts', status)
        return reply_key
    end
    -- Reserved now, so that checks racing each other can never compare more than max_checks
    -- codes; an approved verification counts too, or its code could be guessed afterwards.
    redis.call('HINCRBY', vkey(id), 'checks', '1')
    enqueue(CHECK_QUEUE, 'check_code', '[' .. quoted(id) .. ',' .. quoted(code) .. ',' .. quoted(reply_key) .. ']',
        now, seq, at)
    return reply_key
end

local function one_id(args)
    local id = args[1]
    if #args ~= 1 or type(id) ~= 'string' or not valid_id(id) then return nil end
    return id
end

local BAD_ID = 'expected one argument: a verification id (1 to 128 characters of letters, digits and . _ : -)'

local function status(_, args)
    local id = one_id(args)
    if not id then return refuse(BAD_ID) end
    return public_status(id, load(id, SHOWN), now_ms())
end

local function cancel(_, args)
    local id = one_id(args)
    if not id then return refuse(BAD_ID) end
    local now = now_ms()
    local at = fmt_int(now)
    local v = load(id, CANCELED)
    if v then
        expire_if_due(v, now, at)
        if not FINAL[v.status] then finish(v, 'canceled', 'canceled by the producer', now, 'canceled', nil, at) end
    end
    return public_status(id, v, now)
end

---------------------------------------------------------------------------
-- Worker functions
---------------------------------------------------------------------------

-- Claim attempt expected+1 before the provider is called: a redelivered or duplicate
-- message finds the attempt taken and calls nobody.
-- May this provider take a call now? Its breaker (shared by every process), the calls it
-- has in flight while failing, its money and its daily budget decide. Answers the
-- admission ('closed', 'probe' or 'trial') or why not. `at` is `now` as text.
local function admit(provider, member, now, at, guard)
    if redis.call('EXISTS', provider_key(provider) .. ':no_money') == 1 then return nil, 'no_money' end
    if guard.budget_e4 > 0 then
        local spent = tonumber(redis.call('GET', spent_key(provider, guard.day)) or '0')
        if spent + guard.cost_e4 > guard.budget_e4 then return nil, 'budget_spent' end
    end
    local bkey = breaker_key(provider)
    local b = redis.call('HMGET', bkey, 'state', 'failures', 'opened_at')
    local state, failures = b[1] or 'closed', tonumber(b[2] or '0')
    if state == 'open' and now < tonumber(b[3] or '0') + guard.reset_ms then return nil, 'breaker_open' end
    if state ~= 'closed' then
        -- Reset timeout over: exactly one trial call cluster-wide, under a lease that
        -- lapses if the process making it dies.
        if not redis.call('SET', bkey .. ':trial', member, 'NX', 'PX', guard.lease) then
            return nil, 'breaker_open'
        end
        redis.call('HSET', bkey, 'state', 'half-open')
        return 'trial'
    end
    -- Every call in flight, by when it began (a dead process's lapse with their lease; one
    -- unanswered for slow_ms is overdue). Those older than the nearer of the two bounds are
    -- counted first: in the common case there are none, and nothing needs trimming.
    local probing = bkey .. ':probing'
    local nearer = guard.lease_ms
    if guard.slow_ms > 0 then nearer = math.min(guard.slow_ms, guard.lease_ms) end
    local old = redis.call('ZCOUNT', probing, '-inf', fmt_int(now - nearer))
    local overdue = 0
    if old > 0 then
        local lapsed = redis.call('ZREMRANGEBYSCORE', probing, '-inf', fmt_int(now - guard.lease_ms))
        if guard.slow_ms > 0 and guard.slow_ms <= guard.lease_ms then overdue = old - lapsed end
    end
    if failures > 0 or overdue > 0 then
        -- Failing, or a call unanswered for slow_ms (a provider that hangs fails only at its
        -- timeout): calls in flight count as failures to come, so that the provider costs
        -- at most fail_max calls from here before its breaker opens.
        if failures + redis.call('ZCARD', probing) >= guard.fail_max then return nil, 'breaker_open' end
    end
    redis.call('ZADD', probing, at, member)
    redis.call('PEXPIRE', probing, guard.lease)
    if failures > 0 then return 'probe' end
    return 'closed'
end

local CLAIMED = {'status', 'expires_at', 'attempt', 'attempt_state', 'step', 'tried', 'metadata', 'guard'}
local CLAIMED_REST = fields_besides(ENDING, CLAIMED)
-- Read besides: with a code of the router's, the codes delivered before; for a fallback, what
-- the attempt before did.
local CLAIMED_CODES = {'codes'}
local CLAIMED_AFTER = {'provider', 'channel', 'reason'}
local CLAIMED_AFTER_CODES = {'provider', 'channel', 'reason', 'codes'}

local function begin_attempt(_, args)
    local id, expected, now, at = args[1], tonumber(args[2]), tonumber(args[3]), args[3]
    local step, channel, provider, code_hash = args[4], args[5], args[6], args[7]
    local deadline = args[8]
    local guard = {reset_ms = tonumber(args[9]), lease_ms = tonumber(args[10]), lease = args[10],
                   fail_max = tonumber(args[11]), cost_e4 = tonumber(args[12]), budget_e4 = tonumber(args[13]),
                   day = args[14], slow_ms = tonumber(args[17] or '0')}
    local v = load(id, CLAIMED, expected > 0 and (code_hash ~= '' and CLAIMED_AFTER_CODES or CLAIMED_AFTER)
        or (code_hash ~= '' and CLAIMED_CODES or nil))
    if not v then return {'not_found'} end
    expire_if_due(v, now, at, CLAIMED_REST)
    if FINAL[v.status] then return {'final'} end
    if tonumber(v.attempt) ~= expected then return {'stale'} end
    if IN_FLIGHT[v.attempt_state] then return {'in_flight'} end
    if v.attempt_state == 'exhausted' then return {'final'} end
    -- A verification of a range the conversion guard now holds gets no further call.
    if v.guard then
        local held_until = redis.call('HGET', string.match(v.guard, '^([^|]+)'), 'held_until')
        if held_until and now < tonumber(held_until) then return {'fraud_suspected'} end
    end
    local attempt = fmt_int(expected + 1)
    local admission, refusal = admit(provider, id .. ':' .. attempt, now, at, guard)
    if not admission then return {refusal} end
    local token, provider_type = args[15], args[16]
    if token and token ~= '' then
        -- The provider posts this attempt's statuses to a URL with this token in it: the
        -- token is what authenticates the post. It outlives the verification by a day, so
        -- that late callbacks are still recognised (and recorded, and ignored).
        redis.call('SET', callback_key(token),
            cjson.encode({id = id, attempt = expected + 1, provider = provider, type = provider_type}),
            'PX', fmt_int(math.max(tonumber(v.expires_at) - now, 0) + RETENTION_MS))
    end
    local digest = (token and token ~= '') and token_digest(token) or ''

    local previous = {provider = v.provider, channel = v.channel, step = v.step, reason = v.reason}
    local operator, learn_spec = args[18] or '', args[19] or ''
    local tried = provider
    if v.step == step and v.tried ~= '' then tried = v.tried .. ',' .. provider end
    v.attempt = attempt
    v.status, v.step, v.channel, v.provider = 'sending', step, channel, provider
    -- 'a:<attempt>' and 'origin:<code hash>' say which attempt a typed code came from, and
    -- what made that attempt: an approval is credited to the call that carried the code,
    -- not to whichever came last.
    local fields = {'attempt', v.attempt, 'attempt_state', 'calling', 'status', 'sending',
        'step', step, 'channel', channel, 'provider', provider, 'provider_ref', '', 'callback', digest,
        'tried', tried, 'pending_code', code_hash, 'reason', '', 'updated_at', at,
        'claimed_at', at, 'operator', operator, 'learn', learn_spec,
        'a:' .. v.attempt, provider .. ' ' .. channel}
    if code_hash ~= '' then
        local codes = v.codes or ''
        fields[#fields + 1] = 'codes'
        fields[#fields + 1] = (codes == '' and code_hash) or (codes .. ' ' .. code_hash)
        fields[#fields + 1] = 'origin:' .. code_hash
        fields[#fields + 1] = v.attempt
    end
    redis.call('HSET', vkey(id), unpack(fields))
    redis.call('ZADD', K_STEP_TIMERS, deadline, id)
    if expected > 0 then
        count('fallback|' .. (previous.provider or '') .. '|' .. provider .. '|' .. (previous.reason or ''))
        emit('fallback', v, now, {reason = previous.reason, from_provider = previous.provider,
                                  from_channel = previous.channel, from_step = previous.step}, at)
    end
    emit('attempt_started', v, now, nil, at)
    local lead_key, lead_from, lead_to = args[20] or '', args[21] or '', args[22] or ''
    if lead_key ~= '' and (redis.call('HGET', K_LEADERS, lead_key) or '') == lead_from then
        -- The learned ranking moved past the leading choice: one process records it and
        -- announces the demotion, whichever got here first.
        redis.call('HSET', K_LEADERS, lead_key, lead_to)
        if lead_from ~= '' then
            local policy, channel, operator = string.match(lead_key, '^([^:]+):([^:]+):([^:]+)$')
            count('demoted|' .. lead_from .. '|' .. channel .. '|' .. operator)
            redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'event', 'demoted',
                'provider', lead_from, 'to_provider', lead_to, 'policy', policy, 'channel', channel,
                'operator', operator, 'reason', 'learned', 'at', at)
            return {'ok', admission, 'demoted'}
        end
    end
    return {'ok', admission}
end

-- Health per provider, channel and bucket ('ok', 'fail', 'ms': API milliseconds).
local function health_key(provider, channel, bucket)
    return PREFIX .. 'health:' .. provider .. ':' .. channel .. ':' .. fmt_int(bucket)
end

-- The running sums of a provider's health, per channel (health_window says what they hold).
local function health_sums_key(provider) return PREFIX .. 'health:' .. provider end

-- One attempt's result in its provider's health window: delivered or failed, and how
-- long the API took; and in the running sums, once routing_state has built them, when
-- the bucket is one they include.
local function count_health(provider, channel, now, succeeded, latency_ms)
    local bucket = math.floor(now / HEALTH_BUCKET_MS)
    local key = health_key(provider, channel, bucket)
    local outcome = succeeded and 'ok' or 'fail'
    redis.call('HINCRBY', key, outcome, 1)
    redis.call('HINCRBY', key, 'ms', latency_ms)
    redis.call('EXPIRE', key, HEALTH_TTL)
    local sums = health_sums_key(provider)
    local marks = redis.call('HMGET', sums, channel .. ':from', channel .. ':top')
    local from = tonumber(marks[1])
    if from and bucket >= from then
        redis.call('HINCRBY', sums, channel .. ':' .. outcome, 1)
        redis.call('HINCRBY', sums, channel .. ':ms', latency_ms)
        if bucket > (tonumber(marks[2]) or bucket) then redis.call('HSET', sums, channel .. ':top', bucket) end
    end
end

local function release_probe(provider, member)
    redis.call('ZREM', breaker_key(provider) .. ':probing', member)
end

-- A callback token's record (begin_attempt writes it): where the token points ({id, attempt,
-- provider, type}); the provider's id of the attempt's call, once the delivery is recorded
-- (`ref`); the states already taken in (`seen`); statuses posted before the delivery was
-- recorded (`held`); and whether the attempt has an outcome (`closed`), after which the
-- token takes nothing new.
local MAX_HELD_STATUSES = 4

local function save_callback(key, record)
    redis.call('SET', key, cjson.encode(record), 'KEEPTTL')
end

-- Queue a status of the attempt's own call for the workers; a final state is the attempt's
-- outcome.
local function take_status(record, state, final, status_json, now)
    enqueue(VERIFY_QUEUE, 'call_status',
        '[' .. json_string(record.id) .. ',' .. fmt_int(record.attempt) .. ',' .. json_string(record.provider)
        .. ',' .. status_json .. ']', now)
    record.seen = record.seen or {}
    record.seen[state] = true
    if final then record.closed = true end
end

-- The attempt's delivery is recorded: its call's id is known. Statuses held until now are
-- taken in when they are about that call, and dropped when not; a verification that ended
-- meanwhile takes none.
local function callback_delivered(digest, ref, live, now)
    if not digest or digest == '' then return end
    local key = callback_key_of(digest)
    local raw = redis.call('GET', key)
    if not raw then return end
    local record = cjson.decode(raw)
    local held = record.held or {}
    record.ref, record.held = ref, nil
    if not live then record.closed = true end
    for _, status in ipairs(held) do
        if not record.closed and status.ref == ref and not (record.seen and record.seen[status.state]) then
            take_status(record, status.state, status.final, status.status, now)
        end
    end
    save_callback(key, record)
end

-- The attempt has an outcome (it failed, timed out, or its worker was lost mid-call): its
-- token takes nothing new.
local function callback_closed(digest)
    if not digest or digest == '' then return end
    local key = callback_key_of(digest)
    local raw = redis.call('GET', key)
    if not raw then return end
    local record = cjson.decode(raw)
    if record.closed then return end
    record.closed, record.held = true, nil
    save_callback(key, record)
end

local DELIVERED = {'status', 'expires_at', 'attempt', 'attempt_state', 'callback', 'metadata', 'cost_e4',
                   'delivered'}

local function attempt_delivered(_, args)
    local id, attempt, now = args[1], tonumber(args[2]), tonumber(args[3])
    local attempt_text, at = args[2], args[3]
    local provider, channel, step, ref = args[4], args[5], args[6], args[7]
    local price_e4, code_hash, provider_checks, deadline = tonumber(args[8]), args[9], args[10], args[11]
    local latency_ms, day = tonumber(args[12]), args[13]
    local key = vkey(id)
    -- A delivery is settled once: the first call to record it sets this field.
    local settled = 'settled:' .. attempt_text
    local v = load(id, DELIVERED, code_hash ~= '' and {settled, 'codes'} or {settled})
    if not v then return 'not_found' end
    if v[settled] then return 'duplicate' end
    count_health(provider, channel, now, true, latency_ms)
    release_probe(provider, id .. ':' .. attempt_text)
    if price_e4 > 0 then
        -- A day's spend expires two days after its first call.
        local spent = spent_key(provider, day)
        if redis.call('INCRBY', spent, args[8]) == price_e4 then redis.call('EXPIRE', spent, SPENT_TTL) end
    end
    -- The call happened, whatever became of the verification meanwhile: what it cost and
    -- the code it carried count even when it arrives late.
    local fields = {settled, '1', 'updated_at', at,
                    'cost_e4', fmt_int(tonumber(v.cost_e4 or '0') + price_e4),
                    'delivered', fmt_int(tonumber(v.delivered or '0') + 1)}
    if code_hash ~= '' then
        local codes = v.codes or ''
        fields[#fields + 1] = 'codes'
        fields[#fields + 1] = (codes == '' and code_hash) or (codes .. ' ' .. code_hash)
        fields[#fields + 1] = 'origin:' .. code_hash
        fields[#fields + 1] = attempt_text
    end
    if provider_checks == '1' then
        fields[#fields + 1] = 'provider_checks'
        fields[#fields + 1] = provider
    end
    if channel ~= 'sms' then
        -- An SMS follow-up names the call whose code it re-sends.
        fields[#fields + 1] = 'ref:' .. provider
        fields[#fields + 1] = ref
    end
    local current = tonumber(v.attempt) == attempt and v.attempt_state == 'calling'
    if current then
        callback_delivered(v.callback, ref, not FINAL[v.status] and now < tonumber(v.expires_at), now)
        fields[#fields + 1] = 'attempt_state'
        fields[#fields + 1] = 'delivered'
        fields[#fields + 1] = 'pending_code'
        fields[#fields + 1] = ''
        fields[#fields + 1] = 'provider_ref'
        fields[#fields + 1] = ref
        if not FINAL[v.status] then
            v.status = 'sent'
            fields[#fields + 1] = 'status'
            fields[#fields + 1] = 'sent'
            local poll_at = args[14] or '0'
            if tonumber(poll_at) > 0 then
                redis.call('ZADD', K_POLL_TIMERS, poll_at, id)
                fields[#fields + 1] = 'poll_timer'
                fields[#fields + 1] = '1'
            end
            if tonumber(deadline) > 0 then
                redis.call('ZADD', K_STEP_TIMERS, deadline, id)
            else
                redis.call('ZREM', K_STEP_TIMERS, id)
            end
        end
    end
    redis.call('HSET', key, unpack(fields))
    v.attempt, v.provider, v.channel, v.step = attempt_text, provider, channel, step
    emit('delivered', v, now, {cost = format_cost(price_e4), reason = (not current) and 'late' or nil}, at)
    return current and 'ok' or 'late'
end

-- The attempt failed (state 'failed') or timed out after delivery ('timed_out'). The
-- caller goes on to the next attempt; the recovery timer picks the verification up if
-- it cannot.
local FAILED = {'status', 'attempt', 'attempt_state', 'step', 'channel', 'provider', 'metadata', 'callback',
                'pending_code'}
-- Read besides: where a delivered attempt's miss is learned; the codes, to drop one.
local LEARNING = {'learn', 'operator'}
local CODES = {'codes'}

local function attempt_failed(_, args)
    local id, attempt, now, at = args[1], tonumber(args[2]), tonumber(args[3]), args[3]
    local outcome, error_code, state, recovery_at = args[4], args[5], args[6], args[7]
    local discard_code = args[8] == '1'
    local provider_fault, latency_ms, no_money_ms = args[9] == '1', tonumber(args[10]), args[11]
    local key = vkey(id)
    local v = load(id, FAILED)
    if not v then return 'not_found' end
    if tonumber(v.attempt) ~= attempt or not IN_FLIGHT[v.attempt_state] then
        return 'stale'
    end
    if latency_ms >= 0 then
        -- The provider answered this call (not a step timing out later): its health and,
        -- when its money ran out, its rotation (until a balance is seen again).
        release_probe(v.provider, id .. ':' .. args[2])
        count_health(v.provider, v.channel, now, not provider_fault, latency_ms)
        if outcome == 'not_enough_money' then
            redis.call('SET', provider_key(v.provider) .. ':no_money', '1', 'PX', no_money_ms)
        end
    end
    if not FINAL[v.status] and v.attempt_state == 'delivered' then
        learn_miss(read(v, LEARNING), now)
    end
    callback_closed(v.callback)
    local fields = {'attempt_state', state, 'updated_at', at, 'pending_code', ''}
    if discard_code and v.pending_code and v.pending_code ~= '' then
        -- The provider answered that it placed no call: its code reached nobody. Only its
        -- own entry goes: an earlier call may have delivered the same digits.
        read(v, CODES)
        local kept = {}
        for code in v.codes:gmatch('%S+') do kept[#kept + 1] = code end
        for i = #kept, 1, -1 do
            if kept[i] == v.pending_code then table.remove(kept, i); break end
        end
        fields[#fields + 1] = 'codes'
        fields[#fields + 1] = table.concat(kept, ' ')
    end
    if not FINAL[v.status] then
        fields[#fields + 1] = 'reason'
        fields[#fields + 1] = outcome
        redis.call('ZADD', K_STEP_TIMERS, recovery_at, id)
    end
    redis.call('HSET', key, unpack(fields))
    emit('attempt_failed', v, now, {reason = outcome, error_code = error_code}, at)
    return 'ok'
end

-- No further attempt: the verification fails, unless a code already reached the user,
-- who may still type it until the verification expires.
local GIVEN_UP = fields_of(ENDING, {'delivered'})

local function give_up(_, args)
    local id, attempt, now, reason, hard = args[1], tonumber(args[2]), tonumber(args[3]), args[4], args[5]
    local at = args[3]
    local v = load(id, GIVEN_UP)
    if not v then return 'not_found' end
    expire_if_due(v, now, at)
    if FINAL[v.status] then return 'final' end
    if tonumber(v.attempt) ~= attempt or v.attempt_state == 'calling' or v.attempt_state == 'delivered' then
        return 'stale'
    end
    if hard ~= '1' and tonumber(v.delivered) > 0 then
        redis.call('HSET', vkey(id), 'status', 'sent', 'attempt_state', 'exhausted', 'reason', reason,
            'updated_at', at)
        redis.call('ZREM', K_STEP_TIMERS, id)
        return 'waiting'
    end
    finish(v, 'failed', reason, now, 'failed', {reason = reason}, at)
    return 'failed'
end

-- An approval, credited to the attempt whose code was typed (the current one when the
-- provider checked it, or when it is an SMS that re-sent the code): a hit when that attempt was still waiting for it; a late hit on an
-- attempt already counted as a miss (the next step had begun, or the last had timed out).
local function learn_approval(v, origin, now)
    local current = v.attempt
    origin = origin or current
    local operator = v.operator or 'other'
    -- An SMS re-sends the code of an earlier call (it has none of its own): the code it
    -- carried is the one typed.
    if (origin == current or v.channel == 'sms') and v.attempt_state == 'delivered' then
        learn(v.learn, v.provider, v.channel, operator, now, 1, 1, now - tonumber(v.claimed_at or now))
        return
    end
    if origin == current and v.attempt_state ~= 'timed_out' and v.attempt_state ~= 'exhausted' then return end
    local made = redis.call('HGET', vkey(v.id), 'a:' .. origin)
    if not made then return end
    local provider, channel = string.match(made, '^(%S+) (%S+)$')
    learn(v.learn, provider, channel, operator, now, 0, 1, 0)
end

-- The verdict on a typed code: '1' or '0' when the worker judged it, or
-- 'hash:<hmac>[,<hmac>...]' to compare with the codes delivered here, in the same call: one
-- HMAC under each code secret the worker accepts (the current one, then the previous ones of
-- a rotation), so that codes hashed before a rotation still match. A mismatch on a
-- verification whose code a provider keeps (Telphin) answers 'ask_provider' and changes
-- nothing: the worker asks the provider and calls again with its verdict. Given a fifth
-- argument ('named'), the answer is 'ask_provider <provider> <phone>', which saves the worker
-- reading them back; without it the answer stays what workers before version 13 expect,
-- which may still be running while a deployment replaces them.
-- A typed code's hashes are compared first: most often they match, or only the provider
-- can judge; the rest is read for a verdict.
local COMPARED = {'status', 'expires_at', 'codes', 'provider_checks'}
local JUDGED_REST = fields_besides(fields_of(ENDING, {'checks', 'max_checks', 'wrong', 'claimed_at', 'guard'}),
                                   COMPARED)
local JUDGED = fields_of({'status', 'expires_at'}, JUDGED_REST)

local function apply_check(_, args)
    local id, proof, reply_key, now, at = args[1], args[2], args[3], tonumber(args[4]), args[4]
    local named = args[5] == 'named'
    -- Read with the rest: whether this check was compared before, and which attempt each
    -- typed hash came from, were it delivered.
    local compared = {'compared:' .. reply_key}
    local origins, typed = {}, {}
    local candidates = string.match(proof, '^hash:(%x+[%x,]*)$')
    if candidates then
        for candidate in string.gmatch(candidates, '[^,]+') do
            typed[candidate] = true
            origins[#origins + 1] = 'origin:' .. candidate
        end
    end
    local v = candidates and load(id, COMPARED, origins) or load(id, JUDGED, compared)
    if not v then
        reply(reply_key, id, 'not_found')
        return 'not_found'
    end
    local judged = not candidates
    if not judged and not FINAL[v.status] and now >= tonumber(v.expires_at) then
        read(v, JUDGED_REST, compared)
        judged = true
    end
    expire_if_due(v, now, at)
    local matched = proof == '1'
    local origin = nil
    if candidates then
        for stored in string.gmatch(v.codes or '', '%S+') do
            if typed[stored] then
                matched = true
                origin = v['origin:' .. stored]
            end
        end
        if not matched and (v.provider_checks or '') ~= '' and (not FINAL[v.status] or v.status == 'approved') then
            if not named then return 'ask_provider' end
            return 'ask_provider ' .. v.provider_checks .. ' ' .. redis.call('HGET', vkey(id), 'phone')
        end
    elseif proof ~= '0' and proof ~= '1' then
        return redis.error_reply('ERR the verdict must be 1, 0 or hash:<hex>[,<hex>...]')
    end
    if not judged then read(v, JUDGED_REST, compared) end
    local checks, max_checks = tonumber(v.checks), tonumber(v.max_checks)
    local left = math.max(0, max_checks - checks)
    local result
    if v.status == 'approved' then
        result = matched and 'approved' or 'rejected'
        reply(reply_key, id, result, v.status, left)
        return result
    elseif v.status == 'failed' then
        result = 'rejected'
    elseif FINAL[v.status] then
        result = v.status
    elseif matched then
        count('approved|' .. v.provider .. '|' .. v.channel)
        learn_approval(v, origin, now)
        if v.guard then
            local range_key, window, history = string.match(v.guard, '^(.+)|(%d+)|(%d+)$')
            if redis.call('HINCRBY', range_key, 'a:' .. fmt_int(math.floor(now / tonumber(window))), '1') == 1 then
                redis.call('PEXPIRE', range_key, fmt_int(2 * tonumber(history)))
            end
        end
        finish(v, 'approved', '', now, 'approved', nil, at)
        result = 'approved'
    else
        -- Only the max_checks-th wrong code ends the verification: checks reserved after
        -- this one may still carry the right code. A check run twice counts once.
        local wrong = tonumber(v.wrong or '0')
        if not v[compared[1]] then
            wrong = wrong + 1
            redis.call('HSET', vkey(id), compared[1], '1', 'wrong', fmt_int(wrong))
        end
        if wrong >= max_checks then
            finish(v, 'max_attempts', 'too many wrong codes', now, 'rejected', {attempts_left = 0}, at)
            result = 'max_attempts'
        else
            emit('rejected', v, now, {attempts_left = left}, at)
            result = 'rejected'
        end
    end
    reply(reply_key, id, result, v.status, left)
    return result
end

-- The timers of one set due at `now`, at most `limit`, oldest first; without any due, when
-- the first falls due (nil: none waits). One command for a set with none due.
local function due_timers(key, now, limit)
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #first == 0 then return {}, nil end
    if tonumber(first[2]) > now then return {}, tonumber(first[2]) end
    return redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, limit), nil
end

-- When the first timer of a set falls due, after its due ones were taken (nil: none waits).
local function next_due(key, taken, due_at)
    if #taken == 0 then return due_at end
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return first[2] and tonumber(first[2]) or nil
end

local function earliest(a, b)
    if a == nil or (b ~= nil and b < a) then return b end
    return a
end

-- Fire due timers: a step deadline enqueues an `advance` of the current attempt; an
-- expiry ends the verification here. Answers how many fired and when the next timer of
-- any kind falls due (nil: none waits; at or before `now`: a full batch left more due),
-- so that the timer loop sleeps until then instead of polling.
local function fire_timers(_, args)
    local now, limit = tonumber(args[1]), tonumber(args[2])
    local fired = 0
    local due, due_at = due_timers(K_STEP_TIMERS, now, limit)
    for _, id in ipairs(due) do
        redis.call('ZREM', K_STEP_TIMERS, id)
        local v = redis.call('HMGET', vkey(id), 'status', 'attempt')
        if v[1] and not FINAL[v[1]] then
            enqueue_advance(id, tonumber(v[2]), 'timeout', now)
            fired = fired + 1
        end
    end
    local next_at = next_due(K_STEP_TIMERS, due, due_at)
    due, due_at = due_timers(K_POLL_TIMERS, now, limit)
    for _, id in ipairs(due) do
        redis.call('ZREM', K_POLL_TIMERS, id)
        local v = redis.call('HMGET', vkey(id), 'status', 'attempt', 'attempt_state')
        if v[1] and not FINAL[v[1]] and v[3] == 'delivered' then
            enqueue(VERIFY_QUEUE, 'poll', '[' .. json_string(id) .. ',' .. v[2] .. ']', now)
            fired = fired + 1
        end
    end
    next_at = earliest(next_at, next_due(K_POLL_TIMERS, due, due_at))
    due, due_at = due_timers(K_EXPIRY_TIMERS, now, limit)
    for _, id in ipairs(due) do
        redis.call('ZREM', K_EXPIRY_TIMERS, id)
        local v = hgetall(vkey(id))
        if v and not FINAL[v.status] then
            finish(v, 'expired', 'ttl', now, 'expired')
            fired = fired + 1
        end
    end
    next_at = earliest(next_at, next_due(K_EXPIRY_TIMERS, due, due_at))
    return {fired, next_at or false}
end

-- Where a callback's token points: {id, attempt, provider, type}, or nil when the token
-- was never issued (or is past its verification's retention).
local function callback_target(_, args)
    local raw = redis.call('GET', callback_key(args[1]))
    if not raw then return nil end
    local record = cjson.decode(raw)
    return cjson.encode({id = record.id, attempt = record.attempt, provider = record.provider, type = record.type})
end

-- A provider's status post, already parsed (its JSON, the call id `ref`, the provider's state,
-- and whether that state is final). Answers what became of it:
--   'accepted'  queued for the workers, durably: a worker will act on it;
--   'repeat'    this call's state was taken in before: nothing changes;
--   'held'      the attempt's delivery is not recorded yet, so its call id is not known:
--               kept, and taken in (or dropped) when the delivery is recorded;
--   'mismatch'  the call id is not the attempt's call: nothing changes;
--   'closed'    the attempt already has an outcome, or its verification ended: nothing changes;
--   'busy'      too many statuses held before the delivery: nothing changes, try again;
--   'unknown'   no such token.
-- Runs under the callback receiver's user, which may read no verification: whether the
-- verification still runs is read from its expiry timer, which only an ended verification
-- lacks.
local function callback_accept(_, args)
    local token, status_json, now = args[1], args[2], tonumber(args[3])
    local ref, state, final = args[4], args[5], args[6] == '1'
    local key = callback_key(token)
    local raw = redis.call('GET', key)
    if not raw then return 'unknown' end
    local record = cjson.decode(raw)
    if record.ref == ref and record.seen and record.seen[state] then return 'repeat' end
    local held = record.held or {}
    for _, status in ipairs(held) do
        if status.ref == ref and status.state == state then return 'repeat' end
    end
    if record.closed then return 'closed' end
    local expires_at = redis.call('ZSCORE', K_EXPIRY_TIMERS, record.id)
    if not expires_at or tonumber(expires_at) <= now then return 'closed' end
    if record.ref == nil then
        if #held >= MAX_HELD_STATUSES then return 'busy' end
        held[#held + 1] = {ref = ref, state = state, final = final, status = status_json}
        record.held = held
        save_callback(key, record)
        return 'held'
    end
    if record.ref ~= ref then return 'mismatch' end
    take_status(record, state, final, status_json, now)
    save_callback(key, record)
    return 'accepted'
end

-- The next status poll of a delivered attempt (while it is still the current one).
local function schedule_poll(_, args)
    local id, attempt, due = args[1], tonumber(args[2]), tonumber(args[3])
    local v = redis.call('HMGET', vkey(id), 'status', 'attempt', 'attempt_state')
    if not v[1] or FINAL[v[1]] or tonumber(v[2]) ~= attempt or v[3] ~= 'delivered' then return 'stale' end
    redis.call('HINCRBY', vkey(id), 'polls', 1)
    redis.call('ZADD', K_POLL_TIMERS, due, id)
    return 'ok'
end

-- A status that came after its attempt was settled, or for a finished verification:
-- kept on the verification for the record, and otherwise ignored.
local function late_status(_, args)
    local id, attempt, provider, state, now = args[1], args[2], args[3], args[4], args[5]
    local key = vkey(id)
    if redis.call('EXISTS', key) == 0 then return 'not_found' end
    redis.call('HINCRBY', key, 'late_statuses', 1)
    redis.call('HSET', key, 'last_late_status', provider .. ' attempt ' .. attempt .. ': ' .. state .. ' at ' .. now)
    return 'recorded'
end

-- Take the counts kept since the last drain; each count is taken once, by one process.
local function drain_metrics()
    local taken = redis.call('HGETALL', K_METRICS)
    if #taken > 0 then redis.call('DEL', K_METRICS) end
    return taken
end

-- What waits: messages per queue, dead letters per queue, timers per kind, and the
-- backlog per queue: the list, Dramatiq's delay queue (<queue>.DQ), the messages every
-- consumer fetched and has not acknowledged (Dramatiq's <namespace>__acks__.<worker
-- id>.<queue> sets, for each worker in its heartbeats, the live and the dead not yet
-- recovered), and for verifications the step and poll timers due at args[1] (ms;
-- Redis's clock without it), each of which becomes a message.
local function queue_stats(_, args)
    local out = {queued = {}, dead = {}, timers = {}, backlog = {}}
    local now = tonumber(args[1])
    if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    local workers = redis.call('ZRANGE', NAMESPACE .. '__heartbeats__', 0, -1)
    for _, queue in ipairs({VERIFY_QUEUE, CHECK_QUEUE}) do
        out.queued[queue] = redis.call('LLEN', NAMESPACE .. queue)
        out.dead[queue] = redis.call('ZCARD', NAMESPACE .. queue .. '.XQ')
        local backlog = out.queued[queue] + redis.call('LLEN', NAMESPACE .. queue .. '.DQ')
        for _, worker in ipairs(workers) do
            local acks = NAMESPACE .. '__acks__.' .. worker .. '.' .. queue
            backlog = backlog + redis.call('SCARD', acks) + redis.call('SCARD', acks .. '.DQ')
        end
        out.backlog[queue] = backlog
    end
    out.backlog[VERIFY_QUEUE] = out.backlog[VERIFY_QUEUE]
        + redis.call('ZCOUNT', K_STEP_TIMERS, '-inf', now)
        + redis.call('ZCOUNT', K_POLL_TIMERS, '-inf', now)
    out.timers.step = redis.call('ZCARD', K_STEP_TIMERS)
    out.timers.poll = redis.call('ZCARD', K_POLL_TIMERS)
    out.timers.expire = redis.call('ZCARD', K_EXPIRY_TIMERS)
    return cjson.encode(out)
end

-- routing.yaml as producers must see it: the policy names start accepts and the
-- per-number limits it enforces.
local function publish_config(_, args)
    local config = cjson.decode(args[1])
    redis.call('DEL', K_POLICIES)
    if #config.policies > 0 then redis.call('SADD', K_POLICIES, unpack(config.policies)) end
    redis.call('SET', K_LIMITS, cjson.encode(config.per_phone))
    local guards = {}
    if config.keyed and next(config.keyed) ~= nil then guards.limits = config.keyed end
    if config.lists and next(config.lists) ~= nil then guards.lists = true end
    if type(config.guard) == 'table' then guards.guard = config.guard end
    if next(guards) ~= nil then redis.call('SET', K_GUARDS, cjson.encode(guards)) else redis.call('DEL', K_GUARDS) end
    for key, entries in pairs({[K_OPERATORS] = config.operators, [K_LISTS] = config.lists}) do
        redis.call('DEL', key)
        if entries and next(entries) ~= nil then
            local flat = {}
            for prefix, value in pairs(entries) do
                flat[#flat + 1] = prefix
                flat[#flat + 1] = value
            end
            redis.call('HSET', key, unpack(flat))
        end
    end
    return 'ok'
end

-- The ranges the conversion guard holds: [[range, held until ms, level], ...], soonest
-- released first; those whose hold ran out are released here.
local function held_ranges(now)
    local out = {}
    for _, range in ipairs(redis.call('SMEMBERS', K_HELD)) do
        local key = guard_key(range)
        local marks = redis.call('HMGET', key, 'held_until', 'level')
        local held_until = tonumber(marks[1])
        if not held_until then
            redis.call('SREM', K_HELD, range)
        elseif now >= held_until then
            guard_release(key, range, now, 'expired')
        else
            out[#out + 1] = {range, held_until, tonumber(marks[2]) or 1}
        end
    end
    table.sort(out, function(a, b) return a[2] < b[2] end)
    return out
end

local function fraud_list(_, args)
    return cjson.encode(held_ranges(tonumber(args[1])))
end

-- A reporter's round: holds that ran out are released, and the holds and releases since
-- the last round are handed over (to this caller only), oldest first.
local function fraud_report(_, args)
    held_ranges(tonumber(args[1]))
    local changes = redis.call('LRANGE', K_GUARD_CHANGES, 0, -1)
    if #changes > 0 then redis.call('DEL', K_GUARD_CHANGES) end
    return changes
end

-- An operator's release of a held range: 'released', or 'not_held'. Its level stays, so
-- that a range held again soon is held longer.
local function fraud_release(_, args)
    local range, now = args[1], tonumber(args[2])
    local key = guard_key(range)
    if not redis.call('HGET', key, 'held_until') then
        redis.call('SREM', K_HELD, range)
        return 'not_held'
    end
    guard_release(key, range, now, 'operator')
    return 'released'
end

-- A failure recorded while closed: counted, and fail_max of them open the breaker, in
-- one step so that the cluster opens it once.
local function breaker_fail(_, args)
    local name, fail_max, now = args[1], tonumber(args[2]), args[3]
    local bkey = breaker_key(name)
    local failures = redis.call('HINCRBY', bkey, 'failures', 1)
    local state = redis.call('HGET', bkey, 'state') or 'closed'
    if state == 'closed' and failures >= fail_max then
        redis.call('HSET', bkey, 'state', 'open', 'opened_at', now)
        redis.call('DEL', bkey .. ':trial', bkey .. ':probing')
    end
    return failures
end

local function breaker_set(_, args)
    local name, state, now = args[1], args[2], args[3]
    local bkey = breaker_key(name)
    if state == 'closed' then
        redis.call('HSET', bkey, 'state', 'closed', 'failures', 0, 'successes', 0)
        redis.call('DEL', bkey .. ':trial', bkey .. ':probing')
    elseif state == 'open' then
        redis.call('HSET', bkey, 'state', 'open', 'opened_at', now)
        redis.call('DEL', bkey .. ':trial', bkey .. ':probing')
    else
        redis.call('HSET', bkey, 'state', state)
    end
    return state
end

local function breaker_reset(_, args)
    for _, name in ipairs(args) do
        local bkey = breaker_key(name)
        redis.call('DEL', bkey, bkey .. ':trial', bkey .. ':probing', provider_key(name) .. ':no_money')
    end
    return #args
end

-- A balance read from the provider: seen above zero, a provider out of money is back.
local function provider_balance(_, args)
    local name, balance, now = args[1], args[2], args[3]
    redis.call('HSET', provider_key(name), 'balance', balance, 'balance_at', now)
    if tonumber(balance) > 0 then redis.call('DEL', provider_key(name) .. ':no_money') end
    return 'ok'
end

local function bucket_health(provider, channel, bucket)
    local h = redis.call('HMGET', health_key(provider, channel, bucket), 'ok', 'fail', 'ms')
    return tonumber(h[1] or '0'), tonumber(h[2] or '0'), tonumber(h[3] or '0')
end

-- A provider's health on one channel over the buckets first..last, from its running sums
-- (`sums`, the fields of health_sums_key as read): <channel>:ok, :fail and :ms add up every
-- bucket from <channel>:from on, and no bucket after <channel>:top holds anything. Buckets
-- that left the window since the last read are subtracted (at most a few per call, the
-- buckets are 10 s), those a wider window or an earlier clock takes in again are added,
-- and any after `last` (a writer's clock ahead of this caller's) are left out of the
-- answer. The sums are rebuilt from the buckets when there are none yet (the first read
-- after an upgrade, or after two hours unread), when rebuilding costs fewer reads than
-- moving them, and about once an hour (<channel>:built), before a bucket they hold could
-- expire, which also mends sums that missed writes. Answers ok, fail, ms (always what
-- reading every bucket of the window gives), the fields to write back (nil when
-- unchanged), and whether the sums were rebuilt.
local function health_window(provider, channel, sums, first, last, now)
    local p = channel .. ':'
    local from, top, built = tonumber(sums[p .. 'from']), tonumber(sums[p .. 'top']), tonumber(sums[p .. 'built'])
    local ok, fail, ms = tonumber(sums[p .. 'ok'] or '0'), tonumber(sums[p .. 'fail'] or '0'),
        tonumber(sums[p .. 'ms'] or '0')
    local span = last - first + 1
    local expiring = math.floor((now - HEALTH_TTL * 1000 + HEALTH_SKEW_MS) / HEALTH_BUCKET_MS)
    if not (from and top and built) or math.min(from, built) <= expiring
        or math.abs(first - from) > span or top - last > span then
        -- The next bucket too: a writer whose clock is a little ahead may have filled it.
        local upto = math.max(last + 1, math.min(top or last, last + span))
        local seen_ok, seen_fail, seen_ms = 0, 0, 0
        ok, fail, ms, top = 0, 0, 0, last
        for bucket = first, upto do
            local o, f, m = bucket_health(provider, channel, bucket)
            ok, fail, ms = ok + o, fail + f, ms + m
            if bucket <= last then
                seen_ok, seen_fail, seen_ms = seen_ok + o, seen_fail + f, seen_ms + m
            elseif o + f > 0 then
                top = bucket
            end
        end
        return seen_ok, seen_fail, seen_ms, {p .. 'from', first, p .. 'top', top, p .. 'built', first,
            p .. 'ok', ok, p .. 'fail', fail, p .. 'ms', ms}, true
    end
    local moved = first ~= from
    if first > from and ok + fail > 0 then
        -- Every bucket adds one to ok or fail: with none, every bucket from `from` on is empty.
        for bucket = from, first - 1 do
            local o, f, m = bucket_health(provider, channel, bucket)
            ok, fail, ms = ok - o, fail - f, ms - m
        end
    elseif first < from then
        for bucket = first, from - 1 do
            local o, f, m = bucket_health(provider, channel, bucket)
            ok, fail, ms = ok + o, fail + f, ms + m
        end
    end
    local changes = moved and {p .. 'from', first, p .. 'ok', ok, p .. 'fail', fail, p .. 'ms', ms} or nil
    for bucket = last + 1, top do
        local o, f, m = bucket_health(provider, channel, bucket)
        ok, fail, ms = ok - o, fail - f, ms - m
    end
    return ok, fail, ms, changes, false
end

-- Everything routing weighs, for every provider named, in one read: breaker, money,
-- spend today, and health per channel over the window (from running sums it keeps up to
-- date, the only thing it writes).
local function routing_state(_, args)
    local now, window_ms, day = tonumber(args[1]), tonumber(args[2]), args[3]
    local out = {}
    local last_bucket = math.floor(now / HEALTH_BUCKET_MS)
    local first_bucket = math.floor((now - window_ms) / HEALTH_BUCKET_MS)
    for i = 4, #args do
        local name = args[i]
        local b = redis.call('HMGET', breaker_key(name), 'state', 'failures', 'opened_at')
        local p = redis.call('HMGET', provider_key(name), 'balance', 'balance_at')
        local sums_key = health_sums_key(name)
        local sums = hgetall(sums_key) or {}
        local health, writes, rebuilt = {}, {}, false
        for channel, _ in pairs(CHANNELS) do
            local ok, fail, ms, changes, built = health_window(name, channel, sums, first_bucket, last_bucket, now)
            health[channel] = {ok = ok, fail = fail, ms = ms}
            rebuilt = rebuilt or built
            if changes then
                for _, value in ipairs(changes) do
                    writes[#writes + 1] = type(value) == 'number' and fmt_int(value) or value
                end
            end
        end
        if #writes > 0 then
            redis.call('HSET', sums_key, unpack(writes))
            -- Read at least hourly, they are rebuilt (and kept) long before this.
            if rebuilt then redis.call('EXPIRE', sums_key, 2 * HEALTH_TTL) end
        end
        out[name] = {
            breaker = b[1] or 'closed',
            failures = tonumber(b[2] or '0'),
            opened_at = tonumber(b[3] or '0'),
            no_money_ms = redis.call('PTTL', provider_key(name) .. ':no_money'),
            spent_e4 = tonumber(redis.call('GET', spent_key(name, day)) or '0'),
            balance = p[1] or '',
            balance_at = tonumber(p[2] or '0'),
            health = health,
        }
    end
    return cjson.encode(out)
end

-- What learned routing knows: every provider's estimates ('<channel>|<operator>' ->
-- '<attempts> <approvals> <ms to approval> <last update>') and the leading choices.
local function learning_state(_, args)
    local out = {learned = {}, leaders = {}}
    for _, name in ipairs(args) do
        local flat = redis.call('HGETALL', learn_key(name))
        local fields = {}
        for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
        out.learned[name] = fields
    end
    local flat = redis.call('HGETALL', K_LEADERS)
    for i = 1, #flat, 2 do out.leaders[flat[i]] = flat[i + 1] end
    return cjson.encode(out)
end

local function version() return VERSION end

redis.register_function('flashcall_start', start)
redis.register_function('flashcall_check', check)
redis.register_function{function_name = 'flashcall_admission', callback = admission_of, flags = {'no-writes'}}
redis.register_function{function_name = 'flashcall_status', callback = status, flags = {'no-writes'}}
redis.register_function('flashcall_cancel', cancel)
redis.register_function{function_name = 'flashcall_version', callback = version, flags = {'no-writes'}}
redis.register_function('flashcall_begin_attempt', begin_attempt)
redis.register_function('flashcall_attempt_delivered', attempt_delivered)
redis.register_function('flashcall_attempt_failed', attempt_failed)
redis.register_function('flashcall_give_up', give_up)
redis.register_function('flashcall_apply_check', apply_check)
redis.register_function('flashcall_fire_timers', fire_timers)
redis.register_function('flashcall_publish_config', publish_config)
redis.register_function('flashcall_drain_metrics', drain_metrics)
redis.register_function{function_name = 'flashcall_queue_stats', callback = queue_stats, flags = {'no-writes'}}
redis.register_function{function_name = 'flashcall_callback_target', callback = callback_target, flags = {'no-writes'}}
redis.register_function('flashcall_callback_accept', callback_accept)
redis.register_function('flashcall_schedule_poll', schedule_poll)
redis.register_function('flashcall_late_status', late_status)
redis.register_function('flashcall_breaker_fail', breaker_fail)
redis.register_function('flashcall_breaker_set', breaker_set)
redis.register_function('flashcall_breaker_reset', breaker_reset)
redis.register_function('flashcall_fraud_list', fraud_list)
redis.register_function('flashcall_fraud_release', fraud_release)
redis.register_function('flashcall_fraud_report', fraud_report)
redis.register_function('flashcall_provider_balance', provider_balance)
-- Writes nothing but the running sums of health, a few fields per provider: it answers at
-- maxmemory too, as it did when it only read.
redis.register_function{function_name = 'flashcall_routing_state', callback = routing_state, flags = {'allow-oom'}}
redis.register_function{function_name = 'flashcall_learning_state', callback = learning_state, flags = {'no-writes'}}
