// Live run state per node, apart from the graph store so a progress event re-renders one node only.
import { create } from 'zustand';
import type { Diagnostic } from './api';

export type NodeRunState = {
  state: 'idle' | 'queued' | 'running' | 'cached' | 'done' | 'failed' | 'cancelled';
  step?: number;
  total?: number;
  micros?: number;
  why?: string[];
  error?: string;
  preview?: string;
  images?: string[];
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

export function groupDiagnostics(list: Diagnostic[]): Record<string, Diagnostic[]> {
  const out: Record<string, Diagnostic[]> = {};
  for (const d of list) (out[d.node ?? ''] ??= []).push(d);
  return out;
}
