//! Runs a plan against the cache in topological order. A node whose key is cached is
//! reused without loading anything; inputs (data splits, trained SAEs) are loaded lazily
//! and at most once, only for nodes that must be computed.

use super::plan::{Node, Plan, Task};
use crate::cache::store::StageRequest;
use crate::cache::{Cache, Entry, Outcome};
use crate::data::text::TokenizedContexts;
use crate::model::GptNeoX;
use crate::progress::Progress;
use crate::record::StageRecord;
use crate::sae::Sae;
use crate::spec::resolve::{DataParams, ResolvedSpec, TextSetup};
use crate::stages::tokenize::TokenizeInputs;
use crate::stages::toy_data::ToySplits;
use crate::stages::{
    ce_baselines, eval_lm, eval_sae, harvest, match_sizes, tokenize, toy_data, train_sae,
};
use crate::Error;
use crate::Result;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

/// The cache entry of every node, with how each was obtained.
pub struct Executed {
    pub entries: Vec<Entry>,
    pub records: Vec<StageRecord>,
}

#[derive(Default)]
struct Loaded {
    data: HashMap<usize, Rc<ToySplits>>,
    saes: HashMap<usize, Rc<Sae>>,
    tokens: HashMap<usize, Rc<TokenizedContexts>>,
    model: Option<Rc<GptNeoX>>,
}

pub fn execute(
    plan: &Plan,
    resolved: &ResolvedSpec,
    cache: &Cache,
    progress: &Progress,
) -> Result<Executed> {
    let text = match &resolved.data {
        DataParams::Text(t) => Some(t.as_ref()),
        DataParams::Toy(_) => None,
    };
    let mut entries: Vec<Entry> = Vec::with_capacity(plan.nodes.len());
    let mut records = Vec::with_capacity(plan.nodes.len());
    let mut loaded = Loaded::default();
    let total = plan.nodes.len();
    for (i, node) in plan.nodes.iter().enumerate() {
        let started = Instant::now();
        let title = format!("[{:>3}/{total}] {:<12} {}", i + 1, node.stage, node.label);
        progress.stage_started(&format!("{} {}", node.stage, node.label));
        let input_keys = node.input_keys(plan);
        let (entry, outcome) = match &node.task {
            Task::ToyData(p) => get(cache, node, p, &input_keys, progress, |out| {
                toy_data::run(p, out)
            })?,
            Task::TrainSae { params, data, .. } => {
                get(cache, node, params, &input_keys, progress, |out| {
                    let splits = loaded.data(*data, &entries)?;
                    let bar = progress.steps(params.schedule.steps, &node.label);
                    let result = train_sae::run(params, &splits.train, out, |_, point| {
                        bar.inc(1);
                        if let Some(p) = point {
                            bar.set_message(format!("loss {:.4} L0 {:.1}", p.loss, p.l0));
                        }
                    });
                    bar.finish_and_clear();
                    result
                })?
            }
            Task::EvalSae {
                params, data, sae, ..
            } => get(cache, node, params, &input_keys, progress, |out| {
                let splits = loaded.data(*data, &entries)?;
                let sae = loaded.sae(*sae, &entries)?;
                eval_sae::run(params, &sae, &splits.eval, Some(&splits.features), out)
            })?,
            Task::Tokenize(p) => get(cache, node, p, &input_keys, progress, |out| {
                let t = need_text(text)?;
                let inputs = TokenizeInputs {
                    data_source: &t.data_source,
                    data_files: &t.data_files,
                    tokenizer: &t.model_files.tokenizer,
                };
                tokenize::run(p, &inputs, out)
            })?,
            Task::Harvest { params, tokens } => {
                get(cache, node, params, &input_keys, progress, |out| {
                    let t = need_text(text)?;
                    let contexts = loaded.tokens(*tokens, &entries)?;
                    let model = loaded.model(t)?;
                    let total =
                        (contexts.train.len() + contexts.eval.len()) / contexts.context_tokens;
                    let bar = progress.bar(total as u64, "contexts", &node.label);
                    let r =
                        harvest::run(params, &model, t.hook, &contexts, t.model_batch, out, &bar);
                    bar.finish_and_clear();
                    r
                })?
            }
            Task::CeBaselines {
                params,
                tokens,
                harvest: h,
            } => get(cache, node, params, &input_keys, progress, |out| {
                let t = need_text(text)?;
                let contexts = loaded.tokens(*tokens, &entries)?;
                let model = loaded.model(t)?;
                let train = harvest::open_train(&entries[*h].dir)?;
                let mean = train.stats().mean.clone();
                ce_baselines::run(params, &model, t.hook, &contexts, &mean, t.model_batch, out)
            })?,
            Task::TrainSaeOnStore {
                params, harvest: h, ..
            } => get(cache, node, params, &input_keys, progress, |out| {
                let store = std::sync::Arc::new(harvest::open_train(&entries[*h].dir)?);
                let mut source = store.shuffled(params.seed);
                let bar = progress.steps(params.schedule.steps, &node.label);
                let result = train_sae::run_on(params, &mut source, out, |_, point| {
                    bar.inc(1);
                    if let Some(p) = point {
                        bar.set_message(format!("loss {:.4} L0 {:.1}", p.loss, p.l0));
                    }
                });
                bar.finish_and_clear();
                result
            })?,
            Task::EvalLm {
                params,
                tokens,
                harvest: h,
                sae,
                baselines,
                ..
            } => get(cache, node, params, &input_keys, progress, |out| {
                let t = need_text(text)?;
                let contexts = loaded.tokens(*tokens, &entries)?;
                let model = loaded.model(t)?;
                let sae = loaded.sae(*sae, &entries)?;
                let eval_store = harvest::open_eval(&entries[*h].dir)?;
                let base = ce_baselines::load(&entries[*baselines].dir)?;
                eval_lm::run(
                    params,
                    &sae,
                    &model,
                    t.hook,
                    &contexts,
                    &eval_store,
                    &base,
                    t.model_batch,
                    out,
                )
            })?,
            Task::MatchSizes {
                params,
                small_sae,
                large_sae,
                ..
            } => get(cache, node, params, &input_keys, progress, |out| {
                let small = loaded.sae(*small_sae, &entries)?;
                let large = loaded.sae(*large_sae, &entries)?;
                match_sizes::run(params, &small, &large, out)
            })?,
        };
        let wall = started.elapsed().as_secs_f64();
        progress.println(&match outcome {
            Outcome::Reused => format!("{title}  reused"),
            Outcome::Computed => format!("{title}  computed in {wall:.1}s"),
        });
        progress.stage_finished();
        records.push(StageRecord {
            stage: node.stage.to_string(),
            label: node.label.clone(),
            key: node.key,
            outcome,
            wall_seconds: wall,
        });
        entries.push(entry);
    }
    Ok(Executed { entries, records })
}

