//! Node declarations (inputs, outputs, version) and the `Node` trait every node type
//! implements; the declarations drive validation, the JSON Schema and `weft nodes`.
use std::any::Any;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tch::{Device, Tensor};

use crate::cancel::CancelToken;
use crate::value::{Constant, Value, ValueType};

/// One input socket or widget of a node type.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub name: &'static str,
    pub ty: ValueType,
    pub doc: &'static str,
    pub default: Option<Constant>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub step: Option<f64>,
    pub choices: Vec<&'static str>,
    /// May be left out with no default; the node then sees no value.
    pub optional: bool,
}

impl InputSpec {
    pub fn new(name: &'static str, ty: ValueType, doc: &'static str) -> Self {
        Self {
            name,
            ty,
            doc,
            default: None,
            min: None,
            max: None,
            step: None,
            choices: Vec::new(),
            optional: false,
        }
    }
    pub fn default(mut self, value: impl Into<Constant>) -> Self {
        self.default = Some(value.into());
        self
    }
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.min = Some(min);
        self.max = Some(max);
        self
    }
    pub fn min(mut self, min: f64) -> Self {
        self.min = Some(min);
        self
    }
    pub fn step(mut self, step: f64) -> Self {
        self.step = Some(step);
        self
    }
    pub fn choices(mut self, choices: &[&'static str]) -> Self {
        self.choices = choices.to_vec();
        self
    }
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
    pub fn is_required(&self) -> bool {
        self.default.is_none() && !self.optional
    }
}

/// One output socket of a node type.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub name: &'static str,
    pub ty: ValueType,
    pub doc: &'static str,
}

impl OutputSpec {
    pub fn new(name: &'static str, ty: ValueType, doc: &'static str) -> Self {
        Self { name, ty, doc }
    }
}

/// What a node type declares about itself.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub type_name: &'static str,
    pub category: &'static str,
    pub doc: &'static str,
    /// Bump when the implementation changes what it computes: it invalidates cached outputs.
    pub version: u32,
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    /// An output node (saves, previews, reports) is what makes a workflow run.
    pub output_node: bool,
}

impl NodeSpec {
    pub fn input(&self, name: &str) -> Option<(usize, &InputSpec)> {
        self.inputs.iter().enumerate().find(|(_, i)| i.name == name)
    }
    pub fn output(&self, name: &str) -> Option<(usize, &OutputSpec)> {
        self.outputs
            .iter()
            .enumerate()
            .find(|(_, o)| o.name == name)
    }
}

/// A node failure. `From` any error type, like `anyhow`, so nodes can use `?`.
#[derive(Debug)]
pub enum NodeError {
    Failed(String),
    Cancelled,
}

impl NodeError {
    pub fn msg(message: impl Into<String>) -> Self {
        NodeError::Failed(message.into())
    }
}

impl<E: std::error::Error> From<E> for NodeError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        NodeError::Failed(message)
    }
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Failed(m) => f.write_str(m),
            NodeError::Cancelled => f.write_str("cancelled"),
        }
    }
}

pub type NodeResult<T> = Result<T, NodeError>;

/// The resolved inputs of one node run, in declaration order.
pub struct Inputs<'a> {
    pub(crate) specs: &'a [InputSpec],
    pub(crate) values: Vec<Option<Value>>,
}

impl<'a> Inputs<'a> {
    pub fn new(specs: &'a [InputSpec], values: Vec<Option<Value>>) -> Self {
        Self { specs, values }
    }

