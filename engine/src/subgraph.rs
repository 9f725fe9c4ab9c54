//! Subgraphs: a workflow file used as a node. `type: ./lib/img2img.yaml` (a path relative to
//! the workflow) or `type: Img2Img` (a file `Img2Img.yaml` in a library folder) names a file
//! whose `inputs:` and `outputs:` sections declare what it exposes; inside, `$inputs.NAME`
//! stands for an exposed input.
//!
//! Expansion inlines every subgraph node before validation: its inner nodes get ids
//! `NODE__INNER` (valid ids, so an expanded workflow reads back and re-runs on its own, which
//! is what a PNG carries), links to its outputs are redirected to the inner nodes that make
//! them, and each inner node remembers its file, so errors point into it with line:column.
//! Inner nodes therefore validate, plan and cache exactly as if written inline: same types,
//! constants and upstream keys, so the same cache keys. Files that include each other are
//! refused, naming the chain.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::{IndexMap, IndexSet};

use crate::diagnostic::{closest_within, name_list, Diagnostic, SUGGESTION_WORK};
use crate::node::InputSpec;
use crate::registry::Registry;
use crate::validate::check_constant;
use crate::workflow::{
    InputEntry, InputValue, Interface, Link, NodeEntry, NodeMode, Workflow, INPUTS_NODE,
};

/// Between a subgraph node's id and its inner nodes' ids.
pub const SEPARATOR: &str = "__";

/// Subgraph files may include others this deep.
const MAX_NESTING: usize = 16;

/// Nodes and exposed inputs and outputs an expansion may make in all. Each use of a subgraph
/// copies it, so ten uses of a file with ten uses of the next, 16 files deep, would be 10^16
/// nodes (the "billion laughs" of subgraphs); a real workflow is far below this.
pub const MAX_EXPANDED: usize = 500_000;

/// Where subgraph types are looked up.
pub struct SubgraphPaths<'a> {
    /// The folder of the workflow file: `./x.yaml` types are relative to it.
    pub base_dir: &'a Path,
    /// Folders searched for `NAME.yaml` when a type is neither registered nor a path.
    pub library: &'a [PathBuf],
}

/// Whether a node type names a file rather than a registered type.
pub fn is_path_type(type_name: &str) -> bool {
    type_name.starts_with("./")
        || type_name.starts_with("../")
        || type_name.starts_with('/')
        || type_name.ends_with(".yaml")
        || type_name.ends_with(".yml")
        || type_name.ends_with(".json")
}

/// The file a node type names, if it is a subgraph: a path, or a library file of that name.
pub fn subgraph_file(
    type_name: &str,
    registry: &Registry,
    paths: &SubgraphPaths,
) -> Option<PathBuf> {
    if is_path_type(type_name) {
        return Some(paths.base_dir.join(type_name));
    }
    if registry.get(type_name).is_some() {
        return None;
    }
    paths
        .library
        .iter()
        .map(|dir| dir.join(format!("{type_name}.yaml")))
        .find(|p| p.is_file())
}

/// The workflow with every subgraph node inlined, or `None` when it has none (the common
/// case costs one registry lookup per node and no copy).
pub fn expand_subgraphs(
    workflow: &Workflow,
    registry: &Registry,
    paths: &SubgraphPaths,
) -> Result<Option<Workflow>, Vec<Diagnostic>> {
    expand_subgraphs_with_files(workflow, registry, paths).0
}

/// [`expand_subgraphs`], and every subgraph file the expansion named, at any depth, in the
/// order first met and each once (also those it could not read, so that a watcher sees them
/// appear): what a hot reload must watch besides the workflow file itself.
///
/// This is the one rewrite every workflow passes before validation and planning, so the node
/// modes (bypass, mute: [`crate::modes`]) are applied here too, after the expansion.
pub fn expand_subgraphs_with_files(
    workflow: &Workflow,
    registry: &Registry,
    paths: &SubgraphPaths,
) -> (Result<Option<Workflow>, Vec<Diagnostic>>, Vec<PathBuf>) {
    let (expanded, files) = expand_only(workflow, registry, paths);
    let rewritten = expanded.and_then(|expanded| {
        let base = expanded.as_ref().unwrap_or(workflow);
        Ok(crate::modes::apply_modes(base, registry)?.or(expanded))
    });
    (rewritten, files)
}

