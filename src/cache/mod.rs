//! The content-addressed stage cache: keys (`key`), the on-disk store with atomic publish
//! and per-key locks (`store`), integrity checks (`verify`), and garbage collection (`gc`).
pub mod gc;
pub mod key;
pub mod store;
pub mod verify;

pub use key::StageKey;
pub use store::{Cache, Entry, Outcome};
