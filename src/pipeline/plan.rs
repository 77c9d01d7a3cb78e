//! The stage graph of an experiment:
//!
//!   toy_data ──► train_sae (one per grid point) ──► eval_sae (one per grid point)
//!                      └──────── pairs of consecutive sizes ──► match_sizes
//!
//! Nodes are in topological order; each node's key covers its inputs' keys, so changing
//! the data changes every key downstream while adding an l1 value adds only new nodes.

use crate::cache::key::stage_key;
use crate::cache::StageKey;
use crate::data::toy::ToyParams;
use crate::spec::resolve::TextSetup;
use crate::spec::resolve::{DataParams, GridPoint, ResolvedSpec};
use crate::stages::ce_baselines::BaselineParams;
use crate::stages::eval_lm::LmEvalParams;
use crate::stages::eval_sae::EvalParams;
use crate::stages::harvest::HarvestParams;
use crate::stages::match_sizes::MatchParams;
use crate::stages::tokenize::TokenizeParams;
use crate::stages::train_sae::TrainParams;
use crate::stages::{
    ce_baselines, eval_lm, eval_sae, harvest, match_sizes, tokenize, toy_data, train_sae,
};
use crate::Result;
use serde::Serialize;

pub enum Task {
    ToyData(ToyParams),
    Tokenize(TokenizeParams),
    Harvest {
        params: HarvestParams,
        tokens: usize,
    },
    CeBaselines {
        params: BaselineParams,
        tokens: usize,
        harvest: usize,
    },
    /// Training on an activation store (text data).
    TrainSaeOnStore {
        point: GridPoint,
        params: TrainParams,
        harvest: usize,
    },
    EvalLm {
        point: GridPoint,
        params: LmEvalParams,
        tokens: usize,
        harvest: usize,
        sae: usize,
        baselines: usize,
    },
    TrainSae {
        point: GridPoint,
        params: TrainParams,
        data: usize,
    },
    EvalSae {
        point: GridPoint,
        params: EvalParams,
        data: usize,
        sae: usize,
    },
    MatchSizes {
        small: GridPoint,
        large: GridPoint,
        params: MatchParams,
        small_sae: usize,
        large_sae: usize,
    },
}

pub struct Node {
    pub stage: &'static str,
    pub version: u32,
    /// Human-readable identity, e.g. `d_sae=512 l1=0.05 seed=0`.
    pub label: String,
    pub key: StageKey,
    /// Indices of the nodes this one reads.
    pub inputs: Vec<usize>,
    pub task: Task,
}

impl Node {
    pub fn input_keys(&self, plan: &Plan) -> Vec<StageKey> {
        self.inputs.iter().map(|&i| plan.nodes[i].key).collect()
    }
}

pub struct Plan {
    pub nodes: Vec<Node>,
}

impl Plan {
    fn push<P: Serialize>(
        &mut self,
        stage: &'static str,
        version: u32,
        label: String,
        params: &P,
        inputs: Vec<usize>,
        task: Task,
    ) -> Result<usize> {
        let input_keys: Vec<StageKey> = inputs.iter().map(|&i| self.nodes[i].key).collect();
        let key = stage_key(stage, version, params, &input_keys)?;
        self.nodes.push(Node {
            stage,
            version,
            label,
            key,
            inputs,
            task,
        });
        Ok(self.nodes.len() - 1)
    }
}

pub fn point_label(p: &GridPoint) -> String {
    match p.k {
        Some(k) => format!("d_sae={} k={k} seed={}", p.d_sae, p.seed),
        None => format!("d_sae={} l1={} seed={}", p.d_sae, p.l1, p.seed),
    }
}

fn train_params(r: &ResolvedSpec, point: &GridPoint) -> TrainParams {
    TrainParams {
        architecture: point.architecture,
        d_in: r.data.activation_dim(),
        d_sae: point.d_sae,
        l1: point.l1,
        k: point.k,
        seed: point.seed,
        schedule: r.schedule.clone(),
    }
}

pub fn build_plan(r: &ResolvedSpec) -> Result<Plan> {
    let mut plan = Plan { nodes: Vec::new() };
    let trained = match &r.data {
        DataParams::Toy(toy) => plan_toy(&mut plan, r, toy)?,
        DataParams::Text(text) => plan_text(&mut plan, r, text)?,
    };
    plan_matches(&mut plan, r, &trained)?;
    Ok(plan)
}

