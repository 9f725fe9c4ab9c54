//! The UNet call of a sampling step replayed from a CUDA graph: on a GPU the eager step is
//! bound by kernel launches (~1,000 per SD1.5 call), and replaying the captured call launches
//! them as one unit (PyTorch's figure: 34 ms eager, 10.6 ms replayed, fp16 batch 2 on an H100).
//!
//! One graph per (sample shape, context shape, dtype), captured at its first call and kept
//! with the model, so later runs replay at once. Inputs are copied into the tensors the graph
//! was captured with; the output is copied out (the next replay rewrites it). A capture that
//! fails, or whose replay does not reproduce the eager call it was captured from, turns graphs
//! off for this model with a message, and the eager call goes on.
use std::cell::RefCell;
use std::collections::HashMap;

use tch::{Device, Kind, Tensor};
use weft_cuda::CudaGraph;

use super::unet_2d_condition::UNet2DConditionModel;
use crate::error::{ModelError, Result, TchContext};

/// Graphs kept per model at most (each holds its own activation memory); more distinct shapes
/// than this start the collection afresh.
const GRAPHS_KEPT: usize = 4;

/// Eager calls before capture, on the capture stream: cuDNN's benchmark search, cuBLAS
/// workspaces and other lazily made state must exist before capture begins.
const WARMUP_CALLS: usize = 2;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct GraphKey {
    sample: Vec<i64>,
    context: Vec<i64>,
    kind: Kind,
    device: usize,
}

/// A captured UNet call with the tensors it reads and writes.
struct CapturedCall {
    graph: CudaGraph,
    sample: Tensor,
    timesteps: Tensor,
    context: Tensor,
    output: Tensor,
}

enum State {
    On(HashMap<GraphKey, CapturedCall>),
    /// Graphs failed for this model once; why.
    Off(String),
}

/// The CUDA graphs of one UNet; lives with the loaded model.
pub struct UNetGraphs {
    state: RefCell<State>,
}

impl Default for UNetGraphs {
    fn default() -> Self {
        Self {
            state: RefCell::new(State::On(HashMap::new())),
        }
    }
}

/// Whether CUDA graphs are wanted: on unless `WEFT_CUDA_GRAPHS` is `0`, `off` or `false`.
pub fn cuda_graphs_wanted() -> bool {
    !matches!(
        std::env::var("WEFT_CUDA_GRAPHS").as_deref(),
        Ok("0" | "off" | "false")
    )
}

impl UNetGraphs {
    /// `unet.forward(sample, timesteps, context)` from a CUDA graph, or `None` where graphs do
    /// not apply (not on CUDA, turned off, or failed before): the caller then calls eagerly.
    /// `timesteps` is `[B]`; `context` `[B or 1, T, D]`.
    pub fn forward(
        &self,
        unet: &UNet2DConditionModel,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
    ) -> Option<Result<Tensor>> {
        let Device::Cuda(device) = sample.device() else {
            return None;
        };
        if !weft_cuda::loaded() || !cuda_graphs_wanted() {
            return None;
        }
        let batch = sample.size()[0];
        let key = GraphKey {
            sample: sample.size(),
            context: vec![batch, context.size()[1], context.size()[2]],
            kind: unet.kind(),
            device,
        };
        let mut state = self.state.borrow_mut();
        let State::On(graphs) = &mut *state else {
            return None;
        };
        if !graphs.contains_key(&key) {
            if graphs.len() >= GRAPHS_KEPT {
                graphs.clear();
            }
            match capture(unet, sample, timesteps, context, device) {
                Ok(call) => {
                    graphs.insert(key.clone(), call);
                }
                Err(why) => {
                    eprintln!(
                        "weft: CUDA graphs are off for this model, the UNet runs eagerly: {why}"
                    );
                    *state = State::Off(why);
                    return None;
                }
            }
        }
        let call = graphs.get_mut(&key)?;
        Some(replay(call, sample, timesteps, context))
    }

    /// Why graphs are off for this model, if they are.
    pub fn off_because(&self) -> Option<String> {
        match &*self.state.borrow() {
            State::Off(why) => Some(why.clone()),
            State::On(_) => None,
        }
    }

    /// How many captured calls are kept.
    pub fn captured(&self) -> usize {
        match &*self.state.borrow() {
            State::On(graphs) => graphs.len(),
            State::Off(_) => 0,
        }
    }
}

/// The inputs as the graph reads them: the model's dtype, `[B]` timesteps, the context
/// expanded to the batch, each in its own contiguous memory.
fn static_inputs(
    unet: &UNet2DConditionModel,
    sample: &Tensor,
    timesteps: &Tensor,
    context: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let batch = sample.size()[0];
    let kind = unet.kind();
    (|| -> tch::Result<(Tensor, Tensor, Tensor)> {
        let sample = fresh_copy(&sample.f_to_kind(kind)?)?;
        let timesteps = fresh_copy(
            &timesteps
                .f_reshape([-1])?
                .f_expand([batch], false)?
                .f_to_kind(Kind::Float)?,
        )?;
        let context = fresh_copy(&context.f_to_kind(kind)?.f_expand([batch, -1, -1], false)?)?;
        Ok((sample, timesteps, context))
    })()
    .context(|| "preparing the CUDA graph's input tensors".to_string())
}

