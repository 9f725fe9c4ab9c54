// The workflow document <-> the canvas's nodes and edges. Pure functions, unit-tested.
import type { Edge, Node } from '@xyflow/react';
import type { Appearance, Constant, NodeType, WorkflowDoc } from './api';
import { accepts } from './types';
import { aliasesOf } from './aliases';

export interface WeftData extends Record<string, unknown> {
  /** The node type (e.g. "Sampler"). */
  kind: string;
  /** Constant inputs by name. A linked input keeps its last constant here so unlinking restores it. */
  values: Record<string, Constant>;
  /** Input names in the order the file has them (a save keeps the order, so the diff stays small). */
  order?: string[];
  /** `bypass: true` / `mute: true` in the file (Ctrl+B / Ctrl+M): the engine passes the node's
   * inputs through, or leaves it out with what only it feeds. */
  mode?: NodeMode;
  /** The file's `appearance:` line for the node: a title shown instead of its id, a header
   * colour, collapsed to its header. Drawing only: no run changes with it. */
  look?: Appearance;
}

/** An appearance with its empty fields dropped, or undefined when nothing is left. */
export function cleanLook(look: Appearance | undefined): Appearance | undefined {
  if (!look) return undefined;
  const out: Appearance = {};
  if (look.title) out.title = look.title;
  if (look.color) out.color = look.color;
  if (look.collapsed) out.collapsed = true;
  return Object.keys(out).length ? out : undefined;
}

export type NodeMode = 'bypass' | 'mute';
/** The node keys beside `type` that are not inputs. */
const MODE_KEYS = new Set(['bypass', 'mute']);

import { WholeFloat } from './jsontext';

export { WholeFloat, toJsonText } from './jsontext';

export type GNode = Node<WeftData, 'weft'>;

export type GEdge = Edge & { sourceHandle: string; targetHandle: string };

export const edgeId = (target: string, input: string) => `${target}:${input}`;

/** A literal string that starts with `$` is written `$$...` so it is not read as a link. */
export function escapeDollar(s: string): string {
  return s.startsWith('$') ? '$' + s : s;
}

export function parseLink(v: Constant): { node: string; output: string } | null {
  if (typeof v !== 'string' || !v.startsWith('$') || v.startsWith('$$')) return null;
  const dot = v.indexOf('.');
  if (dot <= 1 || dot === v.length - 1) return null;
  return { node: v.slice(1, dot), output: v.slice(dot + 1) };
}

export function docToGraph(doc: WorkflowDoc): { nodes: GNode[]; edges: GEdge[] } {
  const nodes: GNode[] = [];
  const edges: GEdge[] = [];
  const ids = Object.keys(doc.nodes ?? {});
  ids.forEach((id) => {
    const raw = doc.nodes[id] ?? {};
    const values: Record<string, Constant> = {};
    let mode: NodeMode | undefined;
    for (const [name, v] of Object.entries(raw)) {
      if (name === 'type') continue;
      if (MODE_KEYS.has(name)) {
        if (v === true) mode = name as NodeMode;
        continue;
      }
      const link = parseLink(v);
      if (link) {
        edges.push({
          id: edgeId(id, name),
          source: link.node,
          sourceHandle: link.output,
          target: id,
          targetHandle: name,
        });
      } else if (typeof v === 'string' && v.startsWith('$$')) {
        values[name] = v.slice(1);
      } else {
        values[name] = v;
      }
    }
    const at = doc.layout?.[id];
    const look = cleanLook(doc.appearance?.[id]);
    nodes.push({
      id,
      type: 'weft',
      position: at ? { x: at[0], y: at[1] } : { x: 0, y: 0 },
      data: {
        kind: String(raw.type ?? ''),
        values,
        order: Object.keys(raw).filter((k) => k !== 'type' && !MODE_KEYS.has(k)),
        ...(mode ? { mode } : {}),
        ...(look ? { look } : {}),
      },
    });
  });
  placeUnlaid(nodes, edges, (id) => doc.layout?.[id] != null);
  return { nodes, edges };
}

/** Horizontal and vertical steps between nodes placed for a file without a layout. */
const COLUMN_STEP = 320;
const ROW_STEP = 300;

/**
 * Places the nodes a file gives no position (a library subgraph written by hand, say) in columns
 * by depth, each after every node feeding it, so that links run left to right and not under
 * the nodes of one long row; below any nodes the file did place.
 */
