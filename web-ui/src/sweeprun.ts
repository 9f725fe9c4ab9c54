// The sweep this tab queued: its cells filling in from /ws run events and GET /api/sweeps/{id},
// the composed grid when `sweep_finished` arrives, cancel, and "load this cell". After a reload,
// the newest sweep of the open workflow file (in flight or finished) is shown again.
import { create } from 'zustand';
import { api, withToken, type Constant, type Diagnostic, type SweepDetail, type WorkflowDoc } from './api';
import { useEditor } from './store';
import { groupDiagnostics, useRunStore } from './runstore';
import { pngWorkflowText } from './png';
import { checkSweep, sweepRequest, type SweepCell, type SweepMode } from './sweep';
import { replayEarly } from './live';

export interface SweepView {
  id: string;
  status: string;
  mode: SweepMode;
  rows: string[];
  columns: string[];
  cells: SweepCell[];
  grid: string | null;
  /** The workflow it was queued from (the viewer says so once another file is open). */
  workflow: string | null;
}

interface SweepStore {
  view: SweepView | null;
  /** The cell shown full size. */
  open: number | null;
  /** Counts the sweeps shown again after a reload: each one opens the Sweep panel. */
  reattached: number;
  set: (p: Partial<SweepStore>) => void;
}

export const useSweepStore = create<SweepStore>()((set) => ({ view: null, open: null, reattached: 0, set: (p) => set(p) }));

// `deleted`: a queued cell whose run was deleted (it will not run).
const FINISHED = new Set(['succeeded', 'failed', 'cancelled', 'interrupted', 'invalid', 'deleted']);

export const sweepFinished = (status: string) => FINISHED.has(status);

// Run id -> cell index of the shown sweep, rebuilt when its cells change (every run event asks).
let indexed: { cells: SweepCell[] | null; byRun: Map<number, number> } = { cells: null, byRun: new Map() };

/** The cell of the shown sweep that run `run` is, or -1 (events of other runs pass it by). */
export function cellIndex(run: number): number {
  const cells = useSweepStore.getState().view?.cells ?? null;
  if (!cells) return -1;
  if (indexed.cells !== cells) indexed = { cells, byRun: new Map(cells.map((c, i) => [c.run, i])) };
  return indexed.byRun.get(run) ?? -1;
}

function patchCell(i: number, p: Partial<SweepCell>) {
  const v = useSweepStore.getState().view;
  if (!v || !v.cells[i]) return;
  const cells = v.cells.slice();
  cells[i] = { ...cells[i], ...p };
  // Finished is the server's word (sweep_finished or a read); until then, running once a cell moved.
  const status = sweepFinished(v.status) ? v.status : cells.some((c) => c.status !== 'queued') ? 'running' : 'queued';
  useSweepStore.setState({ view: { ...v, cells, status } });
}

/** The editor's sweep as the panel shows it: checked against the canvas. */
export function currentCheck() {
  const ed = useEditor.getState();
  return checkSweep(ed.sweep, ed.sweepContext());
}

/** Queues the panel's sweep of the canvas: one run a cell, in cell order (`front`: all of them
 * ahead of the runs already waiting). */
