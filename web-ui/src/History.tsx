// The runs panel (Q): the server's queue (every workflow's queued and running runs, each
// cancellable; N copies with new seeds), then past runs, newest first, with their images (click:
// the image viewer) and "Open" to put a past run's workflow back on the canvas.
import { useEffect, useState } from 'react';
import { api, withToken, type RunDetail, type WorkflowDoc } from './api';
import { cancelRunById, queueCopies } from './live';
import { forgetShownRun, staleNodes, useRunStore, type NodeRunState } from './runstore';
import { useEditor } from './store';
import { openRunImages } from './ImageViewer';
import { QueueMove, queueDrag } from './QueueMove';
import { inQueueOrder } from './queueorder';

const LIVE = new Set(['queued', 'running']);

/** A finished run's detail never changes: read once, not again on every queue event. */
const finished = new Map<number, RunDetail>();
async function finishedDetail(r: RunDetail): Promise<RunDetail> {
  const known = finished.get(r.id);
  if (known) return known;
  try {
    const d = await api.runDetail(r.id);
    if (!LIVE.has(d.status)) finished.set(r.id, { ...d, workflow: undefined });
    return d;
  } catch {
    return r;
  }
}

export function History({ onClose, openFile }: { onClose: () => void; openFile: (name: string) => Promise<void> }) {
  const tick = useRunStore((s) => s.historyTick);
  // The server's `queue` event: a run queued, started or cancelled anywhere re-reads the list.
  const queue = useRunStore((s) => s.queue);
  const [runs, setRuns] = useState<RunDetail[]>([]);
  const [err, setErr] = useState<string | null>(null);
  const [copies, setCopies] = useState(4);
  useEffect(() => {
    let live = true;
    (async () => {
      try {
        const list = await api.runs(40);
        const full = await Promise.all(list.map((r) => (LIVE.has(r.status) ? Promise.resolve(r) : finishedDetail(r))));
        if (live) setRuns(full);
      } catch (e) {
        if (live) setErr((e as Error).message);
      }
    })();
    return () => {
      live = false;
    };
  }, [tick, queue]);
  // Running first, then the queue in the order the server takes it (moved runs where moved).
  const waiting = inQueueOrder(runs.filter((r) => LIVE.has(r.status)), queue.queued);
  const past = runs.filter((r) => !LIVE.has(r.status));
  return (
    <aside className="history" data-testid="history">
      <div className="h-head">
        <b>Queue</b>
        <span className="muted" data-testid="queue-count">
          {waiting.length ? `${waiting.length} waiting or running` : 'empty'}
        </span>
        <button className="btn small" onClick={onClose} title="close (Q)">
          ×
        </button>
      </div>
      <div className="h-copies">
        <button
          className="btn small"
          onClick={() => void queueCopies(copies)}
          title="queue the canvas this many times, every seed input given a new value per copy"
          data-testid="queue-copies"
        >
          Queue
        </button>
        <input
          type="number"
          min={1}
          max={100}
          value={copies}
          onChange={(e) => setCopies(Math.max(1, Math.min(100, Math.floor(Number(e.target.value) || 1))))}
          aria-label="copies"
          data-testid="copies-count"
        />
        <span className="muted">copies with new seeds</span>
      </div>
      <div data-testid="queue-panel">
        {waiting.map((r) => (
          <div
            className="h-line h-live"
            key={r.id}
            data-testid={`queue-run-${r.id}`}
            data-status={r.status}
            title={r.status === 'queued' ? 'drag onto another waiting run to move it there' : undefined}
            {...queueDrag(r.id, r.status === 'queued')}
          >
            <span>#{r.id}</span>
            <span className={`st st-${r.status}`}>{r.status}</span>
            <span className="muted">{r.workflow_name ?? 'canvas'}</span>
            {r.sweep && <span className="muted">sweep {r.sweep.id} · cell {r.sweep.cell + 1}</span>}
            <span className="grow" />
            {r.status === 'queued' && <QueueMove id={r.id} />}
            <button className="btn small" onClick={() => void cancelRunById(r.id)} title="cancel this run" data-testid="history-cancel">
              Cancel
            </button>
          </div>
        ))}
      </div>
      <div className="h-head h-sub">
        <b>History</b>
      </div>
      {err && <div className="wn-diag">{err}</div>}
      {past.length === 0 && !err && <div className="muted">no runs yet</div>}
      {past.map((r) => (
        <div className="h-run" key={r.id} data-testid={`history-run-${r.id}`}>
          <div className="h-line">
            <span>#{r.id}</span>
            <span className={`st st-${r.status}`}>{r.status}</span>
            <span className="muted" title={r.workflow_name ?? undefined}>
              {r.workflow_name ?? ''}
            </span>
            {r.sweep && (
              <span className="muted" title={Object.entries(r.sweep.values).map(([k, v]) => `${k} = ${v}`).join('\n')} data-testid="history-sweep">
                sweep {r.sweep.id} · cell {r.sweep.cell + 1}
              </span>
            )}
            <span className="muted h-when" title={when(r.finished_at ?? r.queued_at, true)}>
              {when(r.finished_at ?? r.queued_at)}
            </span>
            <span className="grow" />
            <button
              className="btn small"
              onClick={() => void openPastRun(r.id, openFile)}
              title="put this run's workflow, as it ran, on the canvas (unsaved), with its images"
              data-testid="history-open"
            >
              Open
            </button>
          </div>
          {r.error && <div className="wn-diag">{r.error.node ? `${r.error.node}: ` : ''}{r.error.message}</div>}
          <div className="h-imgs">
            {(r.outputs ?? []).map((o) => (
              <a
                key={o.url}
                href={withToken(o.url)}
                target="_blank"
                rel="noreferrer"
                title={`${o.node}: open in the viewer`}
                onClick={(e) => {
                  if (e.ctrlKey || e.metaKey || e.shiftKey) return;
                  e.preventDefault();
                  openRunImages(r.id, r.outputs ?? [], o.url);
                }}
              >
                <img src={withToken(o.url)} alt={o.node} loading="lazy" />
              </a>
            ))}
          </div>
        </div>
      ))}
    </aside>
  );
}

