// The /ws connection: run events onto nodes, file changes onto the canvas.
import { api, withToken, type Diagnostic } from './api';
import { canvasNode, userText } from './graph';
import { SubgraphRun } from './subrun';
import { copiesWithNewSeeds, withValues } from './copies';
import { useEditor } from './store';
import { forgetStale, groupDiagnostics, staleNodes, useRunStore, type NodeRunState } from './runstore';
import { cancelSweep, cellIndex, followingSweep, refreshSweep, sweepFinishedEvent, sweepRunEvent, useSweepStore } from './sweeprun';

import type { WireEvent } from './generated/events';

/** A /ws message: the server's event types, generated from its Rust declarations. */
type Ev = WireEvent;
/** The events of one run. */
type RunEv = Extract<Ev, { run: number }>;
/** A workflow file's news from the server's watcher. */
type FileEv = Extract<Ev, { event: 'workflow_changed' | 'workflow_invalid' | 'workflow_deleted' }>;

/** Events of runs whose id the POST has not returned yet (a run can start before the 202 is read). */
const early = new Map<number, RunEv[]>();
const mine = new Set<number>();
const seenOutput = new Set<string>();
/** The followed run's inner nodes of subgraphs, whose news make their canvas node's state. */
let subRun: { run: number; agg: SubgraphRun } | null = null;
/** Whether the last run queued here ran the file by name (its diagnostics' positions are the file's). */
let ranFile = false;


export function connect(): void {
  let backoff = 250;
  let opened = false;
  const open = () => {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(withToken(`${proto}//${location.host}/ws`));
    ws.onopen = () => {
      backoff = 250;
      useRunStore.setState({ connected: true });
      if (opened) {
        // Re-read what may have changed while disconnected.
        const { name, dirty } = useEditor.getState();
        if (name && !dirty) void useEditor.getState().load(name);
        void useEditor.getState().refreshList();
        void refreshSweep();
      }
      opened = true;
    };
    ws.onmessage = (m) => {
      try {
        handle(JSON.parse(String(m.data)) as Ev);
      } catch (e) {
        console.warn('bad event', e);
      }
    };
    ws.onclose = () => {
      useRunStore.setState({ connected: false });
      setTimeout(open, backoff);
      backoff = Math.min(backoff * 2, 4000);
    };
  };
  open();
}

/** Starts a run of the canvas as it is (saved or not); `target` runs only what that node needs;
 * `front`: ahead of every waiting run. */
export async function queueRun(target?: string, front = false): Promise<void> {
  const ed = useEditor.getState();
  // A library subgraph's interface goes with it, so the server says why it does not run alone.
  const doc = { ...ed.doc(), ...(ed.iface ?? {}) };
  const prev = useRunStore.getState().nodes;
  const fresh: Record<string, NodeRunState> = {};
  for (const n of ed.nodes) fresh[n.id] = { state: 'queued', images: prev[n.id]?.images };
  try {
    // The saved file by name when the canvas is the file (the history then names it), else the canvas.
    // A file with a `sweep:` section would be swept when named: Queue runs the canvas once, so it sends the canvas.
    const byName = !!ed.name && !ed.dirty && !ed.broken && ed.sweep.axes.length === 0;
    ranFile = byName;
    const { id } = await api.run(byName ? ed.name! : doc, target, front);
    mine.add(id);
    useRunStore.setState({ run: id, status: 'queued', summary: target ? `run to ${target}` : null, nodes: fresh });
    // Say what ran when the file on disk is not what the canvas shows.
    if (ed.broken) ed.say(`queued the canvas: ${ed.name}.yaml on disk does not read as a workflow`, 'info');
    for (const ev of early.get(id) ?? []) handle(ev);
    early.delete(id);
  } catch (e) {
    const err = e as { diagnostics?: Diagnostic[]; message: string };
    const diags = err.diagnostics ?? [];
    const [only] = diags;
    if (diags.length === 1 && !only.node) {
      // Nothing to mark on a node (a library subgraph queued on its own): say it all here.
      useRunStore.setState({ diagnostics: groupDiagnostics(diags, ranFile) });
      ed.say(`nothing ran: ${only.message}${only.hint ? ` (${only.hint})` : ''}`, 'error');
    } else if (diags.length) {
      useRunStore.setState({ diagnostics: groupDiagnostics(diags, ranFile) });
      ed.say(`nothing ran: ${diags.length} problem${diags.length > 1 ? 's' : ''} in the workflow (marked on the nodes)`, 'error');
    } else ed.say(`cannot queue: ${err.message}`, 'error');
  }
}