export async function queueSweep(front = false): Promise<boolean> {
  const ed = useEditor.getState();
  const check = currentCheck();
  if (check.cells == null) {
    ed.say(`cannot queue the sweep: ${check.problems[0]}`, 'error');
    return false;
  }
  const sweep = sweepRequest(ed.sweep, ed.sweepContext())!;
  // The saved file by name when the canvas is the file (the history then names it); else the canvas.
  const workflow: WorkflowDoc | string = ed.name && !ed.dirty && !ed.broken ? ed.name : ed.doc();
  try {
    const r = await api.sweep(workflow, sweep, front);
    useSweepStore.setState({
      open: null,
      view: {
        id: String(r.sweep),
        status: 'queued',
        mode: ed.sweep.mode,
        rows: r.rows ?? [],
        columns: r.columns ?? [],
        cells: r.cells.map((c) => ({ run: c.run, values: c.values, status: 'queued', image: null })),
        grid: null,
        workflow: ed.name,
      },
    });
    ed.say(`queued a sweep of ${r.cells.length} cell${r.cells.length === 1 ? '' : 's'}${front ? ' at the front of the queue' : ''}`);
    // A cell may have started (or finished) before this answer was read.
    replayEarly(r.cells.map((c) => c.run));
    void refreshSweep();
    return true;
  } catch (e) {
    const err = e as { diagnostics?: Diagnostic[]; message: string };
    const diags = err.diagnostics ?? [];
    if (diags.length) {
      useRunStore.setState({ diagnostics: groupDiagnostics(diags, false) });
      const where = (d: Diagnostic) => (d.node ? `${d.node}${d.input ? `.${d.input}` : ''}: ` : '');
      ed.say(`nothing ran: ${diags.map((d) => where(d) + d.message).slice(0, 3).join('; ')}`, 'error');
    } else ed.say(`cannot queue the sweep: ${err.message}`, 'error');
    return false;
  }
}

let refreshing: Promise<void> | null = null;