/// `t` in new contiguous memory of its own.
fn fresh_copy(t: &Tensor) -> tch::Result<Tensor> {
    let mut out = t.f_empty_like()?.f_contiguous()?;
    out.f_copy_(t)?;
    Ok(out)
}

fn capture(
    unet: &UNet2DConditionModel,
    sample: &Tensor,
    timesteps: &Tensor,
    context: &Tensor,
    device: usize,
) -> std::result::Result<CapturedCall, String> {
    let (sample, timesteps, context) =
        static_inputs(unet, sample, timesteps, context).map_err(|e| e.to_string())?;
    let eager = unet
        .forward(&sample, &timesteps, &context)
        .map_err(|e| format!("the eager call before capture failed: {e}"))?;
    let (graph, output) = CudaGraph::capture(device, WARMUP_CALLS, || {
        unet.forward(&sample, &timesteps, &context)
    })
    .map_err(|e| match e {
        Ok(torch) => format!("capture: {torch}"),
        Err(model) => format!("capture: the UNet call failed: {model}"),
    })?;
    graph.replay().map_err(|e| format!("first replay: {e}"))?;
    // The replay must give what the eager call gave: anything the capture froze that should
    // vary (a value read on the host, a tensor made outside the graph) shows up here.
    let largest = |t: &Tensor| -> tch::Result<f64> {
        t.f_abs()?
            .f_max()?
            .f_to_kind(Kind::Float)?
            .f_double_value(&[])
    };
    let (worst, scale) = output
        .f_sub(&eager)
        .and_then(|difference| Ok((largest(&difference)?, largest(&eager)?)))
        .map_err(|e| format!("comparing the replay with the eager call: {e}"))?;
    if worst.is_nan() || worst > 1e-3 * scale.max(1.0) {
        return Err(format!(
            "the replayed call differs from the eager one by {worst:e} (largest value {scale:e})"
        ));
    }
    Ok(CapturedCall {
        graph,
        sample,
        timesteps,
        context,
        output,
    })
}

fn replay(
    call: &mut CapturedCall,
    sample: &Tensor,
    timesteps: &Tensor,
    context: &Tensor,
) -> Result<Tensor> {
    let batch = call.sample.size()[0];
    (|| -> tch::Result<()> {
        call.sample.f_copy_(sample)?;
        call.timesteps
            .f_copy_(&timesteps.f_reshape([-1])?.f_expand([batch], false)?)?;
        call.context
            .f_copy_(&context.f_expand([batch, -1, -1], false)?)?;
        Ok(())
    })()
    .context(|| "copying the UNet inputs into the CUDA graph's tensors".to_string())?;
    call.graph
        .replay()
        .map_err(|e| ModelError::Other(format!("CUDA graph replay of the UNet: {e}")))?;
    fresh_copy(&call.output).context(|| "copying the CUDA graph's UNet output".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::unet_2d_condition::UNetConfig;
    use crate::weights::{WeightedModel, Weights};

    fn tiny_unet(device: Device) -> UNet2DConditionModel {
        let config = UNetConfig::tiny_sd1();
        let shapes = UNet2DConditionModel::weight_shapes(config.clone()).unwrap();
        tch::manual_seed(0);
        let tensors = shapes
            .into_iter()
            .map(|(name, shape)| (name, Tensor::randn(&shape, (Kind::Float, device)) * 0.05))
            .collect();
        UNet2DConditionModel::new(&Weights::new("random", tensors), "", config).unwrap()
    }

    #[test]
    fn on_the_cpu_there_is_no_graph_and_the_caller_runs_eagerly() {
        let unet = tiny_unet(Device::Cpu);
        let graphs = UNetGraphs::default();
        let dim = unet.config().cross_attention_dim;
        let sample = Tensor::randn([2, 4, 8, 8], (Kind::Float, Device::Cpu));
        let timesteps = Tensor::full([2], 500.0, (Kind::Float, Device::Cpu));
        let context = Tensor::randn([2, 7, dim], (Kind::Float, Device::Cpu));
        assert!(graphs
            .forward(&unet, &sample, &timesteps, &context)
            .is_none());
        assert_eq!(graphs.captured(), 0);
        assert_eq!(graphs.off_because(), None);
    }

    #[test]
    fn the_static_inputs_are_what_the_eager_call_would_see() {
        let unet = tiny_unet(Device::Cpu);
        let dim = unet.config().cross_attention_dim;
        let sample = Tensor::randn([2, 4, 8, 8], (Kind::Float, Device::Cpu));
        let timesteps = Tensor::from(321.0f64);
        let context = Tensor::randn([1, 7, dim], (Kind::Float, Device::Cpu));
        let (s, t, c) = static_inputs(&unet, &sample, &timesteps, &context).unwrap();
        assert_eq!(t.size(), vec![2]);
        assert_eq!(c.size(), vec![2, 7, dim]);
        assert!(c.is_contiguous());
        // Fresh memory, not views of the caller's tensors: replay copies into them.
        assert_ne!(s.data_ptr(), sample.data_ptr());
        assert_ne!(c.data_ptr(), context.data_ptr());
        let eager = unet.forward(&sample, &timesteps, &context).unwrap();
        let from_static = unet.forward(&s, &t, &c).unwrap();
        assert!(eager.equal(&from_static));
    }
}