export function placeUnlaid(nodes: GNode[], edges: GEdge[], laid: (id: string) => boolean) {
  const unlaid = nodes.filter((n) => !laid(n.id));
  if (unlaid.length === 0) return;
  const feeders = new Map<string, string[]>();
  for (const e of edges) feeders.set(e.target, [...(feeders.get(e.target) ?? []), e.source]);
  const depth = new Map<string, number>();
  const depthOf = (id: string, seen: Set<string>): number => {
    const known = depth.get(id);
    if (known != null) return known;
    if (seen.has(id)) return 0; // a cycle (refused elsewhere): stop here
    seen.add(id);
    const d = Math.max(-1, ...(feeders.get(id) ?? []).map((f) => depthOf(f, seen))) + 1;
    depth.set(id, d);
    return d;
  };
  const laidBottom = Math.max(-ROW_STEP, ...nodes.filter((n) => laid(n.id)).map((n) => n.position.y));
  const top = laidBottom + ROW_STEP;
  const rows = new Map<number, number>();
  for (const n of unlaid) {
    const column = depthOf(n.id, new Set());
    const row = rows.get(column) ?? 0;
    rows.set(column, row + 1);
    n.position = { x: column * COLUMN_STEP, y: top + row * ROW_STEP };
  }
}

export function graphToDoc(
  nodes: GNode[],
  edges: GEdge[],
  isFloat: (kind: string, input: string) => boolean = () => false,
): WorkflowDoc {
  const linked = new Map<string, GEdge>();
  for (const e of edges) linked.set(edgeId(e.target, e.targetHandle), e);
  const out: WorkflowDoc = { weft: 1, nodes: {}, layout: {} };
  for (const n of nodes) {
    const entry: Record<string, Constant> = { type: n.data.kind };
    if (n.data.mode) entry[n.data.mode] = true;
    const names = new Set(n.data.order ?? []);
    for (const k of Object.keys(n.data.values)) names.add(k);
    for (const e of edges) if (e.target === n.id) names.add(e.targetHandle);
    for (const name of names) {
      const e = linked.get(edgeId(n.id, name));
      if (e) entry[name] = `$${e.source}.${e.sourceHandle}`;
      else {
        const v = n.data.values[name];
        if (v === undefined) continue;
        if (typeof v === 'number' && Number.isInteger(v) && isFloat(n.data.kind, name))
          entry[name] = new WholeFloat(v) as unknown as Constant;
        else entry[name] = typeof v === 'string' ? escapeDollar(v) : v;
      }
    }
    out.nodes[n.id] = entry;
    out.layout![n.id] = [Math.round(n.position.x), Math.round(n.position.y)];
    const look = cleanLook(n.data.look);
    if (look) (out.appearance ??= {})[n.id] = look;
  }
  return out;
}

/**
 * Copies of `nodes` (and of the `edges` between them) with fresh ids, moved by (dx, dy) and
 * selected: what paste and duplicate add. Values, mode and look come along.
 */
export function cloneNodes(
  nodes: GNode[],
  edges: GEdge[],
  taken: Set<string>,
  dx: number,
  dy: number,
): { nodes: GNode[]; edges: GEdge[] } {
  const rename = new Map<string, string>();
  const fresh: GNode[] = nodes.map((n) => {
    const id = freshId(n.data.kind, (x) => taken.has(x));
    taken.add(id);
    rename.set(n.id, id);
    const data: WeftData = { kind: n.data.kind, values: { ...n.data.values }, order: n.data.order };
    if (n.data.mode) data.mode = n.data.mode;
    if (n.data.look) data.look = { ...n.data.look };
    return { id, type: 'weft', position: { x: n.position.x + dx, y: n.position.y + dy }, data, selected: true };
  });
  const inner = edges
    .filter((e) => rename.has(e.source) && rename.has(e.target))
    .map((e) => {
      const target = rename.get(e.target)!;
      return { ...e, id: edgeId(target, e.targetHandle), source: rename.get(e.source)!, target, selected: false };
    });
  return { nodes: fresh, edges: inner };
}

/** A fresh node id from a type name: `PromptEncode` -> `prompt_encode`, then `prompt_encode_2`, ... */
export function freshId(kind: string, taken: (id: string) => boolean): string {
  const base =
    kind
      .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
      .replace(/[^A-Za-z0-9_-]/g, '_')
      .toLowerCase() || 'node';
  if (!taken(base)) return base;
  for (let i = 2; ; i++) if (!taken(`${base}_${i}`)) return `${base}_${i}`;
}

/** The constant inputs a new node starts with: each input's default (the file keeps them explicit). */
export function defaultValues(t: NodeType): Record<string, Constant> {
  const values: Record<string, Constant> = {};
  for (const i of t.inputs) {
    if (i.link_only) continue;
    if (i.default !== undefined) values[i.name] = i.default;
    else if (i.choices && i.choices.length > 0 && !i.optional) values[i.name] = i.choices[0];
    else if (!i.optional) {
      if (i.type === 'string') values[i.name] = '';
      else if (i.type === 'bool') values[i.name] = false;
      else if (i.type === 'int' || i.type === 'seed' || i.type === 'float') values[i.name] = i.min ?? 0;
    }
  }
  return values;
}