fn expand_only(
    workflow: &Workflow,
    registry: &Registry,
    paths: &SubgraphPaths,
) -> (Result<Option<Workflow>, Vec<Diagnostic>>, Vec<PathBuf>) {
    let any = workflow
        .nodes
        .values()
        .any(|n| subgraph_file(&n.type_name, registry, paths).is_some());
    if !any {
        return (Ok(None), Vec::new());
    }
    let mut expander = Expander {
        registry,
        library: paths.library,
        out: Workflow {
            version: workflow.version,
            layout: workflow.layout.clone(),
            groups: workflow.groups.clone(),
            appearance: workflow.appearance.clone(),
            version_pos: workflow.version_pos,
            nodes_pos: workflow.nodes_pos,
            interface: workflow.interface.clone(),
            sweep: workflow.sweep.clone(),
            ..Workflow::default()
        },
        redirects: HashMap::new(),
        subgraph_ids: HashMap::new(),
        stack: Vec::new(),
        errors: Vec::new(),
        files: IndexSet::new(),
        parsed: HashMap::new(),
        expansion_left: MAX_EXPANDED,
        too_large: false,
        muting: 0,
        suggestion_work: SUGGESTION_WORK,
    };
    expander.expand_level(workflow, "", None, paths.base_dir, None);
    expander.resolve_redirects();
    let files: Vec<PathBuf> = expander.files.into_iter().collect();
    if expander.errors.is_empty() {
        (Ok(Some(expander.out)), files)
    } else {
        (Err(expander.errors), files)
    }
}

/// Names each diagnostic's file where its node came from a subgraph file.
pub fn attribute_files(workflow: &Workflow, diagnostics: &mut [Diagnostic]) {
    for d in diagnostics {
        if d.file.is_some() {
            continue;
        }
        let file = d
            .node
            .as_ref()
            .and_then(|n| workflow.nodes.get(n))
            .and_then(|n| n.file.as_ref());
        if let Some(file) = file {
            d.file = Some(file.as_ref().into());
        }
    }
}

/// The values a subgraph's exposed inputs take in one use of it.
#[derive(Default)]
struct Bindings {
    values: HashMap<String, InputValue>,
    /// Inputs with no value: optional ones left out, or ones whose error the parent got.
    absent: HashSet<String>,
}

struct Expander<'a> {
    registry: &'a Registry,
    library: &'a [PathBuf],
    out: Workflow,
    /// (subgraph node id, output) -> the inner output it stands for.
    redirects: HashMap<(String, String), Link>,
    /// Expanded subgraph node ids -> (file label, its output names), for errors.
    subgraph_ids: HashMap<String, (String, Vec<String>)>,
    /// Files being expanded, outermost first (for cycles).
    stack: Vec<PathBuf>,
    errors: Vec<Diagnostic>,
    /// Every subgraph file named, canonical where it exists, each once.
    files: IndexSet<PathBuf>,
    /// Each subgraph file read once, however many nodes use it (`None`: it did not parse,
    /// and its errors were reported at its first use).
    parsed: HashMap<PathBuf, Option<Arc<Workflow>>>,
    /// What is left of `MAX_EXPANDED`.
    expansion_left: usize,
    /// Whether the expansion was refused as too large (said once).
    too_large: bool,
    /// The "did you mean" budget of the expansion's hints (see `SUGGESTION_WORK`).
    suggestion_work: usize,
    /// How many muted subgraph nodes enclose the level being expanded: their inner nodes are
    /// all muted, which leaves out the subgraph and what only it feeds.
    muting: usize,
}

