//! The Lua state machine, as one Redis Functions library. Each function is called with its
//! typed argument struct (`args.rs`), so arity cannot drift.
//!
//! The library is `lua/lib.lua` (the queue layout and the shared helpers) followed by one
//! function per file of `lua/`. Loaded once with `FUNCTION LOAD`, the helpers are compiled and
//! defined once, not on every call as they would be if each script carried them: a call costs
//! only its own work. The library and its functions are named after a hash of their source, so
//! instances of different releases can share a Redis during a rolling upgrade, each calling its
//! own code. A Redis that lost the library (restarted without persistence, `FUNCTION FLUSH`)
//! gets it again on the first call that finds it missing.

use std::hash::{DefaultHasher, Hash, Hasher};

use redis::Script;

/// One function of the library.
pub(super) struct Function {
    name: String,
}

impl Function {
    /// The name it is registered under (the library's hash, then the function's own name).
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

macro_rules! library {
    ($($name:ident),* $(,)?) => {
        pub(super) struct Scripts {
            /// The library's source, for `FUNCTION LOAD REPLACE`.
            pub library: String,
            $(pub $name: Function,)*
            /// Not a queue function: it touches only the instance registry.
            pub heartbeat: Script,
        }

        impl Scripts {
            pub(super) fn load() -> Self {
                let mut body = String::from(include_str!("lua/lib.lua"));
                $(
                    body.push_str(concat!("\nlocal function ", stringify!($name), "()\n"));
                    body.push_str(include_str!(concat!("lua/", stringify!($name), ".lua")));
                    body.push_str("\nend\n");
                )*
                let mut hasher = DefaultHasher::new();
                body.hash(&mut hasher);
                let prefix = format!("jobwire_{:016x}", hasher.finish());
                let mut library = format!("#!lua name={prefix}\n{body}");
                $(
                    library.push_str(&format!(
                        "redis.register_function('{prefix}_{name}', function(keys, args) return run({name}, keys, args) end)\n",
                        name = stringify!($name),
                    ));
                )*
                Self {
                    library,
                    $($name: Function { name: format!("{prefix}_{}", stringify!($name)) },)*
                    heartbeat: Script::new(include_str!("lua/heartbeat.lua")),
                }
            }
        }
    };
}

library!(
    add,
    lease,
    complete,
    fail,
    extend,
    requeue,
    reap,
    reclaim,
    stats,
    info,
    progress,
    cancel,
    pause,
    retry,
    delete,
    purge,
    session_create,
    session_get,
    session_set,
    session_delete,
    session_sweep,
    doctor_unplace,
    doctor_place,
    doctor_lease,
    doctor_session,
    doctor_tombstone,
);
