// The graph slice's edits as pure functions (state in, changes out): undo history, paste, add a
// node, bypass/mute. The store (graphslice.ts) applies what they return; graphedit.test.ts tests them.
import type { NodeType } from './api';
import { cloneNodes, defaultValues, edgeId, freshId, type GEdge, type GNode, type NodeMode } from './graph';
import type { GroupBox } from './groupbox';
import type { Reroutes } from './reroutes';
import type { SweepDraft } from './sweep';

/** What one undo step restores: everything the file holds that the canvas edits. */
export interface Snapshot {
  nodes: GNode[];
  edges: GEdge[];
  sweep: SweepDraft;
  groups: GroupBox[];
  reroutes: Reroutes;
}

/** The graph with its undo history. */
export interface Undoable extends Snapshot {
  past: Snapshot[];
  future: Snapshot[];
  /** The last edit's key (e.g. `node.input`): typing in one field is one undo step, not one per key. */
  lastEditKey: string | null;
  lastEditAt: number;
  /** Bumped by every edit (to tell whether the canvas changed while a read was in flight). */
  edits: number;
}

/** Undo steps kept. */
export const HISTORY = 200;
/** Edits with the same key closer together than this are one undo step. */
export const MERGE_EDITS_MS = 1500;

export interface Clipboard {
  nodes: GNode[];
  edges: GEdge[];
  /** Links into the copied nodes from nodes not copied (Ctrl+Shift+V keeps them). */
  inputs?: GEdge[];
}

const snapshotOf = (s: Snapshot): Snapshot => ({ nodes: s.nodes, edges: s.edges, sweep: s.sweep, groups: s.groups, reroutes: s.reroutes });

/** Records the state before an edit as an undo step (or extends the last one for the same key). */
export function checkpointed(s: Undoable, key: string | undefined, now: number): Partial<Undoable> {
  if (key && key === s.lastEditKey && now - s.lastEditAt < MERGE_EDITS_MS) return { lastEditAt: now, edits: s.edits + 1 };
  return {
    past: [...s.past.slice(-HISTORY + 1), snapshotOf(s)],
    future: [],
    lastEditKey: key ?? null,
    lastEditAt: now,
    edits: s.edits + 1,
  };
}

/** The state one step back, or null when there is nothing to undo. */
export function undone(s: Undoable): (Partial<Undoable> & Snapshot) | null {
  const prev = s.past[s.past.length - 1];
  if (!prev) return null;
  return { ...prev, past: s.past.slice(0, -1), future: [...s.future, snapshotOf(s)], edits: s.edits + 1, lastEditKey: null };
}

/** The state one step forward again, or null when nothing was undone. */
export function redone(s: Undoable): (Partial<Undoable> & Snapshot) | null {
  const next = s.future[s.future.length - 1];
  if (!next) return null;
  return { ...next, future: s.future.slice(0, -1), past: [...s.past, snapshotOf(s)], edits: s.edits + 1, lastEditKey: null };
}

const deselected = (nodes: GNode[]) => nodes.map((n) => (n.selected ? { ...n, selected: false } : n));

/**
 * The clipboard's nodes pasted with fresh ids, their top-left at `at` (the mouse) or 40 px down
 * and right of the originals; the pasted nodes are the selection. Also the clipboard for the next
 * paste: without a point, the next lands a step further, not on top of this one.
 */
export function pasted(
  nodes: GNode[],
  edges: GEdge[],
  clip: Clipboard,
  at?: { x: number; y: number },
  keepInputs = false,
): { nodes: GNode[]; edges: GEdge[]; clipboard: Clipboard } | null {
  if (clip.nodes.length === 0) return null;
  const minX = Math.min(...clip.nodes.map((n) => n.position.x));
  const minY = Math.min(...clip.nodes.map((n) => n.position.y));
  const dx = at ? at.x - minX : 40;
  const dy = at ? at.y - minY : 40;
  const fresh = cloneNodes(clip.nodes, clip.edges, new Set(nodes.map((n) => n.id)), dx, dy);
  // Ctrl+Shift+V: the copies are fed by the same outside nodes as the originals, where those are
  // still on the canvas (cloneNodes keeps the clipboard's order, so the i-th copy is of the i-th node).
  const kept: GEdge[] = [];
  if (keepInputs) {
    const copyOf = new Map(clip.nodes.map((n, i) => [n.id, fresh.nodes[i].id]));
    const present = new Set(nodes.map((n) => n.id));
    for (const e of clip.inputs ?? []) {
      const target = copyOf.get(e.target);
      if (target && present.has(e.source)) kept.push({ ...e, id: edgeId(target, e.targetHandle), target, selected: false });
    }
  }
  const clipboard = at ? clip : { ...clip, nodes: clip.nodes.map((n) => ({ ...n, position: { x: n.position.x + 40, y: n.position.y + 40 } })) };
  return { nodes: [...deselected(nodes), ...fresh.nodes], edges: [...edges, ...fresh.edges, ...kept], clipboard };
}

/** The selected nodes and the links between them (what Ctrl+C copies). */
export function copied(nodes: GNode[], edges: GEdge[]): Clipboard {
  const chosen = nodes.filter((n) => n.selected);
  const ids = new Set(chosen.map((n) => n.id));
  return {
    nodes: chosen,
    edges: edges.filter((e) => ids.has(e.source) && ids.has(e.target)),
    inputs: edges.filter((e) => !ids.has(e.source) && ids.has(e.target)),
  };
}