impl Expander<'_> {
    /// Inlines `wf`'s nodes with ids prefixed by `prefix`; `bindings` are the values of its
    /// exposed inputs (`None` at the top level).
    fn expand_level(
        &mut self,
        wf: &Workflow,
        prefix: &str,
        file: Option<Arc<str>>,
        base_dir: &Path,
        bindings: Option<&Bindings>,
    ) {
        let paths = SubgraphPaths {
            base_dir,
            library: self.library,
        };
        for (id, node) in &wf.nodes {
            let new_id = format!("{prefix}{id}");
            match subgraph_file(&node.type_name, self.registry, &paths) {
                None => {
                    let mut entry = node.clone();
                    entry.file = file.clone().or(entry.file);
                    if self.muting > 0 {
                        entry.mode = NodeMode::Mute;
                    }
                    entry.inputs = self.translate_inputs(node, prefix, bindings, &file);
                    self.out.nodes.insert(new_id, entry);
                }
                Some(path) => {
                    self.expand_node(id, node, &new_id, &path, prefix, &file, bindings);
                }
            }
        }
    }

    /// A node's inputs with links renamed into the expanded ids and `$inputs.x` bound.
    fn translate_inputs(
        &mut self,
        node: &NodeEntry,
        prefix: &str,
        bindings: Option<&Bindings>,
        file: &Option<Arc<str>>,
    ) -> IndexMap<String, InputEntry> {
        let mut inputs = IndexMap::with_capacity(node.inputs.len());
        for (name, entry) in &node.inputs {
            let value = match (&entry.value, bindings) {
                (InputValue::Link(link), Some(bound)) if link.node == INPUTS_NODE => {
                    match bound.values.get(&link.output) {
                        Some(value) => value.clone(),
                        // Left out (optional) or already reported at the parent: the inner
                        // default applies, and nothing is reported twice.
                        None if bound.absent.contains(&link.output) => continue,
                        None => {
                            let mut d = Diagnostic::at_opt(
                                entry.pos,
                                format!(
                                    "$inputs.{} is not an input this subgraph declares",
                                    link.output
                                ),
                            )
                            .input(name);
                            d.file = file.as_ref().map(|f| f.as_ref().into());
                            self.errors
                                .push(d.hint("declare it under `inputs:` at the top of the file"));
                            continue;
                        }
                    }
                }
                (InputValue::Link(link), _) => InputValue::Link(Link {
                    node: format!("{prefix}{}", link.node),
                    output: link.output.clone(),
                }),
                (constant, _) => constant.clone(),
            };
            inputs.insert(
                name.clone(),
                InputEntry {
                    value,
                    pos: entry.pos,
                },
            );
        }
        inputs
    }

    #[allow(clippy::too_many_arguments)]
    fn expand_node(
        &mut self,
        id: &str,
        node: &NodeEntry,
        new_id: &str,
        path: &Path,
        prefix: &str,
        file: &Option<Arc<str>>,
        bindings: Option<&Bindings>,
    ) {
        let located = |d: Diagnostic| {
            let mut d = d.node(id);
            d.file = file.as_ref().map(|f| f.as_ref().into());
            d
        };
        if node.mode == NodeMode::Bypass {
            self.errors.push(
                located(Diagnostic::at_opt(
                    node.pos,
                    "a subgraph node cannot be bypassed (its outputs' types are its inner nodes')",
                ))
                .hint("mute it (`mute: true`), or bypass a node inside its file"),
            );
            return;
        }
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        self.files.insert(canonical.clone());
        if let Some(start) = self.stack.iter().position(|p| *p == canonical) {
            let chain: Vec<String> = self.stack[start..]
                .iter()
                .chain(std::iter::once(&canonical))
                .map(|p| p.display().to_string())
                .collect();
            self.errors.push(located(Diagnostic::at_opt(
                node.type_pos,
                format!("subgraph files include each other: {}", chain.join(" -> ")),
            )));
            return;
        }
        if self.stack.len() >= MAX_NESTING {
            self.errors.push(located(Diagnostic::at_opt(
                node.type_pos,
                format!("subgraphs nested deeper than {MAX_NESTING} files"),
            )));
            return;
        }
        let label: Arc<str> = Arc::from(path.display().to_string());
        let inner = match self.parsed.get(&canonical) {
            Some(Some(inner)) => inner.clone(),
            Some(None) => return,
            None => {
                let read = match std::fs::read(path) {
                    Err(e) => {
                        self.errors.push(located(
                            Diagnostic::at_opt(
                                node.type_pos,
                                format!("cannot read subgraph {}: {e}", path.display()),
                            )
                            .hint("a path type is relative to this workflow's folder"),
                        ));
                        return;
                    }
                    Ok(bytes) => Workflow::parse(&bytes),
                };
                match read {
                    Ok(inner) => {
                        let inner = Arc::new(inner);
                        self.parsed.insert(canonical.clone(), Some(inner.clone()));
                        inner
                    }
                    Err(errors) => {
                        for mut d in errors {
                            d.file = Some(label.as_ref().into());
                            self.errors.push(d);
                        }
                        self.parsed.insert(canonical.clone(), None);
                        return;
                    }
                }
            }
        };
        let Some(interface) = inner.interface.clone() else {
            self.errors.push(located(Diagnostic::at_opt(
                node.type_pos,
                format!(
                    "{} declares no `inputs:` / `outputs:`, so it cannot be used as a node",
                    path.display()
                ),
            )));
            return;
        };
        let size = inner.nodes.len() + interface.inputs.len() + interface.outputs.len();
        if size > self.expansion_left {
            if !self.too_large {
                self.too_large = true;
                self.errors.push(
                    located(Diagnostic::at_opt(
                        node.type_pos,
                        format!(
                            "expanding the subgraphs makes more than {MAX_EXPANDED} nodes \
                             (each use of a subgraph copies it, and the copies multiply at \
                             each level)"
                        ),
                    ))
                    .hint("use big subgraphs fewer times, or nest them less deeply"),
                );
            }
            return;
        }
        self.expansion_left -= size;
        let child_bindings = self.bind_inputs(id, node, &interface, prefix, file, bindings);
        self.subgraph_ids.insert(
            new_id.to_string(),
            (
                label.to_string(),
                interface.outputs.keys().cloned().collect(),
            ),
        );
        for (name, output) in &interface.outputs {
            if output.from.node == INPUTS_NODE {
                let mut d = Diagnostic::at_opt(
                    output.pos,
                    format!("output '{name}' must come from an inner node, not $inputs"),
                );
                d.file = Some(label.as_ref().into());
                self.errors.push(d);
                continue;
            }
            self.redirects.insert(
                (new_id.to_string(), name.clone()),
                Link {
                    node: format!("{new_id}{SEPARATOR}{}", output.from.node),
                    output: output.from.output.clone(),
                },
            );
        }
        let child_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        self.stack.push(canonical);
        let muted = node.mode == NodeMode::Mute;
        self.muting += usize::from(muted);
        self.expand_level(
            &inner,
            &format!("{new_id}{SEPARATOR}"),
            Some(label),
            &child_dir,
            Some(&child_bindings),
        );
        self.muting -= usize::from(muted);
        self.stack.pop();
    }

    /// The values of a subgraph's exposed inputs as the parent node gives them (checked
    /// against their declarations), defaults filled in.
    fn bind_inputs(
        &mut self,
        id: &str,
        node: &NodeEntry,
        interface: &Interface,
        prefix: &str,
        file: &Option<Arc<str>>,
        bindings: Option<&Bindings>,
    ) -> Bindings {
        let mut bound = Bindings::default();
        let push = |errors: &mut Vec<Diagnostic>, d: Diagnostic| {
            let mut d = d.node(id);
            d.file = file.as_ref().map(|f| f.as_ref().into());
            errors.push(d);
        };
        for (name, entry) in &node.inputs {
            let Some(declared) = interface.inputs.get(name) else {
                let names = || interface.inputs.keys().map(String::as_str);
                let listed = name_list(names());
                let hint = match closest_within(name, names(), &mut self.suggestion_work) {
                    Some(c) => format!("did you mean '{c}'? Its inputs: {listed}"),
                    None => format!("its inputs: {listed}"),
                };
                push(
                    &mut self.errors,
                    Diagnostic::at_opt(
                        entry.pos,
                        format!("unknown input '{name}' of this subgraph"),
                    )
                    .input(name)
                    .hint(hint),
                );
                continue;
            };
            let value = match &entry.value {
                InputValue::Constant(c) => {
                    if let Err(mut d) = check_constant(&exposed_spec(declared), c) {
                        d.pos = entry.pos;
                        if d.hint.as_deref().is_none_or(str::is_empty) {
                            d.hint = (!declared.doc.is_empty()).then(|| declared.doc.clone());
                        }
                        push(&mut self.errors, d.input(name));
                        bound.absent.insert(name.clone());
                        continue;
                    }
                    InputValue::Constant(c.clone())
                }
                InputValue::Link(link) if link.node == INPUTS_NODE => {
                    match bindings.and_then(|b| b.values.get(&link.output)) {
                        Some(outer) => outer.clone(),
                        None => {
                            // Left out or reported one level up: nothing to add here.
                            bound.absent.insert(name.clone());
                            continue;
                        }
                    }
                }
                InputValue::Link(link) => InputValue::Link(Link {
                    node: format!("{prefix}{}", link.node),
                    output: link.output.clone(),
                }),
            };
            bound.values.insert(name.clone(), value);
        }
        for (name, declared) in &interface.inputs {
            if bound.values.contains_key(name) || node.inputs.contains_key(name) {
                continue;
            }
            if let Some(default) = &declared.default {
                bound
                    .values
                    .insert(name.clone(), InputValue::Constant(default.clone()));
                continue;
            }
            // Inner nodes drop an input with no value: their own default applies.
            bound.absent.insert(name.clone());
            if !declared.optional {
                push(
                    &mut self.errors,
                    Diagnostic::at_opt(
                        node.pos,
                        format!("missing input '{name}' ({})", declared.ty),
                    )
                    .input(name)
                    .hint(if declared.doc.is_empty() {
                        "give it a value or a link".to_string()
                    } else {
                        declared.doc.clone()
                    }),
                );
            }
        }
        bound
    }

    /// Points every link at a subgraph's output to the inner node that makes it.
    fn resolve_redirects(&mut self) {
        let mut errors = Vec::new();
        for (id, node) in self.out.nodes.iter_mut() {
            for (name, entry) in node.inputs.iter_mut() {
                let InputValue::Link(link) = &mut entry.value else {
                    continue;
                };
                let mut hops = 0;
                while let Some(target) = self
                    .redirects
                    .get(&(link.node.clone(), link.output.clone()))
                {
                    *link = target.clone();
                    hops += 1;
                    if hops > MAX_NESTING {
                        break;
                    }
                }
                if let Some((file, outputs)) = self.subgraph_ids.get(&link.node) {
                    let mut d = Diagnostic::at_opt(
                        entry.pos,
                        format!(
                            "subgraph '{}' ({file}) has no output '{}'",
                            link.node, link.output
                        ),
                    )
                    .node(id)
                    .input(name)
                    .hint(format!(
                        "its outputs: {}",
                        name_list(outputs.iter().map(String::as_str))
                    ));
                    d.file = node.file.as_ref().map(|f| f.as_ref().into());
                    errors.push(d);
                }
            }
        }
        // A subgraph file checked on its own: an output it exposes may come from a subgraph
        // node of its own, which is inlined now; it follows the link as its consumers do.
        if let Some(interface) = self.out.interface.as_mut() {
            for exposed in interface.outputs.values_mut() {
                let mut hops = 0;
                while let Some(target) = self
                    .redirects
                    .get(&(exposed.from.node.clone(), exposed.from.output.clone()))
                {
                    exposed.from = target.clone();
                    hops += 1;
                    if hops > MAX_NESTING {
                        break;
                    }
                }
            }
        }
        self.errors.extend(errors);
    }
}

