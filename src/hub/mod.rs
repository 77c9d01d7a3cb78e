//! Hugging Face hub access: cache resolution and downloads for models and datasets.