/** Why a link from `source.output` to `target.input` is refused, or null when it is fine. */
export function linkProblem(
  catalogue: Map<string, NodeType>,
  nodes: Map<string, GNode>,
  edges: GEdge[],
  c: { source: string | null; sourceHandle?: string | null; target: string | null; targetHandle?: string | null },
): string | null {
  if (!c.source || !c.target || !c.sourceHandle || !c.targetHandle) return 'incomplete link';
  if (c.source === c.target) return 'a node cannot feed itself';
  const s = nodes.get(c.source);
  const t = nodes.get(c.target);
  if (!s || !t) return 'unknown node';
  const out = catalogue.get(s.data.kind)?.outputs.find((o) => o.name === c.sourceHandle);
  const inp = catalogue.get(t.data.kind)?.inputs.find((i) => i.name === c.targetHandle);
  if (!out || !inp) return 'unknown socket';
  if (!accepts(inp.type, out.type)) return `${inp.name} takes ${inp.type}, not ${out.type}`;
  // A cycle: the target already reaches the source (ignoring the edge into this input, replaced).
  const next = new Map<string, string[]>();
  for (const e of edges) {
    if (e.target === c.target && e.targetHandle === c.targetHandle) continue;
    const list = next.get(e.source);
    if (list) list.push(e.target);
    else next.set(e.source, [e.target]);
  }
  const stack = [c.target];
  const seen = new Set<string>();
  while (stack.length) {
    const n = stack.pop()!;
    if (n === c.source) return 'the link would make a cycle';
    if (seen.has(n)) continue;
    seen.add(n);
    for (const m of next.get(n) ?? []) stack.push(m);
  }
  return null;
}

/** Subsequence-scored search over name, category and doc. */
export function searchNodes(all: NodeType[], query: string): NodeType[] {
  const q = query.trim().toLowerCase();
  if (!q) return [...all].sort((a, b) => a.category.localeCompare(b.category) || a.type.localeCompare(b.type));
  const scored: [number, NodeType][] = [];
  for (const t of all) {
    const name = t.type.toLowerCase();
    let score = -1;
    if (name === q) score = 100;
    else if (name.startsWith(q)) score = 80;
    else if (name.includes(q)) score = 60;
    else if (aliasesOf(t.type).some((a) => a === q || a.replace(/\s+/g, '') === q.replace(/\s+/g, ''))) score = 70;
    else if (aliasesOf(t.type).some((a) => a.startsWith(q) || a.includes(q))) score = 50;
    else if (isSubsequence(q, name)) score = 40;
    else if (t.category.toLowerCase().includes(q)) score = 30;
    else if (q.split(/\s+/).every((w) => t.doc.toLowerCase().includes(w))) score = 20;
    if (score >= 0) scored.push([score, t]);
  }
  return scored.sort((a, b) => b[0] - a[0] || a[1].type.localeCompare(b[1].type)).map((s) => s[1]);
}

function isSubsequence(q: string, s: string): boolean {
  let i = 0;
  for (const c of s) if (c === q[i]) i++;
  return i === q.length;
}

/**
 * The canvas node an engine node id belongs to. A subgraph node `img2img` runs as inner nodes
 * named `img2img__sample` (nested: `a__b__c`), so their events show on the subgraph's node.
 */
export function canvasNode(id: string, onCanvas: Set<string>): string {
  if (onCanvas.has(id)) return id;
  for (let cut = id.indexOf('__'); cut > 0; cut = id.indexOf('__', cut + 2)) {
    if (onCanvas.has(id.slice(0, cut))) return id.slice(0, cut);
  }
  return id;
}

/**
 * A workflow name for an imported file: its stem with characters a name may not have replaced
 * by `-`, and `-2`, `-3`, ... when a workflow of that name exists (an import never replaces one).
 */
export function nameForImport(fileName: string, taken: (name: string) => boolean): string {
  const stem = fileName.replace(/^.*[\\/]/, '').replace(/\.(json|png)$/i, '');
  const base =
    stem
      .replace(/[^A-Za-z0-9_.-]+/g, '-')
      .replace(/^[-.]+|[-.]+$/g, '') || 'imported';
  if (!taken(base)) return base;
  for (let i = 2; ; i++) if (!taken(`${base}-${i}`)) return `${base}-${i}`;
}

/**
 * The name a person sees for an engine node id: an inner node of the subgraph node `repaint`,
 * `repaint__sample` in the engine, is `repaint › sample` (nested ones `a › b › c`).
 */
export function userName(id: string, onCanvas: Set<string>): string {
  const outer = canvasNode(id, onCanvas);
  if (outer === id || !id.startsWith(`${outer}__`)) return id;
  return [outer, ...id.slice(outer.length + 2).split('__')].join(' › ');
}

/** A message from the engine with every quoted inner node id ('a__b') written as the user sees it. */
export function userText(text: string, onCanvas: Set<string>): string {
  return text.replace(/'([\p{L}\p{N}_-]+__[\p{L}\p{N}_-]+)'/gu, (_whole, id: string) => `'${userName(id, onCanvas)}'`);
}