/**
 * Queues `count` runs of the canvas, each with new seeds in every seed input (the file by name
 * with overrides when the canvas is the saved file, so the history names it). The canvas follows
 * the first; all of them are in the queue panel.
 */
export async function queueCopies(count: number): Promise<number[]> {
  const ed = useEditor.getState();
  const doc = ed.doc();
  const sets = copiesWithNewSeeds(doc, ed.catalogue, count);
  if (sets.length > 0 && Object.keys(sets[0]).length === 0) {
    ed.say('no seed input to vary: every copy would be the same run', 'error');
    return [];
  }
  const byName = !!ed.name && !ed.dirty && !ed.broken && ed.sweep.axes.length === 0;
  const ids: number[] = [];
  try {
    for (const set of sets) {
      const { id } = byName ? await api.runWith(ed.name!, set) : await api.run(withValues(doc, set));
      ids.push(id);
      mine.add(id);
      if (ids.length === 1) {
        ranFile = byName;
        const prev = useRunStore.getState().nodes;
        const fresh: Record<string, NodeRunState> = {};
        for (const n of ed.nodes) fresh[n.id] = { state: 'queued', images: prev[n.id]?.images };
        useRunStore.setState({ run: id, status: 'queued', summary: null, nodes: fresh });
        for (const ev of early.get(id) ?? []) handle(ev);
        early.delete(id);
      }
    }
    const seeds = sets.map((s) => Object.values(s).join('/')).join(', ');
    ed.say(`queued ${ids.length} cop${ids.length === 1 ? 'y' : 'ies'} (runs #${ids.join(', #')}) with seeds ${seeds}`);
  } catch (e) {
    const err = e as { diagnostics?: Diagnostic[]; message: string };
    const diags = err.diagnostics ?? [];
    if (diags.length) useRunStore.setState({ diagnostics: groupDiagnostics(diags, byName) });
    ed.say(`queued ${ids.length} of ${count}: ${err.message}`, 'error');
  }
  useRunStore.setState((s) => ({ historyTick: s.historyTick + 1 }));
  return ids;
}

/**
 * After a page load (or reload mid-run), follows the newest queued or running run of the open
 * workflow, so its state, progress and Cancel come back instead of an idle canvas.
 */
export async function reattach(): Promise<void> {
  const name = useEditor.getState().name;
  if (!name || useRunStore.getState().run != null) return;
  try {
    const runs = await api.runs(50);
    const live = runs.find((r) => r.workflow_name === name && (r.status === 'running' || r.status === 'queued'));
    if (!live || useRunStore.getState().run != null) return;
    mine.add(live.id);
    useRunStore.setState({ run: live.id, status: live.status, summary: `run #${live.id} (already ${live.status})` });
    for (const ev of early.get(live.id) ?? []) handle(ev);
    early.delete(live.id);
  } catch {
    /* the server is away: the next page load tries again */
  }
}

/** Cancels any queued or running run (the History panel's Cancel). */
export async function cancelRunById(id: number): Promise<void> {
  try {
    await api.cancel(id);
    useRunStore.setState((s) => ({ historyTick: s.historyTick + 1 }));
  } catch (e) {
    useEditor.getState().say(`cancel failed: ${(e as Error).message}`, 'error');
  }
}

export async function cancelRun(): Promise<void> {
  // While a sweep's cell runs, Cancel stops the sweep: the rest of its cells would run otherwise.
  if (followingSweep()) return cancelSweep();
  const { run, status } = useRunStore.getState();
  if (run == null || (status !== 'running' && status !== 'queued')) return;
  try {
    await api.cancel(run);
  } catch (e) {
    useEditor.getState().say(`cancel failed: ${(e as Error).message}`, 'error');
  }
}