/**
 * Alt+drag: the dragged nodes go back where the drag started (`starts`), and copies of them (with
 * the links among them, none from outside, as ComfyUI's Alt+drag) stay where they were dropped,
 * selected. Null when none of `starts` is on the canvas.
 */
export function withDragCopied(nodes: GNode[], edges: GEdge[], starts: Map<string, { x: number; y: number }>): { nodes: GNode[]; edges: GEdge[]; added: GNode[] } | null {
  const dragged = nodes.filter((n) => starts.has(n.id) && n.type === 'weft');
  if (dragged.length === 0) return null;
  const fresh = cloneNodes(dragged, edges, new Set(nodes.map((n) => n.id)), 0, 0);
  const back = nodes.map((n) => {
    const at = starts.get(n.id);
    return at ? { ...n, position: at, selected: false } : n.selected ? { ...n, selected: false } : n;
  });
  return { nodes: [...back, ...fresh.nodes], edges: [...edges, ...fresh.edges], added: fresh.nodes };
}

/**
 * Ctrl+X: the selection deleted, and each link that left it joined to a link that entered it where
 * `fits` allows (types, no cycle): the downstream input gets the first input of the deleted nodes
 * (in their input order, through chains of deleted nodes) whose source fits. Null when nothing goes.
 */
export function withSelectionDissolved(
  nodes: GNode[],
  edges: GEdge[],
  fits: (link: GEdge, edgesSoFar: GEdge[]) => boolean,
): { nodes: GNode[]; edges: GEdge[]; joined: GEdge[] } | null {
  const left = withSelectionDeleted(nodes, edges);
  if (!left) return null;
  const gone = new Set(nodes.filter((n) => n.selected).map((n) => n.id));
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const order = (e: GEdge) => byId.get(e.target)?.data.order?.indexOf(e.targetHandle) ?? 0;
  /** The links from kept nodes that reach `id` through deleted nodes, nearest first. */
  const feeding = (id: string, seen: Set<string>): GEdge[] => {
    if (seen.has(id)) return [];
    seen.add(id);
    const into = edges.filter((e) => e.target === id).sort((a, b) => order(a) - order(b));
    return into.flatMap((e) => (gone.has(e.source) ? feeding(e.source, seen) : [e]));
  };
  let kept = left.edges;
  const joined: GEdge[] = [];
  for (const out of edges) {
    if (!gone.has(out.source) || gone.has(out.target)) continue;
    for (const from of feeding(out.source, new Set())) {
      const link: GEdge = { ...out, id: edgeId(out.target, out.targetHandle), source: from.source, sourceHandle: from.sourceHandle, selected: false };
      if (fits(link, kept)) {
        kept = [...kept, link];
        joined.push(link);
        break;
      }
    }
  }
  return { nodes: left.nodes, edges: kept, joined };
}

/** Copies of the selected nodes (and the links between them) beside them, selected. */
export function duplicated(nodes: GNode[], edges: GEdge[]): { nodes: GNode[]; edges: GEdge[]; added: GNode[] } | null {
  const chosen = nodes.filter((n) => n.selected);
  if (chosen.length === 0) return null;
  const fresh = cloneNodes(chosen, edges, new Set(nodes.map((n) => n.id)), 40, 40);
  return { nodes: [...deselected(nodes), ...fresh.nodes], edges: [...edges, ...fresh.edges], added: fresh.nodes };
}

/** A new node of `type` at `at` with its defaults, named after its type, the only one selected. */
export function withNodeAdded(nodes: GNode[], type: NodeType, at: { x: number; y: number }): { nodes: GNode[]; id: string } {
  const ids = new Set(nodes.map((n) => n.id));
  const id = freshId(type.type, (x) => ids.has(x));
  const node: GNode = {
    id,
    type: 'weft',
    position: at,
    data: { kind: type.type, values: defaultValues(type), order: type.inputs.map((i) => i.name) },
    selected: true,
  };
  return { nodes: [...deselected(nodes), node], id };
}

/**
 * Ctrl+B / Ctrl+M on the selection: every selected node gets `mode` unless all have it already,
 * then all lose it. Null when nothing is selected.
 */
export function withModeToggled(nodes: GNode[], mode: NodeMode): { nodes: GNode[]; on: boolean; chosen: string[] } | null {
  const chosen = nodes.filter((n) => n.selected);
  if (chosen.length === 0) return null;
  const on = !chosen.every((n) => n.data.mode === mode);
  return {
    on,
    chosen: chosen.map((n) => n.id),
    nodes: nodes.map((n) => {
      if (!n.selected) return n;
      const data = { ...n.data };
      if (on) data.mode = mode;
      else delete data.mode;
      return { ...n, data };
    }),
  };
}

/** The selected nodes and links removed, with the links of removed nodes; null when nothing goes. */
export function withSelectionDeleted(nodes: GNode[], edges: GEdge[]): { nodes: GNode[]; edges: GEdge[] } | null {
  const gone = new Set(nodes.filter((n) => n.selected).map((n) => n.id));
  const edgesLeft = edges.filter((e) => !e.selected && !gone.has(e.source) && !gone.has(e.target));
  if (gone.size === 0 && edgesLeft.length === edges.length) return null;
  return { nodes: nodes.filter((n) => !gone.has(n.id)), edges: edgesLeft };
}
