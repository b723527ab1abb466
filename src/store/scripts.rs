//! The Lua state machine, as one Redis Functions library, each function wrapped in a typed
//! method on [`Store`](super::Store) so arity cannot drift.
//!
//! The library is `lua/lib.lua` (the queue layout and the shared helpers) followed by one
//! function per file of `lua/`. Loaded once with `FUNCTION LOAD`, the helpers are compiled and
//! defined once, not on every call as they would be if each script carried them: a call costs
//! only its own work. The library and its functions are named after a hash of their source, so
//! instances of different releases can share a Redis during a rolling upgrade, each calling its
//! own code. A Redis that lost the library (restarted without persistence, `FUNCTION FLUSH`)
//! gets it again on the first call that finds it missing.

use std::hash::{DefaultHasher, Hash, Hasher};

use redis::{Cmd, Script, ToRedisArgs};

/// One function of the library.
pub struct Function {
    name: String,
}

/// A call of a library function under construction: keys, then arguments.
pub struct Call<'a> {
    function: &'a Function,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl Call<'_> {
    pub fn key(&mut self, key: impl Into<String>) -> &mut Self {
        self.keys.push(key.into());
        self
    }

    pub fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// `FCALL name numkeys keys... args...`
    pub fn command(&self) -> Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(&self.function.name).arg(self.keys.len()).arg(&self.keys);
        for arg in &self.args {
            cmd.arg(arg.as_slice());
        }
        cmd
    }
}

impl Function {
    pub fn call(&self) -> Call<'_> {
        Call { function: self, keys: Vec::new(), args: Vec::new() }
    }
}

macro_rules! library {
    ($($name:ident),* $(,)?) => {
        pub struct Scripts {
            /// The library's source, for `FUNCTION LOAD REPLACE`.
            pub library: String,
            $(pub $name: Function,)*
            /// Not a queue function: it touches only the instance registry.
            pub heartbeat: Script,
        }

        impl Scripts {
            pub fn load() -> Self {
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
);
