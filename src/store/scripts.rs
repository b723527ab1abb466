//! The Lua scripts, each wrapped in a typed function on [`Store`](super::Store) so arity cannot
//! drift. Queue scripts are `lua/lib.lua` followed by the script's own file as the body of a
//! function: Redis has no includes, and one shared prelude keeps the state machine's helpers in
//! one place. The events a body emits are written once it returns (`flush_events`), so
//! transitions of many jobs share stream entries.

use redis::Script;

macro_rules! queue_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/lib.lua"),
            "\nlocal function body()\n",
            include_str!(concat!("lua/", $file)),
            "\nend\nlocal out = body()\nflush_events()\nreturn out\n"
        ))
    };
}

pub struct Scripts {
    pub add: Script,
    pub lease: Script,
    pub complete: Script,
    pub fail: Script,
    pub extend: Script,
    pub requeue: Script,
    pub reap: Script,
    pub stats: Script,
    pub info: Script,
    pub progress: Script,
    pub cancel: Script,
    pub pause: Script,
    pub retry: Script,
    pub delete: Script,
    pub purge: Script,
    pub session_create: Script,
    pub session_get: Script,
    pub session_set: Script,
    pub session_delete: Script,
    pub session_sweep: Script,
    pub heartbeat: Script,
}

impl Scripts {
    pub fn load() -> Self {
        Self {
            add: queue_script!("add.lua"),
            lease: queue_script!("lease.lua"),
            complete: queue_script!("complete.lua"),
            fail: queue_script!("fail.lua"),
            extend: queue_script!("extend.lua"),
            requeue: queue_script!("requeue.lua"),
            reap: queue_script!("reap.lua"),
            stats: queue_script!("stats.lua"),
            info: queue_script!("info.lua"),
            progress: queue_script!("progress.lua"),
            cancel: queue_script!("cancel.lua"),
            pause: queue_script!("pause.lua"),
            retry: queue_script!("retry.lua"),
            delete: queue_script!("delete.lua"),
            purge: queue_script!("purge.lua"),
            session_create: queue_script!("session_create.lua"),
            session_get: queue_script!("session_get.lua"),
            session_set: queue_script!("session_set.lua"),
            session_delete: queue_script!("session_delete.lua"),
            session_sweep: queue_script!("session_sweep.lua"),
            heartbeat: Script::new(include_str!("lua/heartbeat.lua")),
        }
    }
}
