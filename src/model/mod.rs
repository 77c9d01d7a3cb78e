//! GPT-NeoX (Pythia) forward pass with TransformerLens hook points.
