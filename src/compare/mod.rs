//! Comparing runs: naming them (`run_ref`), reading their tables and specs (`run_data`),
//! `saerun diff` (`diff`, rendered by `render`, plots overlaid by `overlay`), and committed references checked by
//! `saerun reproduce` and written by `saerun promote` (`reference`).

pub mod diff;
pub mod overlay;
pub mod reference;
pub mod render;
pub mod run_data;
pub mod run_ref;
