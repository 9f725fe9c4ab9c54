// The toolbar: the file picker, save, import, undo, add, queue/cancel with the run's state,
// the sweep and history toggles and the connection light.
import { useRef } from 'react';
import { newWorkflow, saveAsAsk, saveOrAsk } from './fileactions';
import { cancelRun, queueRun } from './live';
import { useRunStore } from './runstore';
import { useEditor } from './store';
import { useSweepStore } from './sweeprun';

export function Toolbar({
  openFile,
  onAdd,
  onImport,
  history,
  toggleHistory,
  sweep,
  toggleSweep,
}: {
  openFile: (n: string) => void;
  onAdd: () => void;
  onImport: (f: File) => void;
  history: boolean;
  toggleHistory: () => void;
  sweep: boolean;
  toggleSweep: () => void;
}) {
  const name = useEditor((s) => s.name);
  const suggest = useEditor((s) => s.suggest);
  const dirty = useEditor((s) => s.dirty);
  const picker = useRef<HTMLInputElement>(null);
  const workflows = useEditor((s) => s.workflows);
  const library = useEditor((s) => s.library);
  const canUndo = useEditor((s) => s.past.length > 0);
  const canRedo = useEditor((s) => s.future.length > 0);
  const status = useRunStore((s) => s.status);
  const summary = useRunStore((s) => s.summary);
  const connected = useRunStore((s) => s.connected);
  const queued = useRunStore((s) => s.queue.queued.length);
  const busy = status === 'running' || status === 'queued';
  const axes = useEditor((s) => s.sweep.axes.length);
  const sweepProgress = useSweepStore((s) => {
    const v = s.view;
    if (!v || v.status === 'succeeded' || v.status === 'failed' || v.status === 'cancelled') return '';
    return `${v.cells.filter((c) => !['queued', 'running'].includes(c.status)).length}/${v.cells.length}`;
  });
  const ed = useEditor.getState;
  return (
    <div className="toolbar">
      <span className="logo">weft</span>
      <select
        className="file"
        value={name ?? ''}
        onChange={(e) => void openFile(e.target.value)}
        aria-label="workflow"
        data-testid="file-select"
      >
        {!name && <option value="">{suggest ? `${suggest} (new, unsaved)` : '—'}</option>}
        {name && !workflows.some((w) => w.name === name) && !library.some((w) => w.name === name) && (
          <option value={name}>{name}.yaml</option>
        )}
        {workflows.map((w) => (
          <option key={w.name} value={w.name}>
            {w.name}.yaml{w.valid ? '' : ' ⚠'}
          </option>
        ))}
        {library.length > 0 && (
          <optgroup label="lib/ (subgraphs)" data-testid="file-library">
            {library.map((w) => (
              <option key={w.name} value={w.name}>
                {w.name}.yaml{w.valid ? '' : ' ⚠'}
              </option>
            ))}
          </optgroup>
        )}
      </select>
      <span className="dirty" title={dirty ? 'unsaved edits' : 'saved'} data-testid="dirty">
        {dirty ? '● unsaved' : ''}
      </span>
      <button className="btn" onClick={() => void newWorkflow()}>
        New
      </button>
      <button className="btn" onClick={() => void saveOrAsk()} title="Save (Ctrl+S)" data-testid="save">
        Save
      </button>
      <button className="btn" onClick={() => void saveAsAsk()} title="Save as (Ctrl+Shift+S)">
        Save as
      </button>
      <button
        className="btn"
        onClick={() => picker.current?.click()}
        title="Open a ComfyUI workflow (.json, API or UI format) or a PNG ComfyUI saved, as a new workflow (or drop it on the canvas)"
        data-testid="import-comfy"
      >
        Import ComfyUI…
      </button>
      <input
        ref={picker}
        type="file"
        accept=".json,.png,application/json,image/png"
        hidden
        data-testid="import-comfy-file"
        onChange={(e) => {
          const f = e.target.files?.[0];
          e.target.value = '';
          if (f) onImport(f);
        }}
      />
      <span className="sep" />
      <button className="btn" disabled={!canUndo} onClick={() => ed().undo()} title="Undo (Ctrl+Z)">
        ↶
      </button>
      <button className="btn" disabled={!canRedo} onClick={() => ed().redo()} title="Redo (Ctrl+Y, Ctrl+Shift+Z)">
        ↷
      </button>
      <button className="btn" onClick={onAdd} title="Add a node (double-click, Space or Tab)" data-testid="add-node">
        + Node
      </button>
      <span className="sep" />
      <button className="btn primary" onClick={() => void queueRun()} title="Queue the workflow (Ctrl+Enter)" data-testid="queue">
        ▶ Queue
      </button>
      <button className="btn" disabled={!busy} onClick={() => void cancelRun()} title="Cancel (Ctrl+Alt+Enter)" data-testid="cancel">
        ■ Cancel
      </button>
      <span className="run-status" data-testid="run-status" data-status={status ?? ''} title={summary ?? undefined}>
        {busy ? `${status}…${summary?.startsWith('sweep cell') ? ` ${summary}` : ''}` : summary ?? ''}
        {queued > 0 ? ` · ${queued} waiting` : ''}
      </span>
      <span className="grow" />
      <button
        className={`btn${sweep ? ' on' : ''}`}
        onClick={toggleSweep}
        title="Sweep: run the workflow over several values of its inputs, as a grid"
        data-testid="sweep-toggle"
      >
        Sweep{axes ? ` · ${axes} ax${axes === 1 ? 'is' : 'es'}` : ''}
        {sweepProgress ? ` · ${sweepProgress}` : ''}
      </button>
      <button className={`btn${history ? ' on' : ''}`} onClick={toggleHistory} title="History of runs (Q)" data-testid="history-toggle">
        History
      </button>
      <span className={`conn ${connected ? 'ok' : 'off'}`} title={connected ? 'connected to weft serve' : 'reconnecting…'} />
    </div>
  );
}

