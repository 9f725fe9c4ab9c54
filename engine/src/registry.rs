//! The registry of node types: name -> declaration + implementation.
use indexmap::IndexMap;

use crate::node::{Node, NodeSpec};

pub struct RegisteredNode {
    pub spec: NodeSpec,
    pub node: Box<dyn Node>,
}

#[derive(Default)]
pub struct Registry {
    nodes: IndexMap<&'static str, RegisteredNode>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a node type; a second registration of the same name replaces the first.
    pub fn register(&mut self, node: impl Node) -> &mut Self {
        let spec = node.spec();
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
}
