//! Node declarations (inputs, outputs, version) and the `Node` trait every node type
//! implements; the declarations drive validation, the JSON Schema and `weft nodes`.
use std::any::Any;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tch::{Device, Tensor};

use crate::cancel::{CancelToken, Cancelled};
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
    /// An integer input must be a multiple of this (image sides of 8, say); checked by
    /// validation before anything runs.
    pub multiple_of: Option<i64>,
    pub choices: Vec<&'static str>,
    /// The choices are names found on disk when asked (the models in the models folder): the
    /// registry's lister for this source gives them; any other string is still accepted.
    pub listed_from: Option<&'static str>,
    /// May be left out with no default; the node then sees no value.
    pub optional: bool,
    /// A node's own rule for a constant (a file name prefix, say), run by validation after
    /// the type, range and choices checks, so a value the node would refuse at run time is
    /// refused before anything runs.
    pub check: Option<ConstantCheck>,
    /// How the editor draws the value, when the type alone does not say it (a prompt's text
    /// box, a slider, an image file with an upload button); see [`InputSpec::widget`].
    pub widget_hint: Option<Widget>,
}

/// The editor's widget for an input's constant, sent as the catalogue's `widget`. A hint for
/// drawing only: validation and runs never read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Widget {
    /// One line of text.
    Text,
    /// A text box of several lines under the input's row (prompts).
    Multiline,
    /// A number box.
    Number,
    /// A slider from `min` to `max` by `step`, beside a number box.
    Slider,
    /// A number box with a button for a random seed.
    Seed,
    /// A checkbox.
    Toggle,
    /// A list of the input's `choices`.
    Choice,
    /// An image file: its name (from the inputs folder's list), an upload button and a preview.
    ImageFile,
}

impl Widget {
    pub fn as_str(self) -> &'static str {
        match self {
            Widget::Text => "text",
            Widget::Multiline => "multiline",
            Widget::Number => "number",
            Widget::Slider => "slider",
            Widget::Seed => "seed",
            Widget::Toggle => "toggle",
            Widget::Choice => "choice",
            Widget::ImageFile => "image_file",
        }
    }

    /// The widget for a constant of type `ty` with no hint: `choices` listed make a list.
    pub fn for_type(ty: ValueType, has_choices: bool) -> Option<Widget> {
        Some(match ty {
            _ if !ty.accepts_constant() => return None,
            _ if has_choices => Widget::Choice,
            ValueType::Bool => Widget::Toggle,
            ValueType::Seed => Widget::Seed,
            ValueType::Int | ValueType::Float => Widget::Number,
            _ => Widget::Text,
        })
    }
}

/// See [`InputSpec::check`]: `Err` is the diagnostic (message and hint) for the value.
pub type ConstantCheck = fn(&Constant) -> Result<(), crate::Diagnostic>;

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
            multiple_of: None,
            choices: Vec::new(),
            listed_from: None,
            optional: false,
            check: None,
            widget_hint: None,
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
    /// The value must be a multiple of `n` (also the editor's step).
    pub fn multiple_of(mut self, n: i64) -> Self {
        self.multiple_of = Some(n);
        self.step = Some(n as f64);
        self
    }
    pub fn choices(mut self, choices: &[&'static str]) -> Self {
        self.choices = choices.to_vec();
        self
    }
    /// Suggest the names the registry's lister finds for `source` (see `Registry::listed_choices`).
    pub fn listed_from(mut self, source: &'static str) -> Self {
        self.listed_from = Some(source);
        self
    }
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
    /// Validation also runs `check` on a constant (see [`InputSpec::check`]).
    pub fn check(mut self, check: ConstantCheck) -> Self {
        self.check = Some(check);
        self
    }
    /// A text box of several lines for a string (a prompt).
    pub fn multiline(mut self) -> Self {
        self.widget_hint = Some(Widget::Multiline);
        self
    }
    /// A slider between the input's range (set it with [`InputSpec::range`]).
    pub fn slider(mut self) -> Self {
        self.widget_hint = Some(Widget::Slider);
        self
    }
    /// An image file name: the editor offers an upload button and shows the image.
    pub fn image_file(mut self) -> Self {
        self.widget_hint = Some(Widget::ImageFile);
        self
    }
    /// The editor's widget: the hint given, else what the type says (none for a link-only type).
    pub fn widget(&self) -> Option<Widget> {
        if !self.ty.accepts_constant() {
            return None;
        }
        self.widget_hint.or_else(|| {
            Widget::for_type(
                self.ty,
                !self.choices.is_empty() || self.listed_from.is_some(),
            )
        })
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
    /// The inputs this output's value depends on, when fewer than all: the nodes it feeds are
    /// keyed by these inputs (and the node's files) only, so a change to another input re-runs
    /// this node but not what uses only this output (see `plan::Step::output_keys`).
    pub depends_on: Option<&'static [&'static str]>,
}