fn plan_toy(plan: &mut Plan, r: &ResolvedSpec, toy: &ToyParams) -> Result<Vec<(GridPoint, usize)>> {
    let data = plan.push(
        toy_data::NAME,
        toy_data::VERSION,
        format!(
            "{} features in {} dims, {} samples{}",
            toy.n_features,
            toy.activation_dim,
            toy.train_samples,
            if toy.correlated { ", correlated" } else { "" }
        ),
        toy,
        vec![],
        Task::ToyData(toy.clone()),
    )?;
    let eval_params = EvalParams {
        mcs_threshold: r.mcs_threshold,
    };
    let mut trained = Vec::new();
    for point in &r.grid {
        let params = train_params(r, point);
        let label = point_label(point);
        let sae = plan.push(
            train_sae::NAME,
            train_sae::VERSION,
            label.clone(),
            &params,
            vec![data],
            Task::TrainSae {
                point: *point,
                params: params.clone(),
                data,
            },
        )?;
        plan.push(
            eval_sae::NAME,
            eval_sae::VERSION,
            label,
            &eval_params,
            vec![data, sae],
            Task::EvalSae {
                point: *point,
                params: eval_params.clone(),
                data,
                sae,
            },
        )?;
        trained.push((*point, sae));
    }
    Ok(trained)
}

fn plan_text(plan: &mut Plan, r: &ResolvedSpec, t: &TextSetup) -> Result<Vec<(GridPoint, usize)>> {
    let tok_params = TokenizeParams {
        data_hash: t.data_hash.clone(),
        text_column: t.text_column.clone(),
        tokenizer_hash: t.tokenizer_hash.clone(),
        context: t.context.clone(),
    };
    let tokens = plan.push(
        tokenize::NAME,
        tokenize::VERSION,
        format!(
            "{} ({}-token contexts)",
            t.data_source, t.context.context_tokens
        ),
        &tok_params,
        vec![],
        Task::Tokenize(tok_params.clone()),
    )?;
    let dtype = format!("{:?}", t.dtype).to_lowercase();
    let harvest_params = HarvestParams {
        model_hash: t.model_hash.clone(),
        processing: t.processing.as_str().to_string(),
        dtype: dtype.clone(),
        hook: t.hook.name(),
        store_dtype: t.store_dtype,
    };
    let harvest = plan.push(
        harvest::NAME,
        harvest::VERSION,
        format!(
            "{} {} ({})",
            t.model_source,
            t.hook.name(),
            t.processing.as_str()
        ),
        &harvest_params,
        vec![tokens],
        Task::Harvest {
            params: harvest_params.clone(),
            tokens,
        },
    )?;
    let base_params = BaselineParams {
        model_hash: t.model_hash.clone(),
        processing: t.processing.as_str().to_string(),
        dtype,
        hook: t.hook.name(),
        eval_contexts: t.eval_contexts,
    };
    let baselines = plan.push(
        ce_baselines::NAME,
        ce_baselines::VERSION,
        format!("clean / zero / mean CE at {}", t.hook.name()),
        &base_params,
        vec![tokens, harvest],
        Task::CeBaselines {
            params: base_params.clone(),
            tokens,
            harvest,
        },
    )?;
    let eval_params = LmEvalParams {
        eval_contexts: t.eval_contexts,
    };
    let mut trained = Vec::new();
    for point in &r.grid {
        let params = train_params(r, point);
        let label = point_label(point);
        let sae = plan.push(
            train_sae::NAME,
            train_sae::VERSION,
            label.clone(),
            &params,
            vec![harvest],
            Task::TrainSaeOnStore {
                point: *point,
                params: params.clone(),
                harvest,
            },
        )?;
        plan.push(
            eval_lm::NAME,
            eval_lm::VERSION,
            label,
            &eval_params,
            vec![tokens, harvest, sae, baselines],
            Task::EvalLm {
                point: *point,
                params: eval_params.clone(),
                tokens,
                harvest,
                sae,
                baselines,
            },
        )?;
        trained.push((*point, sae));
    }
    Ok(trained)
}

fn plan_matches(plan: &mut Plan, r: &ResolvedSpec, trained: &[(GridPoint, usize)]) -> Result<()> {
    // The grid is sorted by (seed, l1, d_sae): consecutive entries with the same seed and
    // l1 are a size and its next larger size.
    let match_params = MatchParams {
        mcs_threshold: r.mcs_threshold,
    };
    for pair in trained.windows(2) {
        let ((small, small_sae), (large, large_sae)) = (pair[0], pair[1]);
        if small.seed != large.seed || small.l1 != large.l1 || small.k != large.k {
            continue;
        }
        plan.push(
            match_sizes::NAME,
            match_sizes::VERSION,
            format!(
                "d_sae={} vs {} l1={} seed={}",
                small.d_sae, large.d_sae, small.l1, small.seed
            ),
            &match_params,
            vec![small_sae, large_sae],
            Task::MatchSizes {
                small,
                large,
                params: match_params.clone(),
                small_sae,
                large_sae,
            },
        )?;
    }
    Ok(())
}
