// Live run state per node, apart from the graph store so a progress event re-renders one node only.
import { create } from 'zustand';
import type { Constant, Diagnostic, WorkflowDoc } from './api';

export type NodeRunState = {
  state: 'idle' | 'queued' | 'running' | 'cached' | 'done' | 'failed' | 'cancelled';
  step?: number;
  total?: number;
  micros?: number;
  why?: string[];
  error?: string;
  preview?: string;
  images?: string[];
  /** A subgraph's node: how many of its inner nodes the run planned, and how many are done. */
  innerDone?: number;
  innerTotal?: number;
  /** What an output node shows (ShowInt's integer, ShowText's text), from the last run. */
  value?: string | number | boolean;
};

interface RunStore {
  /** The run this tab follows (queued from here). */
  run: number | null;
  status: string | null;
  summary: string | null;
  nodes: Record<string, NodeRunState>;
  /** Validation diagnostics per node id ('' for those without a node). */
  diagnostics: Record<string, Diagnostic[]>;
  connected: boolean;
  queue: { running: number | null; queued: number[] };
  /** Bumped when any run finishes, so the history panel re-reads. */
  historyTick: number;
  patch: (node: string, p: Partial<NodeRunState>) => void;
}

export const useRunStore = create<RunStore>()((set) => ({
  run: null,
  status: null,
  summary: null,
  nodes: {},
  diagnostics: {},
  connected: false,
  queue: { running: null, queued: [] },
  historyTick: 0,
  patch: (node, p) =>
    set((s) => ({ nodes: { ...s.nodes, [node]: { ...(s.nodes[node] ?? { state: 'queued' }), ...p } } })),
}));

/**
 * Another workflow is on the canvas: the last run's node states, diagnostics and summary
 * belong to the one before. A run still in flight keeps its status (Cancel stays usable).
 */
export function forgetShownRun() {
  useRunStore.setState({ nodes: {}, diagnostics: {}, summary: null });
}

/**
 * Diagnostics per node. `fromFile`: they were found in the workflow's file as it is on disk, so
 * their line:column mean something to the user; those found in the canvas (sent as a
 * serialisation the user never sees) keep a position only when it is in a subgraph's file.
 */
export function groupDiagnostics(list: Diagnostic[], fromFile: boolean): Record<string, Diagnostic[]> {
  const out: Record<string, Diagnostic[]> = {};
  for (const d of list) {
    const shown = fromFile || d.file || !d.pos ? d : { ...d, pos: undefined };
    (out[d.node ?? ''] ??= []).push(shown);
  }
  return out;
}

/**
 * After the workflow changed (a disk edit), the nodes that will re-run: those whose type or
 * inputs differ, and everything downstream of them. Their CACHED/DONE badge, time and images
 * belong to the run before and are dropped.
 */
export function staleNodes(before: WorkflowDoc, after: WorkflowDoc, changedKinds: Set<string> = new Set()): Set<string> {
  const stale = new Set<string>();
  for (const [id, node] of Object.entries(after.nodes)) {
    const old = before.nodes[id];
    const kind = String(node.type);
    const stem = kind.replace(/^.*[\\/]/, '').replace(/\.(ya?ml|json)$/, '');
    if (!old || changedKinds.has(kind) || changedKinds.has(stem) || !sameInputs(old, node)) stale.add(id);
  }
  // Downstream: a node linked from a stale node is stale (repeat until nothing changes).
  for (let grew = true; grew; ) {
    grew = false;
    for (const [id, node] of Object.entries(after.nodes)) {
      if (stale.has(id)) continue;
      for (const v of Object.values(node)) {
        const m = typeof v === 'string' && !v.startsWith('$$') ? /^\$([^.]+)\./.exec(v) : null;
        if (m && stale.has(m[1])) {
          stale.add(id);
          grew = true;
          break;
        }
      }
    }
  }
  return stale;
}

function sameInputs(a: Record<string, Constant>, b: Record<string, Constant>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => k in b && JSON.stringify(a[k]) === JSON.stringify(b[k]));
}

/** Drops the last run's marks (state, time, images, value) from nodes that will re-run. */
export function forgetStale(ids: Set<string>) {
  if (ids.size === 0) return;
  const nodes = { ...useRunStore.getState().nodes };
  let changed = false;
  for (const id of ids) {
    const st = nodes[id];
    if (st && (st.state === 'cached' || st.state === 'done' || st.images || st.value !== undefined)) {
      if (st.state === 'running' || st.state === 'queued') continue;
      nodes[id] = { state: 'idle' };
      changed = true;
    }
  }
  if (changed) useRunStore.setState({ nodes });
}