/// An exposed input's declaration as a node input, to check constants the same way.
fn exposed_spec(declared: &crate::workflow::ExposedInput) -> InputSpec {
    let mut spec = InputSpec::new("input", declared.ty, "");
    spec.min = declared.min;
    spec.max = declared.max;
    spec
}

/// Files of the library folders: each `NAME.yaml` is a node type `NAME`.
pub fn library_types(library: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for dir in library {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let Some(name) = path
                .extension()
                .filter(|e| *e == "yaml")
                .and(path.file_stem())
                .and_then(|s| s.to_str())
            else {
                continue;
            };
            if seen.insert(name.to_string()) {
                found.push((name.to_string(), path.clone()));
            }
        }
    }
    found
}

/// A subgraph of a library folder: its node type name, its file, and its workflow.
pub struct LibrarySubgraph {
    pub name: String,
    pub path: PathBuf,
    pub workflow: Workflow,
    pub interface: Interface,
}

/// The library's subgraphs, each read once (files that do not read or declare no interface
/// are left out; using one reports why).
pub fn library_subgraphs(library: &[PathBuf]) -> Vec<LibrarySubgraph> {
    library_types(library)
        .into_iter()
        .filter_map(|(name, path)| {
            let mut workflow = Workflow::parse(&std::fs::read(&path).ok()?).ok()?;
            let interface = workflow.interface.take()?;
            Some(LibrarySubgraph {
                name,
                path,
                workflow,
                interface,
            })
        })
        .collect()
}

/// The workflow with its subgraphs inlined (a copy only when it has some), or the errors of
/// the inlining.
pub fn expanded(
    workflow: Workflow,
    registry: &Registry,
    paths: &SubgraphPaths,
) -> Result<Workflow, Vec<Diagnostic>> {
    Ok(expand_subgraphs(&workflow, registry, paths)?.unwrap_or(workflow))
}

/// Validation of a workflow that may use subgraphs: inlining errors, or the validator's,
/// each naming the file it is in.
pub fn validate_with_subgraphs(
    workflow: &Workflow,
    registry: &Registry,
    paths: &SubgraphPaths,
    target: Option<&str>,
) -> Vec<Diagnostic> {
    let expanded = match expand_subgraphs(workflow, registry, paths) {
        Err(errors) => return errors,
        Ok(expanded) => expanded,
    };
    let workflow = expanded.as_ref().unwrap_or(workflow);
    let mut errors = crate::validate::validate(workflow, registry, target);
    attribute_files(workflow, &mut errors);
    errors
}