fn get<P: Serialize>(
    cache: &Cache,
    node: &Node,
    params: &P,
    inputs: &[crate::cache::StageKey],
    progress: &Progress,
    compute: impl FnOnce(&Path) -> Result<()>,
) -> Result<(Entry, Outcome)> {
    let req = StageRequest {
        stage: node.stage,
        version: node.version,
        key: node.key,
        params,
        inputs,
    };
    cache.get_or_compute(&req, compute, || {
        progress.println(&format!(
            "        waiting for another saerun process computing {} {} ({})",
            node.stage,
            node.label,
            node.key.short()
        ))
    })
}

fn need_text(text: Option<&TextSetup>) -> Result<&TextSetup> {
    text.ok_or_else(|| Error::run("internal: a text stage in a toy plan"))
}

impl Loaded {
    fn tokens(&mut self, node: usize, entries: &[Entry]) -> Result<Rc<TokenizedContexts>> {
        if let Some(t) = self.tokens.get(&node) {
            return Ok(t.clone());
        }
        let t = Rc::new(tokenize::load(&entries[node].dir)?);
        self.tokens.insert(node, t.clone());
        Ok(t)
    }

    fn model(&mut self, t: &TextSetup) -> Result<Rc<GptNeoX>> {
        if let Some(m) = &self.model {
            return Ok(m.clone());
        }
        let m = Rc::new(GptNeoX::load(&t.model_files.dir, t.processing, t.dtype)?);
        self.model = Some(m.clone());
        Ok(m)
    }

    fn data(&mut self, node: usize, entries: &[Entry]) -> Result<Rc<ToySplits>> {
        if let Some(d) = self.data.get(&node) {
            return Ok(d.clone());
        }
        let d = Rc::new(toy_data::load(&entries[node])?);
        self.data.insert(node, d.clone());
        Ok(d)
    }

    fn sae(&mut self, node: usize, entries: &[Entry]) -> Result<Rc<Sae>> {
        if let Some(s) = self.saes.get(&node) {
            return Ok(s.clone());
        }
        let s = Rc::new(train_sae::load_sae(&entries[node])?);
        self.saes.insert(node, s.clone());
        Ok(s)
    }
}
