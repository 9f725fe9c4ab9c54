// A subgraph node's run state, made from its inner nodes' (issue 21, item 4): running while any
// inner node runs (with that one's progress), failed when one failed, done (or cached) only
// when every inner node the run planned is; in between it waits, saying how many are done.
import type { NodeRunState } from './runstore';

export type InnerState = {
  state: 'queued' | 'running' | 'cached' | 'done' | 'failed';
  micros?: number;
  why?: string[];
};

/** One run's inner nodes, grouped under the canvas node (the subgraph's) they belong to. */
export class SubgraphRun {
  /** canvas node -> its planned inner engine ids (empty until `run_started` names them). */
  private groups = new Map<string, Set<string>>();
  private inner = new Map<string, InnerState>();

  /** The run's planned node ids (`run_started`'s `nodes`), mapped to their canvas nodes. */
  constructor(planned: string[], canvasOf: (id: string) => string) {
    for (const id of planned) {
      const outer = canvasOf(id);
      if (outer === id) continue;
      let set = this.groups.get(outer);
      if (!set) this.groups.set(outer, (set = new Set()));
      set.add(id);
    }
  }

  /** Records an inner node's news and returns its canvas node's aggregate state. */
  update(outer: string, id: string, news: Partial<InnerState>): Partial<NodeRunState> {
    const prev = this.inner.get(id) ?? { state: 'queued' };
    this.inner.set(id, { ...prev, ...news });
    let set = this.groups.get(outer);
    // A run followed from its middle (a reload) never saw its plan: the inner nodes seen so far.
    if (!set) this.groups.set(outer, (set = new Set()));
    set.add(id);
    return this.aggregate(outer);
  }

  aggregate(outer: string): Partial<NodeRunState> {
    const ids = [...(this.groups.get(outer) ?? [])];
    const states = ids.map((id) => this.inner.get(id) ?? ({ state: 'queued' } as InnerState));
    const why = [...new Set(states.flatMap((s) => (s.state === 'cached' ? [] : (s.why ?? []))))];
    const micros = states.reduce((sum, s) => sum + (s.micros ?? 0), 0);
    const finished = states.filter((s) => s.state === 'done' || s.state === 'cached').length;
    const base = { innerDone: finished, innerTotal: ids.length, why: why.length ? why : undefined };
    if (states.some((s) => s.state === 'failed')) return { ...base, state: 'failed' };
    if (states.some((s) => s.state === 'running')) return { ...base, state: 'running', micros: undefined };
    if (states.every((s) => s.state === 'cached')) return { ...base, state: 'cached', micros: undefined, why: undefined };
    if (finished === ids.length) return { ...base, state: 'done', micros, step: undefined, total: undefined };
    return { ...base, state: 'queued', micros: undefined, step: undefined, total: undefined };
  }
}
