//! Building a model from a weight set, always through the check that every tensor fit.
use std::collections::{BTreeMap, HashMap};

use super::Weights;
use crate::error::Result;

/// Proof that a build goes through [`WeightedModel::new`] or [`WeightedModel::weight_shapes`]:
/// only this module makes one, so no code can build a model and skip the weight check (a
/// missing tensor would otherwise become silent zeros).
pub struct Checked(());

/// A model built from diffusers-named weights; `new` and `weight_shapes` are the ways in.
pub trait WeightedModel: Sized {
    type Config;
    /// The model's name in weight errors.
    const NAME: &'static str;

    /// Builds the modules from `w` under `prefix`; the caller (`new`) checks the weight set.
    fn build(w: &Weights, prefix: &str, config: Self::Config, _: Checked) -> Result<Self>;

    /// Builds the model from diffusers-named weights under `prefix` (`""` for a diffusers
    /// component file). Reports every missing, unexpected or mis-shaped tensor at once.
    fn new(w: &Weights, prefix: &str, config: Self::Config) -> Result<Self> {
        let model = Self::build(w, prefix, config, Checked(()))?;
        w.finish(Self::NAME)?;
        Ok(model)
    }

    /// The tensors (diffusers names, shapes) a model of `config` is made of: what a
    /// checkpoint must hold, or what a benchmark fills with random weights.
    fn weight_shapes(config: Self::Config) -> Result<BTreeMap<String, Vec<i64>>> {
        let probe = Weights::new("probe", HashMap::new());
        Self::build(&probe, "", config, Checked(()))?;
        Ok(probe.requested())
    }
}

/// Bytes of the tensors `shapes` (a model's [`WeightedModel::weight_shapes`]) in `kind`.
pub fn parameter_bytes(shapes: &BTreeMap<String, Vec<i64>>, kind: tch::Kind) -> u64 {
    let elements: i64 = shapes
        .values()
        .map(|shape| shape.iter().product::<i64>())
        .sum();
    elements as u64 * kind.elt_size_in_bytes() as u64
}
