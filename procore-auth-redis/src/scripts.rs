//! The Lua scripts that make each multi-step operation atomic on the server.

use std::sync::LazyLock;

use redis::Script;

/// Reads the stored pair's credentials: `stored_credentials(value)` gives the access
/// and refresh tokens (`''` for absent, null or non-string fields), or `nil` when the
/// value is not a JSON object (another writer's data: treated as no pair at all).
const CREDENTIALS: &str = r"
local function stored_credentials(stored)
  if not stored then return nil end
  local ok, token = pcall(cjson.decode, stored)
  if not ok or type(token) ~= 'table' then return nil end
  local function text(value)
    if type(value) == 'string' then return value end
    return ''
  end
  return text(token['access_token']), text(token['refresh_token'])
end
";

/// Compare-and-swap save. `KEYS`: the token, the list of replaced refresh tokens.
/// `ARGV`: the token's JSON; `"1"` to compare; the expected access and refresh tokens
/// (`""` for none); the events channel; the new access and refresh tokens (`""` for
/// none); how long, in milliseconds, and how many replaced refresh tokens are
/// remembered. Returns 1 if saved (or already stored: a save repeated after a lost
/// reply succeeds), 0 on a conflict.
///
/// A value that is not a JSON object counts as no pair (as an absent key does). A
/// save that replaces a pair whose refresh token differs from the new one pushes that
/// refresh token's SHA-1 onto the list: [`TURN`] then tells a process that still
/// holds the replaced pair to adopt the new one rather than present it.
pub(crate) static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{CREDENTIALS}{}",
        r"
        local access, refresh = stored_credentials(redis.call('GET', KEYS[1]))
        if access == ARGV[6] and refresh == ARGV[7] then return 1 end
        if ARGV[2] == '1' and access and (access ~= ARGV[3] or refresh ~= ARGV[4]) then
          return 0
        end
        redis.call('SET', KEYS[1], ARGV[1])
        -- The refresh token this save replaces: the stored one, or (when what was
        -- stored was not a pair) the one the caller expected and presented.
        local rotated = refresh
        if not access and ARGV[2] == '1' then rotated = ARGV[4] end
        if rotated and rotated ~= '' and rotated ~= ARGV[7] then
          redis.call('LPUSH', KEYS[2], redis.sha1hex(rotated))
          redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[9]) - 1)
          redis.call('PEXPIRE', KEYS[2], ARGV[8])
        end
        redis.call('PUBLISH', ARGV[5], 'saved')
        return 1
        "
    ))
});

/// Asks for the refresh lease. `KEYS`: the lease, the refused marker, the list of
/// replaced refresh tokens, the token. `ARGV`: our owner id, the lease's time to
/// live in milliseconds, the refresh token to present (`""` for none). Returns
///
/// - `replaced` if a peer saved a pair that replaced that refresh token's pair and
///   the store holds another pair now (the caller adopts it, or refreshes from it:
///   never presents a token a peer rotated). Whatever the pairs' issue times say:
///   the rotation order is the store's, not the clocks';
/// - `refused` if a peer presented that refresh token and was refused;
/// - `acquired`, or `busy`.
pub(crate) static TURN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{CREDENTIALS}{}",
        r"
        if ARGV[3] ~= '' then
          local hash = redis.sha1hex(ARGV[3])
          local _, stored_refresh = stored_credentials(redis.call('GET', KEYS[4]))
          if stored_refresh and stored_refresh ~= ARGV[3] then
            for _, replaced in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
              if replaced == hash then return 'replaced' end
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
        "
    ))
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