/** The canvas shows a sweep's cell as it runs (which nodes ran, which came from the cache). */
function follow(run: number): void {
  mine.add(run);
  const prev = useRunStore.getState().nodes;
  const fresh: Record<string, NodeRunState> = {};
  for (const n of useEditor.getState().nodes) fresh[n.id] = { state: 'queued', images: prev[n.id]?.images };
  const v = useSweepStore.getState().view;
  const i = cellIndex(run);
  useRunStore.setState({ run, status: 'queued', summary: v && i >= 0 ? `sweep cell ${i + 1} of ${v.cells.length}` : null, nodes: fresh });
}

/** Events that came before the POST's answer named their runs, handled now. */
export function replayEarly(runs: number[]): void {
  for (const run of runs) {
    const list = early.get(run);
    early.delete(run);
    for (const ev of list ?? []) handle(ev);
  }
}

function handle(ev: Ev): void {
  switch (ev.event) {
    case 'workflow_changed':
    case 'workflow_invalid':
    case 'workflow_deleted':
      return fileEvent(ev);
    case 'queue':
      useRunStore.setState({ queue: { running: ev.running, queued: ev.queued } });
      return;
    case 'sweep_finished':
      return sweepFinishedEvent(ev);
    case 'omitted':
      // Too large to send and nothing of it kept: the next event or a reload tells.
      return;
  }
  runEvent(ev);
}

function runEvent(ev: RunEv): void {
  if (ev.event === 'run_finished') useRunStore.setState((s) => ({ historyTick: s.historyTick + 1 }));
  sweepRunEvent(ev);
  if (ev.event === 'run_started' && ev.run !== useRunStore.getState().run) {
    // The canvas follows each cell of the sweep as it starts, and a run queued here after them.
    const shown = useRunStore.getState().run;
    if (cellIndex(ev.run) >= 0 || (mine.has(ev.run) && shown != null && cellIndex(shown) >= 0)) follow(ev.run);
  }
  if (!mine.has(ev.run)) {
    const list = early.get(ev.run) ?? [];
    list.push(ev);
    early.set(ev.run, list);
    if (early.size > 20) early.delete(early.keys().next().value!);
    return;
  }
  const rs = useRunStore.getState();
  if (ev.run !== rs.run) return;
  const onCanvas = new Set(useEditor.getState().nodes.map((n) => n.id));
  const engineNode = 'node' in ev ? (ev.node ?? undefined) : undefined;
  const node = engineNode === undefined ? undefined : canvasNode(engineNode, onCanvas);
  const inner = node !== engineNode;
  if (ev.event === 'run_started' || subRun?.run !== ev.run) {
    const planned = ev.event === 'run_started' ? ev.nodes : [];
    subRun = { run: ev.run, agg: new SubgraphRun(planned, (id) => canvasNode(id, onCanvas)) };
  }
  const why = ev.event === 'node_started' ? ev.why?.map((w) => userText(w, onCanvas)) : undefined;
  if (inner && node) {
    // An inner node of a subgraph: its news counts toward its canvas node's state.
    const agg = subRun!.agg;
    switch (ev.event) {
      case 'node_cached':
        rs.patch(node, { ...agg.update(node, engineNode!, { state: 'cached' }), error: undefined });
        return;
      case 'node_started':
        rs.patch(node, { ...agg.update(node, engineNode!, { state: 'running', why }), step: undefined, total: undefined, preview: undefined, error: undefined });
        return;
      case 'node_finished':
        rs.patch(node, { ...agg.update(node, engineNode!, { state: 'done', micros: ev.micros }), step: undefined, total: undefined });
        return;
      case 'error':
        agg.update(node, engineNode!, { state: 'failed' });
        rs.patch(node, { state: 'failed', error: userText(ev.message, onCanvas) });
        return;
    }
  }
  switch (ev.event) {
    case 'run_queued':
      break;
    case 'run_started':
      useRunStore.setState({ status: 'running' });
      break;
    case 'node_cached':
      rs.patch(node!, {
        state: 'cached',
        why: undefined,
        error: undefined,
        micros: undefined,
        ...(ev.value !== undefined ? { value: ev.value } : {}),
      });
      break;
    case 'node_started':
      rs.patch(node!, {
        state: 'running',
        why,
        step: undefined,
        total: undefined,
        preview: undefined,
        error: undefined,
        micros: undefined,
      });
      break;
    case 'progress':
      document.title = `${Math.round((ev.step / ev.total) * 100)}% · ${useEditor.getState().name ?? 'weft'}`;
      rs.patch(node!, {
        step: ev.step,
        total: ev.total,
        ...(ev.preview ? { preview: ev.preview } : {}),
      });
      break;
    case 'output': {
      const key = `${ev.run}:${node}`;
      const url = ev.url;
      const prev = seenOutput.has(key) ? (rs.nodes[node!]?.images ?? []) : [];
      seenOutput.add(key);
      if (url) rs.patch(node!, { images: [...prev, url] });
      break;
    }
    case 'node_finished':
      rs.patch(node!, {
        state: 'done',
        micros: ev.micros,
        step: undefined,
        total: undefined,
        ...(ev.value !== undefined ? { value: ev.value } : {}),
      });
      break;
    case 'error':
      if (node) rs.patch(node, { state: 'failed', error: userText(ev.message, onCanvas) });
      else useEditor.getState().say(userText(ev.message, onCanvas), 'error');
      break;
    case 'invalid':
      useRunStore.setState({ diagnostics: groupDiagnostics(ev.errors, ranFile) });
      break;
    case 'run_finished': {
      const status = ev.status;
      // Nodes the plan did not need lose their "queued" mark.
      const nodes: Record<string, NodeRunState> = {};
      for (const [id, st] of Object.entries(useRunStore.getState().nodes)) {
        if (st.state === 'running') nodes[id] = { images: st.images, state: status === 'cancelled' ? 'cancelled' : 'idle' };
        else nodes[id] = st.state === 'queued' ? { images: st.images, state: 'idle' } : st;
      }
      const secs = (ev.micros / 1e6).toFixed(2);
      document.title = `${useEditor.getState().name ?? 'weft'} · weft`;
      useRunStore.setState({
        status,
        nodes,
        summary: `${status} in ${secs} s · ${ev.ran} ran, ${ev.cached} cached`,
      });
      break;
    }
  }
}

