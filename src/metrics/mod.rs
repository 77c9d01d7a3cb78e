//! Metrics of trained dictionaries: reconstruction quality, and max cosine similarity (MCS)
//! between dictionaries or against ground truth.
pub mod assignment;
pub mod mcs;
pub mod perplexity;
pub mod reconstruction;