/** Re-reads the shown sweep (statuses, images, grid): after its answer, on each cell's end, on reconnect. */
export function refreshSweep(): Promise<void> {
  const v = useSweepStore.getState().view;
  if (!v) return Promise.resolve();
  if (refreshing) return refreshing.then(() => refreshSweep());
  refreshing = (async () => {
    try {
      const s = await api.sweepDetail(v.id);
      const now = useSweepStore.getState().view;
      if (!now || now.id !== v.id) return;
      useSweepStore.setState({
        view: {
          ...now,
          status: s.status,
          mode: s.mode ?? now.mode,
          rows: s.rows ?? now.rows,
          columns: s.columns ?? now.columns,
          // A cell image seen on /ws is kept when the read was made before it was written.
          cells: s.cells.map((c, i) => ({
            run: c.run,
            values: c.values,
            status: laterStatus(now.cells[i]?.status, c.status),
            image: c.image ?? now.cells[i]?.image ?? null,
          })),
          grid: s.grid ?? now.grid,
        },
      });
    } catch (e) {
      useEditor.getState().say(`cannot read sweep ${v.id}: ${(e as Error).message}`, 'error');
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** The further along of two statuses of one run (a read may be older than the events seen since). */
function laterStatus(seen: string | undefined, read: string): string {
  const rank = (s?: string) => (s == null ? -1 : sweepFinished(s) ? 2 : s === 'running' ? 1 : 0);
  return rank(seen) > rank(read) ? seen! : read;
}

/** A run event of one of the shown sweep's cells. */
export function sweepRunEvent(ev: Record<string, unknown> & { event: string; run?: number }): void {
  if (typeof ev.run !== 'number') return;
  const i = cellIndex(ev.run);
  if (i < 0) return;
  const cell = useSweepStore.getState().view!.cells[i];
  switch (ev.event) {
    case 'run_started':
      patchCell(i, { status: 'running' });
      break;
    case 'output':
      // The first image a cell saves is its picture in the grid (as the server's grid takes it).
      if (!cell.image && typeof ev.url === 'string') patchCell(i, { image: ev.url });
      break;
    case 'run_finished':
      patchCell(i, { status: String(ev.status) });
      void refreshSweep();
      break;
  }
}

/**
 * `sweep_finished`: the composed grid at once; the status with the cells' statuses, read
 * together (a sweep cancelled while cells waited sends no `run_finished` for those: shown
 * `cancelled` beside cells still `queued`, the page would contradict itself until the read came
 * back). The event's status is taken only if that read did not bring a finished one.
 */
export function sweepFinishedEvent(ev: Record<string, unknown>): void {
  const v = useSweepStore.getState().view;
  if (!v || String(ev.sweep) !== v.id) return;
  if (typeof ev.grid === 'string') useSweepStore.setState({ view: { ...v, grid: ev.grid } });
  void refreshSweep().then(() => {
    const now = useSweepStore.getState().view;
    if (now && now.id === v.id && !sweepFinished(now.status)) useSweepStore.setState({ view: { ...now, status: String(ev.status) } });
  });
}

export async function cancelSweep(): Promise<void> {
  const v = useSweepStore.getState().view;
  if (!v || sweepFinished(v.status)) return;
  try {
    await api.cancelSweep(v.id);
    void refreshSweep();
  } catch (e) {
    useEditor.getState().say(`cancel failed: ${(e as Error).message}`, 'error');
  }
}

/** Whether Cancel in the toolbar means the shown sweep (the run it follows is one of its cells). */
export function followingSweep(): boolean {
  const v = useSweepStore.getState().view;
  const run = useRunStore.getState().run;
  return !!v && !sweepFinished(v.status) && run != null && cellIndex(run) >= 0;
}

/**
 * Puts a cell's own workflow on the canvas: the sweep-free workflow its PNG carries (so the cell
 * can be re-made or edited alone). One undo step brings the canvas and the sweep back.
 */
export async function loadCell(i: number): Promise<void> {
  const v = useSweepStore.getState().view;
  const cell = v?.cells[i];
  const ed = useEditor.getState();
  if (!cell?.image) return;
  try {
    const res = await fetch(withToken(cell.image));
    if (!res.ok) throw new Error(`${cell.image} answered ${res.status}`);
    const text = await pngWorkflowText(new Uint8Array(await res.arrayBuffer()));
    if (!text) throw new Error(`${cell.image} carries no workflow`);
    let doc: WorkflowDoc;
    try {
      doc = JSON.parse(text);
    } catch {
      const YAML = await import('yaml');
      doc = YAML.parse(text);
    }
    ed.checkpoint();
    ed.loadDoc({ ...doc, layout: { ...ed.doc().layout, ...doc.layout } }, true);
    const values = Object.entries(cell.values)
      .map(([k, x]: [string, Constant]) => `${k} = ${x}`)
      .join(', ');
    ed.say(`loaded cell ${i + 1} (${values}) onto the canvas, without the sweep; Ctrl+Z brings the sweep back`);
  } catch (e) {
    ed.say(`cannot load cell ${i + 1}: ${(e as Error).message}`, 'error');
  }
}

/** GET /api/sweeps?workflow=NAME: the newest sweep queued from that file, or null. */
async function latestSweep(name: string): Promise<SweepDetail | null> {
  const res = await fetch(withToken(`/api/sweeps?workflow=${encodeURIComponent(name)}`));
  if (!res.ok) throw new Error(`GET /api/sweeps answered ${res.status}`);
  const body = (await res.json()) as { sweep?: SweepDetail | null };
  return body.sweep ?? null;
}

/**
 * Shows the newest sweep of workflow file `name` again (a page reloaded while its cells ran, or
 * after): when no sweep is shown, or the one shown was queued from another file. Its cells then
 * follow /ws as a sweep queued from this tab would.
 */
export async function reattachSweep(name: string | null): Promise<void> {
  const shown = useSweepStore.getState().view;
  if (!name || (shown && shown.workflow === name)) return;
  try {
    const s = await latestSweep(name);
    const now = useSweepStore.getState().view;
    if (!s || useEditor.getState().name !== name || (now && now.workflow === name)) return;
    useSweepStore.setState((state) => ({
      open: null,
      reattached: state.reattached + 1,
      view: {
        id: String(s.id),
        status: s.status,
        mode: s.mode ?? 'grid',
        rows: s.rows ?? [],
        columns: s.columns ?? [],
        cells: s.cells.map((c) => ({ run: c.run, values: c.values, status: c.status, image: c.image ?? null })),
        grid: s.grid ?? null,
        workflow: name,
      },
    }));
    // Events of its cells that arrived before this answer.
    replayEarly(s.cells.map((c) => c.run));
  } catch (e) {
    useEditor.getState().say(`cannot look up the sweeps of ${name}: ${(e as Error).message}`, 'error');
  }
}

// Each time another workflow file is opened (the first one after a reload included).
let attachedFor: string | null = null;
useEditor.subscribe((s) => {
  if (s.name === attachedFor) return;
  attachedFor = s.name;
  void reattachSweep(s.name);
});