impl OutputSpec {
    pub fn new(name: &'static str, ty: ValueType, doc: &'static str) -> Self {
        Self {
            name,
            ty,
            doc,
            depends_on: None,
        }
    }
    /// This output depends on `inputs` only (see [`OutputSpec::depends_on`]).
    pub fn depends_on(mut self, inputs: &'static [&'static str]) -> Self {
        self.depends_on = Some(inputs);
        self
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

/// A node failure. `From` any error type, like `anyhow`, so nodes can use `?`; the error's
/// chain of causes is kept, and a [`Cancelled`] anywhere in it makes the failure a cancellation.
#[derive(Debug)]
pub enum NodeError {
    Failed(String),
    /// A library's typed error, with its causes.
    Source(Box<dyn std::error::Error + Send + Sync + 'static>),
    Cancelled,
}

impl NodeError {
    pub fn msg(message: impl Into<String>) -> Self {
        NodeError::Failed(message.into())
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for NodeError {
    fn from(e: E) -> Self {
        let mut link: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(error) = link {
            if error.is::<Cancelled>() {
                return NodeError::Cancelled;
            }
            link = error.source();
        }
        NodeError::Source(Box::new(e))
    }
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Failed(m) => f.write_str(m),
            NodeError::Source(error) => {
                // Each cause once: many errors already repeat their source in their message.
                let mut message = error.to_string();
                let mut source = error.source();
                while let Some(s) = source {
                    let text = s.to_string();
                    if !message.contains(&text) {
                        message.push_str(": ");
                        message.push_str(&text);
                    }
                    source = s.source();
                }
                f.write_str(&message)
            }
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
    /// A small picture of the work so far (a `data:image/png;base64,` URL), when asked for.
    pub preview: Option<String>,
}

/// What a running node may use besides its inputs.
pub struct NodeContext<'a> {
    pub node_id: &'a str,
    pub device: Device,
    pub output_dir: &'a Path,
    /// The folders models are looked up in, in order.
    pub models: &'a crate::model_folders::ModelFolders,
    /// Opens the files the node reads (user-named ones at least) under the run's folder rule.
    pub files: &'a crate::file_access::FileAccess,
    /// The workflow being run, for output nodes that embed it (PNG metadata).
    pub workflow: &'a crate::workflow::Workflow,
    pub(crate) cancel: &'a CancelToken,
    pub(crate) on_progress: &'a mut dyn FnMut(Progress),
    pub(crate) on_output: &'a mut dyn FnMut(PathBuf),
    pub(crate) notices: &'a mut Vec<String>,
    /// Previews are wanted every this many steps (0: never).
    pub(crate) preview_every: u32,
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
        (self.on_progress)(Progress {
            step,
            total,
            preview: None,
        });
    }
    /// Whether whoever watches wants a preview with this step's progress.
    pub fn wants_preview(&self, step: u32) -> bool {
        self.preview_every > 0 && step.is_multiple_of(self.preview_every)
    }
    /// Progress with a preview (see `wants_preview`).
    pub fn progress_with_preview(&mut self, step: u32, total: u32, preview: Option<String>) {
        (self.on_progress)(Progress {
            step,
            total,
            preview,
        });
    }
    /// Report a file this node wrote (an image), so the CLI and the browser can show it.
    pub fn output_file(&mut self, path: PathBuf) {
        (self.on_output)(path);
    }

    /// Something the user should know about this node's result that is not a failure (an
    /// image flagged unsafe, say): sent as a `notice` event when the node ends.
    pub fn notice(&mut self, message: impl Into<String>) {
        self.notices.push(message.into());
    }
}

/// A node type. Implementations are stateless; state lives in values and the cache.
pub trait Node: Send + Sync + 'static {
    fn spec(&self) -> NodeSpec;

    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>>;

    /// Inputs whose values may differ between the images of one batch (a sampler's seed): a
    /// sweep whose cells differ only in these runs them as one [`Node::run_batch`]. Empty (the
    /// default): the node is not batched.
    fn per_image_inputs(&self) -> &'static [&'static str] {
        &[]
    }

    /// Runs variants of this node that differ only in [`Node::per_image_inputs`] together and
    /// returns each variant's outputs, in order; each must be what `run` gives for that
    /// variant alone (up to a batched model call's arithmetic). The default runs them in turn.
    fn run_batch(&self, variants: &[Inputs], ctx: &mut NodeContext) -> NodeResult<Vec<Vec<Value>>> {
        variants
            .iter()
            .map(|inputs| self.run(inputs, ctx))
            .collect()
    }

    /// Files this node reads given its constant inputs; their content hash joins its cache key.
    fn input_files(
        &self,
        _constants: &ConstantInputs,
        _models: &crate::model_folders::ModelFolders,
    ) -> NodeResult<Vec<PathBuf>> {
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
    /// The file a path input names, when it is given as a constant (for `input_files`).
    pub fn file(&self, name: &str) -> Vec<PathBuf> {
        self.string(name).map(PathBuf::from).into_iter().collect()
    }
}

#[cfg(test)]
mod node_error_tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(Cancelled);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("sampling stopped")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn cancelled_anywhere_in_the_error_chain_is_a_cancellation_not_a_failure() {
        assert!(matches!(NodeError::from(Cancelled), NodeError::Cancelled));
        assert!(matches!(
            NodeError::from(Wrapper(Cancelled)),
            NodeError::Cancelled
        ));
        let io = std::io::Error::other("disk on fire");
        let failure = NodeError::from(io);
        assert!(matches!(failure, NodeError::Source(_)));
        assert_eq!(failure.to_string(), "disk on fire");
    }
}
