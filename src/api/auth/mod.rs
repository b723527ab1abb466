//! Authentication and authorization at the transport: the rule of every method (`rules.rs`),
//! the layer that authenticates each call and checks its role (`layer.rs`) and holds each token
//! to its number of open streams (`streams.rs`), and what a handler
//! asks of the decision: the scope of the queues its request names (`caller.rs`, `targets.rs`),
//! what a listing may show, and what a reader is not shown. The tokens themselves, their file
//! and their reload are `crate::auth`.

mod caller;
mod layer;
mod rules;
mod streams;
mod targets;

pub(crate) use caller::Caller;
pub(crate) use layer::AuthLayer;