/**
 * A past run back on the canvas: its workflow's file is opened first (asking before unsaved
 * edits go), then the document the run ran replaces the canvas as an undoable, unsaved edit
 * when it differs from the file, and the run's images are shown on the nodes that saved them.
 */
export async function openPastRun(id: number, openFile: (name: string) => Promise<void>): Promise<void> {
  let run: RunDetail;
  try {
    run = await api.runDetail(id);
  } catch (e) {
    useEditor.getState().say(`cannot read run #${id}: ${(e as Error).message}`, 'error');
    return;
  }
  const doc = run.workflow;
  if (!doc) {
    useEditor.getState().say(`run #${id} has no workflow to open`, 'error');
    return;
  }
  const named = run.workflow_name;
  if (named && named !== useEditor.getState().name && useEditor.getState().workflows.some((w) => w.name === named)) {
    await openFile(named);
    if (useEditor.getState().name !== named) return; // the user kept their unsaved edits
  } else if (useEditor.getState().dirty && !confirm(`Replace the canvas (unsaved edits to ${useEditor.getState().name ?? 'it'}) with run #${id}'s workflow?`)) {
    return;
  }
  const ed = useEditor.getState();
  const differs = !sameGraph(ed.doc(), doc);
  if (differs) {
    ed.checkpoint();
    forgetShownRun();
    ed.loadDoc(doc, true);
  }
  const nodes: Record<string, NodeRunState> = {};
  for (const o of run.outputs ?? []) (nodes[o.node] ??= { state: 'done', images: [] }).images!.push(o.url);
  useRunStore.setState({ nodes, summary: `run #${id} (${run.status})` });
  const inlined = Object.keys(doc.nodes).some((n) => n.includes('__'));
  ed.say(
    differs
      ? `run #${id}'s workflow is on the canvas as it ran${inlined ? ' (its subgraphs inlined)' : ''}, not saved: Save writes it to ${ed.name ?? 'a file'}.yaml, Ctrl+Z goes back`
      : `run #${id} ran ${ed.name}.yaml as it is now; its images are on the nodes`,
  );
}

/** The same nodes and inputs (layout and looks aside). */
function sameGraph(a: WorkflowDoc, b: WorkflowDoc): boolean {
  const ka = Object.keys(a.nodes);
  return ka.length === Object.keys(b.nodes).length && ka.every((k) => k in b.nodes) && staleNodes(a, b).size === 0;
}

/** A run's time: hours and minutes in the row (it must fit the 300 px panel beside the name and
 * Open), the date and seconds too in its tooltip (`full`). */
function when(t: string | number | undefined, full = false): string {
  if (t == null) return '';
  const d = typeof t === 'number' ? new Date(t < 1e12 ? t * 1000 : t) : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return full ? d.toLocaleString() : d.toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' });
}
