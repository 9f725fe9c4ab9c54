//! "Convert to subgraph": the selected nodes become a library subgraph file (lib/NAME.yaml) and
//! one node of that type takes their place, wired as they were. Each link from outside becomes
//! an exposed input, each link going out an output; inside, the nodes keep their inputs, so the
//! engine inlines them to the same cache keys and nothing re-runs.
import type { Constant, NodeType, WorkflowDoc } from './api';
import { freshId, parseLink } from './graph';

export interface Extracted {
  /** The library file's document: `inputs:`, `outputs:`, the nodes and their layout. */
  library: WorkflowDoc & {
    inputs: Record<string, { type: string; doc: string }>;
    outputs: Record<string, { from: string; doc: string }>;
  };
  /** The workflow with the selection replaced by one node. */
  workflow: WorkflowDoc;
  /** The new node's id in the workflow. */
  node: string;
}

/** The type of what `$node.output` gives, from the catalogue (null when it does not know it). */
function outputType(doc: WorkflowDoc, catalogue: Map<string, NodeType>, node: string, output: string): string | null {
  const t = catalogue.get(String(doc.nodes[node]?.type));
  return t?.outputs.find((o) => o.name === output)?.type ?? null;
}

function inputType(catalogue: Map<string, NodeType>, type: Constant, input: string): string | null {
  return catalogue.get(String(type))?.inputs.find((i) => i.name === input)?.type ?? null;
}

export function extractSubgraph(
  doc: WorkflowDoc,
  selected: Set<string>,
  catalogue: Map<string, NodeType>,
  name: string,
): Extracted {
  if (selected.size === 0) throw new Error('select the nodes to put in the subgraph first');
  const inside = Object.keys(doc.nodes).filter((id) => selected.has(id));
  const missing = [...selected].filter((id) => !(id in doc.nodes));
  if (missing.length) throw new Error(`no node ${missing.join(', ')} in the workflow`);

  const taken = new Set<string>();
  const unique = (base: string) => {
    let n = base;
    for (let i = 2; taken.has(n); i++) n = `${base}_${i}`;
    taken.add(n);
    return n;
  };

  // Links from outside into the selection: one exposed input per source (a source feeding
  // several inner inputs is exposed once), named after the first input it feeds.
  const inputs: Extracted['library']['inputs'] = {};
  const exposedFrom = new Map<string, string>();
  const innerNodes: WorkflowDoc['nodes'] = {};
  for (const id of inside) {
    const entry = { ...doc.nodes[id] };
    for (const [key, v] of Object.entries(entry)) {
      const link = key === 'type' ? null : parseLink(v);
      if (!link || selected.has(link.node)) continue;
      const source = String(v);
      let exposed = exposedFrom.get(source);
      if (!exposed) {
        exposed = unique(key);
        exposedFrom.set(source, exposed);
        const type = outputType(doc, catalogue, link.node, link.output) ?? inputType(catalogue, entry.type, key);
        if (!type) throw new Error(`cannot tell the type of ${id}.${key} (from ${link.node}.${link.output}): is every node type known?`);
        inputs[exposed] = { type, doc: `was ${link.node}.${link.output}` };
      }
      entry[key] = `$inputs.${exposed}`;
    }
    innerNodes[id] = entry;
  }

  // Links from the selection to outside: one output per inner output used.
  taken.clear();
  const outputs: Extracted['library']['outputs'] = {};
  const outputFor = new Map<string, string>();
  const newId = freshId(name, (id) => id in doc.nodes && !selected.has(id));
  const outerNodes: WorkflowDoc['nodes'] = {};
  let placed = false;
  const newEntry: Record<string, Constant> = { type: name };
  for (const [source, exposed] of exposedFrom) newEntry[exposed] = source;
  for (const [id, node] of Object.entries(doc.nodes)) {
    if (selected.has(id)) {
      // The new node stands where the first selected node stood in the file.
      if (!placed) outerNodes[newId] = newEntry;
      placed = true;
      continue;
    }
    const entry = { ...node };
    for (const [key, v] of Object.entries(entry)) {
      const link = key === 'type' ? null : parseLink(v);
      if (!link || !selected.has(link.node)) continue;
      const from = `$${link.node}.${link.output}`;
      let out = outputFor.get(from);
      if (!out) {
        out = unique(link.output);
        outputFor.set(from, out);
        outputs[out] = { from, doc: `${link.node}'s ${link.output}` };
      }
      entry[key] = `$${newId}.${out}`;
    }
    outerNodes[id] = entry;
  }

  // Positions: the library's relative to its top-left node; the new node at that corner.
  const at = inside.map((id) => doc.layout?.[id]).filter((p): p is [number, number] => !!p);
  const left = at.length ? Math.min(...at.map((p) => p[0])) : 0;
  const top = at.length ? Math.min(...at.map((p) => p[1])) : 0;
  const libLayout: Record<string, [number, number]> = {};
  for (const id of inside) {
    const p = doc.layout?.[id];
    if (p) libLayout[id] = [p[0] - left, p[1] - top];
  }
  const layout: Record<string, [number, number]> = {};
  for (const [id, p] of Object.entries(doc.layout ?? {})) if (!selected.has(id)) layout[id] = p;
  layout[newId] = [left, top];

  const pick = <T,>(m: Record<string, T> | undefined, keep: (id: string) => boolean) =>
    Object.fromEntries(Object.entries(m ?? {}).filter(([id]) => keep(id)));
  const library: Extracted['library'] = {
    weft: 1,
    inputs,
    outputs,
    nodes: innerNodes,
    layout: libLayout,
  };
  const libLooks = pick(doc.appearance, (id) => selected.has(id));
  if (Object.keys(libLooks).length) library.appearance = libLooks;
  const workflow: WorkflowDoc = { ...doc, nodes: outerNodes, layout };
  const looks = pick(doc.appearance, (id) => !selected.has(id));
  if (doc.appearance) workflow.appearance = looks;
  return { library, workflow, node: newId };
}
