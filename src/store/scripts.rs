//! The Lua state machine, as one Redis Functions library. Each function is called with its
//! typed argument struct (`args.rs`), so arity cannot drift.
//!
//! The library is `lua/lib.lua` (the queue layout and the shared helpers), `lua/limits_lib.lua`
//! (rate limits and per-key concurrency) and `lua/schedules_lib.lua` (the schedules' layout and
//! helpers), followed by one function per file
//! of `lua/`. Loaded once with `FUNCTION LOAD`, the helpers are compiled and
//! defined once, not on every call as they would be if each script carried them: a call costs
//! only its own work. The library and its functions are named after a hash of their source and
//! flags, so instances of different releases can share a Redis during a rolling upgrade, each
//! calling its own code. A Redis that lost the library (restarted without persistence,
//! `FUNCTION FLUSH`) gets it again on the first call that finds it missing.
//!
//! Queue functions take the queue's keys and the leading arguments (`run` in lib.lua); global
//! functions (the instance and queue registries, the worker lists) take only their own.
//!
//! Each function is registered with the flags that say what Redis lets it do when it is out of
//! memory (`maxmemory` reached under `noeviction`):
//! - `allow-oom`: what frees or moves memory, or must keep working when Redis is full: leases,
//!   acks, retries, reaps, cancels, deletes, the session sweep, repairs, the heartbeat, the
//!   worker lists, shedding, schedule pauses and deletes. Each keeps what it adds bounded (its file's header says how), so
//!   the queue drains and memory comes back.
//! - `no-writes`: reads (called with `FCALL_RO`); Redis runs them whatever its memory.
//! - none: what only adds (adds, session create and set, progress, schedule upserts, fires and
//!   triggers). Redis refuses them
//!   whole when full, before they write anything (`StoreError::OutOfMemory`).

use std::hash::{DefaultHasher, Hash, Hasher};

/// One function of the library.
pub(super) struct Function {
    name: String,
    read_only: bool,
}

impl Function {
    /// The name it is registered under (the library's hash, then the function's own name).
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The command that calls it: `FCALL_RO` for a `no-writes` function, else `FCALL`.
    pub(super) fn command(&self) -> &'static str {
        if self.read_only { "FCALL_RO" } else { "FCALL" }
    }
}

/// The flag that makes a function read-only.
const NO_WRITES: &str = "no-writes";

macro_rules! library {
    (
        queue { $($name:ident [$($flag:literal),*]),* $(,)? }
        global { $($global:ident [$($global_flag:literal),*]),* $(,)? }
    ) => {
        pub(super) struct Scripts {
            /// The library's source, for `FUNCTION LOAD REPLACE`.
            pub library: String,
            /// The library's name: a hash of its source, so a library of that name is this one.
            pub library_name: String,
            $(pub $name: Function,)*
            $(pub $global: Function,)*
        }

        impl Scripts {
            pub(super) fn load() -> Self {
                // (name, the lib.lua runner its body goes through, flags)
                let functions: &[(&str, &str, &[&str])] = &[
                    $((stringify!($name), "run", &[$($flag),*]),)*
                    $((stringify!($global), "run_global", &[$($global_flag),*]),)*
                ];
                let mut body = String::from(include_str!("lua/lib.lua"));
                body.push_str(include_str!("lua/limits_lib.lua"));
                body.push_str(include_str!("lua/schedules_lib.lua"));
                // The bodies go in one table, not a local each: Lua allows a chunk 200 locals,
                // and the helpers above take most of them.
                body.push_str("\nlocal F = {}\n");
                $(
                    body.push_str(concat!("\nF.", stringify!($name), " = function()\n"));
                    body.push_str(include_str!(concat!("lua/", stringify!($name), ".lua")));
                    body.push_str("\nend\n");
                )*
                $(
                    body.push_str(concat!("\nF.", stringify!($global), " = function()\n"));
                    body.push_str(include_str!(concat!("lua/", stringify!($global), ".lua")));
                    body.push_str("\nend\n");
                )*
                let mut hasher = DefaultHasher::new();
                body.hash(&mut hasher);
                functions.hash(&mut hasher);
                let prefix = format!("jobwire_{:016x}", hasher.finish());
                let mut library = format!("#!lua name={prefix}\n{body}");
                for (name, runner, flags) in functions {
                    let flags: Vec<String> = flags.iter().map(|f| format!("'{f}'")).collect();
                    library.push_str(&format!(
                        "redis.register_function{{function_name='{prefix}_{name}', \
                         callback=function(keys, args) return {runner}(F.{name}, keys, args) end, \
                         flags={{{}}}}}\n",
                        flags.join(", "),
                    ));
                }
                let function = |name: &str, flags: &[&str]| Function {
                    name: format!("{prefix}_{name}"),
                    read_only: flags.contains(&NO_WRITES),
                };
                Self {
                    library,
                    library_name: prefix.clone(),
                    $($name: function(stringify!($name), &[$($flag),*]),)*
                    $($global: function(stringify!($global), &[$($global_flag),*]),)*
                }
            }
        }
    };
}

library! {
    queue {
        add [],
        lease ["allow-oom"],
        complete ["allow-oom"],
        fail ["allow-oom"],
        extend ["allow-oom"],
        requeue ["allow-oom"],
        postpone ["allow-oom"],
        reap ["allow-oom"],
        reclaim ["allow-oom"],
        stats ["no-writes"],
        info ["no-writes"],
        progress [],
        cancel ["allow-oom"],
        pause ["allow-oom"],
        retry ["allow-oom"],
        delete ["allow-oom"],
        purge ["allow-oom"],
        shed ["allow-oom"],
        session_create [],
        session_get ["no-writes"],
        session_jobs ["no-writes"],
        session_set [],
        session_delete ["allow-oom"],
        session_sweep ["allow-oom"],
        doctor_unplace ["allow-oom"],
        doctor_place ["allow-oom"],
        doctor_lease ["allow-oom"],
        doctor_session ["allow-oom"],
        doctor_tombstone ["allow-oom"],
        doctor_key_count ["allow-oom"],
        doctor_setting ["allow-oom"],
        doctor_schedule ["allow-oom"],
        schedule_set [],
        schedule_fire [],
        schedule_release ["allow-oom"],
        schedule_trigger [],
        schedule_pause ["allow-oom"],
        schedule_delete ["allow-oom"],
        settings_set ["allow-oom"],
        queue_retire ["allow-oom"],
    }
    global {
        heartbeat ["allow-oom"],
        workers_publish ["allow-oom"],
        queues_register ["allow-oom"],
        queue_admit ["allow-oom"],
    }
}
