//! The Lua scripts that make each multi-step operation atomic on the server.

use std::sync::LazyLock;

use redis::Script;

/// Compare-and-swap save. `KEYS`: the token, the list of replaced refresh tokens.
/// `ARGV`: the token's JSON; `"1"` to compare; the expected access and refresh tokens
/// (`""` for none); the events channel; the new refresh token (`""` for none); how
/// long, in milliseconds, and how many replaced refresh tokens are remembered.
/// Returns 1 if saved, 0 on a conflict, -1 if the stored value is not JSON.
///
/// A save that replaces a pair whose refresh token differs from the new one pushes
/// that refresh token's SHA-1 onto the list: [`TURN`] then tells a process that
/// still holds the replaced pair to adopt the new one rather than present it.
pub(crate) static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local stored = redis.call('GET', KEYS[1])
        local replaced = nil
        if stored then
          local ok, token = pcall(cjson.decode, stored)
          local valid = ok and type(token) == 'table'
          if ARGV[2] == '1' then
            if not valid then return -1 end
            local access = token['access_token'] or ''
            local refresh = token['refresh_token'] or ''
            if access ~= ARGV[3] or refresh ~= ARGV[4] then return 0 end
          end
          if valid and type(token['refresh_token']) == 'string'
            and token['refresh_token'] ~= '' and token['refresh_token'] ~= ARGV[6] then
            replaced = token['refresh_token']
          end
        end
        redis.call('SET', KEYS[1], ARGV[1])
        if replaced then
          redis.call('LPUSH', KEYS[2], redis.sha1hex(replaced))
          redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[8]) - 1)
          redis.call('PEXPIRE', KEYS[2], ARGV[7])
        end
        redis.call('PUBLISH', ARGV[5], 'saved')
        return 1
        ",
    )
});

/// Asks for the refresh lease. `KEYS`: the lease, the refused marker, the list of
/// replaced refresh tokens, the token. `ARGV`: our owner id, the lease's time to
/// live in milliseconds, the refresh token to present (`""` for none), the issue
/// time (Unix seconds) of the pair it belongs to. Returns
///
/// - `replaced` if a peer saved a pair that replaced that refresh token's pair, and
///   the stored pair is other than it and not issued earlier (so the caller adopts
///   the stored pair, or refreshes from it: never presents a token a peer rotated);
/// - `refused` if a peer presented that refresh token and was refused;
/// - `acquired`, or `busy`.
pub(crate) static TURN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if ARGV[3] ~= '' then
          local hash = redis.sha1hex(ARGV[3])
          local stored = redis.call('GET', KEYS[4])
          if stored then
            local ok, token = pcall(cjson.decode, stored)
            if ok and type(token) == 'table' and token['refresh_token'] ~= ARGV[3]
              and tonumber(token['issued_at']) and tonumber(token['issued_at']) >= tonumber(ARGV[4]) then
              for _, replaced in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
                if replaced == hash then return 'replaced' end
              end
            end
          end
          if redis.call('GET', KEYS[2]) == hash then
            return 'refused'
          end
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
