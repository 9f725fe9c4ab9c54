//! weft-engine: typed values, node declarations and registry, workflow files, validation,
//! planning, the cached executor and its events. It knows no concrete node and no model.

pub mod cache;
pub mod cancel;
pub mod catalogue;
pub mod device_memory;
pub mod diagnostic;
pub mod disk_cache;
pub mod events;
pub mod executor;
pub mod file_access;
pub mod host_memory;
pub mod model_folders;
pub mod modes;
pub mod node;
pub mod plan;
pub mod registry;
pub mod schema;
pub mod subgraph;
pub mod sweep;
pub mod validate;
pub mod value;
pub mod worker;
pub mod workflow;
pub mod yaml;

pub use cancel::{CancelToken, Cancelled};
pub use diagnostic::{Code as DiagnosticCode, Diagnostic};
pub use events::{Event, RunStatus};
pub use executor::{Batch, Executor, ExecutorConfig, NodeReport, RunReport, RunRequest};
pub use file_access::FileAccess;
pub use model_folders::{ModelFolder, ModelFolders};
pub use node::{
    ConstantCheck, ConstantInputs, InputSpec, Inputs, Node, NodeContext, NodeError, NodeResult,
    NodeSpec, OutputSpec, Widget,
};
pub use plan::{CacheKey, Plan};
pub use registry::Registry;
pub use validate::{validate, validate_subgraph};
pub use value::{Constant, Value, ValueType};
pub use workflow::{InputValue, Link, NodeEntry, Workflow};
