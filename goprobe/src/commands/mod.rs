//! The faces of the engine: each command configures it with its own arguments and consumes what
//! it yields. Commands do not import each other; what two of them share lives in the engine or
//! in an earlier stage.
pub mod agent;
pub mod dev;
pub mod funclatency;
pub mod offcpu;
pub mod packs;
pub mod profile;
pub mod query;
pub mod stackcount;
pub mod symbols;