    pub fn get(&self, name: &str) -> NodeResult<Option<&Value>> {
        let index = self
            .specs
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| NodeError::msg(format!("node asked for undeclared input '{name}'")))?;
        Ok(self.values[index].as_ref())
    }

    fn required(&self, name: &str) -> NodeResult<&Value> {
        self.get(name)?
            .ok_or_else(|| NodeError::msg(format!("input '{name}' has no value")))
    }

    fn mismatch(name: &str, want: &str, found: &Value) -> NodeError {
        NodeError::msg(format!(
            "input '{name}': expected {want}, found {}",
            found.describe()
        ))
    }

    pub fn int(&self, name: &str) -> NodeResult<i64> {
        match self.required(name)? {
            Value::Int(i) => Ok(*i),
            other => Err(Self::mismatch(name, "int", other)),
        }
    }

    pub fn float(&self, name: &str) -> NodeResult<f64> {
        match self.required(name)? {
            Value::Float(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            other => Err(Self::mismatch(name, "float", other)),
        }
    }

    pub fn string(&self, name: &str) -> NodeResult<&str> {
        match self.required(name)? {
            Value::String(s) => Ok(s),
            other => Err(Self::mismatch(name, "string", other)),
        }
    }

    pub fn bool(&self, name: &str) -> NodeResult<bool> {
        match self.required(name)? {
            Value::Bool(b) => Ok(*b),
            other => Err(Self::mismatch(name, "bool", other)),
        }
    }

    pub fn tensor(&self, name: &str) -> NodeResult<&Tensor> {
        match self.required(name)? {
            Value::Tensor(_, t) => Ok(t),
            other => Err(Self::mismatch(name, "a tensor", other)),
        }
    }

    pub fn optional_tensor(&self, name: &str) -> NodeResult<Option<&Tensor>> {
        match self.get(name)? {
            None => Ok(None),
            Some(Value::Tensor(_, t)) => Ok(Some(t)),
            Some(other) => Err(Self::mismatch(name, "a tensor", other)),
        }
    }

    pub fn object<T: Any>(&self, name: &str) -> NodeResult<Rc<T>> {
        match self.required(name)? {
            Value::Object { object, .. } => Rc::clone(object).downcast::<T>().map_err(|_| {
                NodeError::msg(format!("input '{name}': object of an unexpected kind"))
            }),
            other => Err(Self::mismatch(name, "an object", other)),
        }
    }
}

/// A step of progress inside a long node (a sampler step, a tile).
#[derive(Debug, Clone)]
pub struct Progress {
    pub step: u32,
    pub total: u32,
}

/// What a running node may use besides its inputs.
pub struct NodeContext<'a> {
    pub node_id: &'a str,
    pub device: Device,
    pub output_dir: &'a Path,
    pub models_dir: &'a Path,
    /// The workflow being run, for output nodes that embed it (PNG metadata).
    pub workflow: &'a crate::workflow::Workflow,
    pub(crate) cancel: &'a CancelToken,
    pub(crate) on_progress: &'a mut dyn FnMut(Progress),
    pub(crate) on_output: &'a mut dyn FnMut(PathBuf),
}

impl NodeContext<'_> {
    /// Err(Cancelled) when the run was cancelled: long nodes call this between steps.
    pub fn check_cancelled(&self) -> NodeResult<()> {
        if self.cancel.is_cancelled() {
            Err(NodeError::Cancelled)
        } else {
            Ok(())
        }
    }
    pub fn cancel_token(&self) -> &CancelToken {
        self.cancel
    }
    pub fn progress(&mut self, step: u32, total: u32) {
        (self.on_progress)(Progress { step, total });
    }
    /// Report a file this node wrote (an image), so the CLI and the browser can show it.
    pub fn output_file(&mut self, path: PathBuf) {
        (self.on_output)(path);
    }
}

/// A node type. Implementations are stateless; state lives in values and the cache.
pub trait Node: Send + Sync + 'static {
    fn spec(&self) -> NodeSpec;

    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>>;

    /// Files this node reads given its constant inputs; their content hash joins its cache key.
    fn input_files(
        &self,
        _constants: &ConstantInputs,
        _models_dir: &Path,
    ) -> Result<Vec<PathBuf>, String> {
        Ok(Vec::new())
    }
}

/// The constant inputs of a node (after defaults), for `Node::input_files`.
pub struct ConstantInputs<'a> {
    pub(crate) specs: &'a [InputSpec],
    pub(crate) values: Vec<Option<&'a Constant>>,
}

impl ConstantInputs<'_> {
    pub fn get(&self, name: &str) -> Option<&Constant> {
        let i = self.specs.iter().position(|s| s.name == name)?;
        self.values[i]
    }
    pub fn string(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Constant::String(s) => Some(s),
            _ => None,
        }
    }
}
