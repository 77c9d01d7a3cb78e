//! The feature browser: static, self-contained HTML pages per run (`features/index.html`, one
//! page per analysed feature), written from the analysis stages' outputs. Readable from the
//! file system with no network; a little inline script sorts and filters the index.

pub mod assets;
pub mod index;
pub mod page;
pub mod tokens;

use crate::analysis::direction_ablation::DirectionAblation;
use crate::analysis::logit_lens::LensLists;
use crate::analysis::stats::LatentStats;
use crate::results::SaeId;
use crate::stages::ablated_text::FeatureAblatedText;
use crate::stages::feature_examples::FeatureExamplesOf;
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// One analysed SAE and everything the analyses found about its features.
pub struct SaeView<'a> {
    pub id: SaeId,
    pub stats: &'a [LatentStats],
    pub features: &'a [FeatureExamplesOf],
    pub lens: &'a [LensLists],
    pub ablated: &'a [FeatureAblatedText],
    pub direction: &'a [DirectionAblation],
    /// The next smaller and next larger dictionary of the sweep (same sparsity and seed).
    pub smaller: Option<Across>,
    pub larger: Option<Across>,
}

/// How this SAE's features map onto a neighbouring dictionary (one-to-one MCS matching).
pub struct Across {
    pub id: SaeId,
    /// This SAE's feature → (the neighbour's matched feature, cosine).
    pub partner: HashMap<usize, (usize, f32)>,
    /// The neighbour's features that have pages (empty if it was not analysed).
    pub analysed: HashSet<usize>,
}

pub struct Browser<'a> {
    pub title: String,
    pub saes: Vec<SaeView<'a>>,
}

/// Directory of an SAE's pages: `d_sae512_l1-0.05_seed0` or `d_sae512_k32_seed0`.
pub fn slug(id: &SaeId) -> String {
    match id.k {
        Some(k) => format!("d_sae{}_k{k}_seed{}", id.d_sae, id.seed),
        None => format!("d_sae{}_l1-{}_seed{}", id.d_sae, id.l1, id.seed),
    }
}

pub fn feature_file(feature: usize) -> String {
    format!("f{feature}.html")
}

impl SaeView<'_> {
    pub fn label(&self) -> String {
        self.id.label(true)
    }
}

/// Write `index.html` and every feature page under `dir`.
pub fn write(browser: &Browser, dir: &Path) -> Result<()> {
    let write = |path: &Path, html: String| -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "cannot create", e))?;
        }
        std::fs::write(path, html).map_err(|e| Error::io(path, "cannot write", e))
    };
    write(&dir.join("index.html"), index::render(browser))?;
    for sae in &browser.saes {
        for i in 0..sae.features.len() {
            let path = dir
                .join(slug(&sae.id))
                .join(feature_file(sae.features[i].feature));
            write(&path, page::render(sae, i))?;
        }
    }
    Ok(())
}

/// The page skeleton shared by the index and feature pages.
pub fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{}</title><style>{}</style></head><body>{body}<script>{}</script></body></html>\n",
        tokens::esc(title),
        assets::STYLE,
        assets::SCRIPT
    )
}
