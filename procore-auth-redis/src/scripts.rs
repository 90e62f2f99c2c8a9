//! The Lua scripts that make each multi-step operation atomic on the server.

use std::sync::LazyLock;

use redis::Script;

/// Compare-and-swap save. `KEYS[1]`: the token. `ARGV`: the token's JSON; `"1"` to
/// compare; the expected access and refresh tokens (`""` for none); the events
/// channel. Returns 1 if saved, 0 on a conflict, -1 if the stored value is not JSON.
pub(crate) static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if ARGV[2] == '1' then
          local stored = redis.call('GET', KEYS[1])
          if stored then
            local ok, token = pcall(cjson.decode, stored)
            if not ok or type(token) ~= 'table' then return -1 end
            local access = token['access_token'] or ''
            local refresh = token['refresh_token'] or ''
            if access ~= ARGV[3] or refresh ~= ARGV[4] then return 0 end
          end
        end
        redis.call('SET', KEYS[1], ARGV[1])
        redis.call('PUBLISH', ARGV[5], 'saved')
        return 1
        ",
    )
});

/// Asks for the refresh lease. `KEYS`: the lease, the refused marker. `ARGV`: our
/// owner id, the lease's time to live in milliseconds, the refresh token to present
/// (`""` for none). Returns `refused` if a peer presented that refresh token and was
/// refused, `acquired`, or `busy`.
pub(crate) static TURN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == redis.sha1hex(ARGV[3]) then
          return 'refused'
        end
        if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
          return 'acquired'
        end
        return 'busy'
        ",
    )
});

/// Extends the lease if we still hold it. `KEYS[1]`: the lease. `ARGV`: our owner
/// id, the time to live in milliseconds. Returns 1 if extended.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
          return redis.call('PEXPIRE', KEYS[1], ARGV[2])
        end
        return 0
        ",
    )
});

/// Ends the lease. `KEYS`: the lease, the refused marker. `ARGV`: our owner id, the
/// outcome (`saved`, `refused`, `unchanged`), the refresh token presented (`""` for
/// none), the refused marker's time to live in milliseconds, the events channel.
/// The marker holds only the refresh token's SHA-1, and is set even if the lease
/// was lost meanwhile: Procore's refusal holds regardless.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if ARGV[2] == 'refused' and ARGV[3] ~= '' then
          redis.call('SET', KEYS[2], redis.sha1hex(ARGV[3]), 'PX', ARGV[4])
        end
        if redis.call('GET', KEYS[1]) == ARGV[1] then
          redis.call('DEL', KEYS[1])
        end
        redis.call('PUBLISH', ARGV[5], ARGV[2])
        return 1
        ",
    )
});
