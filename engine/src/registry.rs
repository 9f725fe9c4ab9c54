//! The registry of node types: name -> declaration + implementation.

use indexmap::IndexMap;

use crate::model_folders::ModelFolders;
use crate::node::{InputSpec, Node, NodeSpec};

/// Lists the names found for a choice source (e.g. "checkpoints") in a models folder.
pub type ChoiceLister = dyn Fn(&str, &ModelFolders) -> Vec<String> + Send + Sync;

pub struct RegisteredNode {
    pub spec: NodeSpec,
    pub node: Box<dyn Node>,
}

#[derive(Default)]
pub struct Registry {
    nodes: IndexMap<&'static str, RegisteredNode>,
    lister: Option<Box<ChoiceLister>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a node type; a second registration of the same name replaces the first.
    pub fn register(&mut self, node: impl Node) -> &mut Self {
        let spec = node.spec();
        for output in &spec.outputs {
            for name in output.depends_on.unwrap_or_default() {
                // A misspelt name would silently drop an input from the output's key.
                assert!(
                    spec.input(name).is_some(),
                    "{}: output '{}' depends on '{name}', which is not one of its inputs",
                    spec.type_name,
                    output.name
                );
            }
        }
        self.nodes.insert(
            spec.type_name,
            RegisteredNode {
                spec,
                node: Box::new(node),
            },
        );
        self
    }

    pub fn get(&self, type_name: &str) -> Option<&RegisteredNode> {
        self.nodes.get(type_name)
    }

    pub fn get_index(&self, type_name: &str) -> Option<(usize, &RegisteredNode)> {
        self.nodes.get_full(type_name).map(|(i, _, n)| (i, n))
    }

    pub fn by_index(&self, index: usize) -> &RegisteredNode {
        &self.nodes[index]
    }

    pub fn iter(&self) -> impl Iterator<Item = &RegisteredNode> {
        self.nodes.values()
    }

    pub fn type_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.nodes.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Sets who lists the names of `listed_from` inputs (the node crate knows the models folder).
    pub fn set_choice_lister(
        &mut self,
        lister: impl Fn(&str, &ModelFolders) -> Vec<String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.lister = Some(Box::new(lister));
        self
    }

    /// The names an input offers now: its fixed choices, or what the lister finds on disk.
    pub fn listed_choices(&self, input: &InputSpec, models: &ModelFolders) -> Vec<String> {
        match (input.listed_from, &self.lister) {
            (Some(source), Some(lister)) => lister(source, models),
            _ => input.choices.iter().map(|c| c.to_string()).collect(),
        }
    }
}
