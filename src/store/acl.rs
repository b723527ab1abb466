//! The Redis ACL rules of a user that can run jobwire and nothing else: its keys and channels
//! (everything under the key prefix) and exactly the commands it sends, those of the Lua
//! functions included (Redis checks a function's calls against the caller's ACL, key by key).
//! `INFO` is for the memory watermark (`INFO memory`, sampled about once a second); `HELLO`
//! opens the RESP3 connection of the subscriptions; `CLUSTER SLOTS` is how the cluster client
//! learns the slot map (unused on one node).
//!
//! The integration test `tls::redis` runs the whole flow (serve, add, work, stats, listings,
//! sessions, admin calls, doctor with repairs) as a user with exactly these rules and checks
//! Redis's `ACL LOG`: a command added to the store or to a Lua file without a rule here fails
//! it. The README shows the rules for the default prefix, and a test holds it to them.
//!
//! Not granted on purpose: `CONFIG` (`CONFIG GET` would also read `requirepass` and
//! `masterauth`), so under this user jobwire skips its start-up check of `maxmemory-policy` and
//! persistence (and logs that it did).

/// Every command jobwire sends, as ACL command rules (`+name` or `+name|subcommand`), sorted.
pub const COMMANDS: &[&str] = &[
    "+cluster|slots",
    "+del",
    "+exists",
    "+fcall",
    "+fcall_ro",
    "+function|list",
    "+function|load",
    "+get",
    "+hdel",
    "+hello",
    "+hexists",
    "+hget",
    "+hgetall",
    "+hincrby",
    "+hkeys",
    "+hlen",
    "+hmget",
    "+hscan",
    "+hset",
    "+hsetnx",
    "+info",
    "+lindex",
    "+llen",
    "+lmpop",
    "+lpop",
    "+lpos",
    "+lpush",
    "+lrange",
    "+lrem",
    "+mget",
    "+pexpireat",
    "+pexpiretime",
    "+ping",
    "+psetex",
    "+pttl",
    "+publish",
    "+rpush",
    "+sadd",
    "+scan",
    "+scard",
    "+select",
    "+set",
    "+sintercard",
    "+sismember",
    "+spublish",
    "+srem",
    "+sscan",
    "+ssubscribe",
    "+subscribe",
    "+sunsubscribe",
    "+time",
    "+type",
    "+unlink",
    "+wait",
    "+xadd",
    "+xinfo|stream",
    "+xrange",
    "+xread",
    "+xrevrange",
    "+xtrim",
    "+zadd",
    "+zcard",
    "+zlexcount",
    "+zmscore",
    "+zrange",
    "+zrangebylex",
    "+zrangebyscore",
    "+zrank",
    "+zrem",
    "+zrevrange",
    "+zscore",
];

/// The ACL rules (after `ACL SETUSER <name> on >password`) of a jobwire user whose servers use
/// key prefix `prefix`: its keys, its channels, no other command than [`COMMANDS`].
pub fn acl_rules(prefix: &str) -> String {
    let pattern = format!("{}:*", glob_escaped(prefix));
    format!("resetkeys ~{pattern} resetchannels &{pattern} -@all {}", COMMANDS.join(" "))
}

/// `text` with Redis glob's special characters escaped, so a prefix matches only itself.
fn glob_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_cover_the_prefix_and_only_it() {
        let rules = acl_rules("jw");
        assert!(rules.starts_with("resetkeys ~jw:* resetchannels &jw:* -@all +cluster|slots +del "), "{rules}");
        assert_eq!(acl_rules("a*b"), acl_rules("jw").replace("jw:", "a\\*b:"));
    }

    #[test]
    fn the_commands_are_sorted_and_unique() {
        let mut sorted = COMMANDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, COMMANDS);
    }
}