let pending: ReturnType<typeof setTimeout> | null = null;

function fileEvent(ev: FileEv): void {
  const ed = useEditor.getState();
  void ed.refreshList();
  if (ev.name !== ed.name) return;
  if (ev.event === 'workflow_deleted') {
    ed.say(`${ev.name}.yaml was deleted on disk; save to write it again`, 'error');
    useEditor.setState({ dirty: true });
    return;
  }
  const revision = ev.revision;
  if (ev.because) {
    // A subgraph file it includes changed, not the workflow: the subgraph types' inputs and
    // the diagnostics may differ, the text does not.
    void api.nodes().then((types) => useEditor.getState().setCatalogue(types), () => undefined);
    if (ev.event === 'workflow_invalid') {
      useRunStore.setState({ diagnostics: groupDiagnostics(ev.diagnostics, true) });
    } else if (!ed.dirty) {
      // The nodes of the subgraphs that changed will re-run: they lose the last run's marks.
      const stems = new Set(ev.because.map((f) => f.replace(/^.*[\\/]/, '').replace(/\.(ya?ml|json)$/, '')));
      const doc = ed.doc();
      forgetStale(staleNodes(doc, doc, stems));
      void ed.load(ed.name!);
    }
    ed.say(`${ev.because.join(', ')} changed on disk`, 'info');
    return;
  }
  // Our own save, or (with the file unreadable, whose revision the page never took) the text
  // the canvas was read from, back on disk: read again.
  if (revision === ed.revision && !ed.broken) return;
  if (ed.saving) {
    // The PUT's answer decides whether this is our own write; look again once it is in.
    if (pending) clearTimeout(pending);
    pending = setTimeout(() => fileEvent(ev), 100);
    return;
  }
  if (ed.dirty) useEditor.setState({ conflict: { revision } });
  else void ed.load(ed.name!);
}
