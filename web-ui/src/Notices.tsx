// What the canvas tells about the file and the last action: the breadcrumb into library
// subgraphs, the bar for a file changed on disk, a file that does not read, diagnostics of no
// node on the canvas, the toast and the keys' help.
import { useEffect } from 'react';
import type { Diagnostic } from './api';
import { useRunStore } from './runstore';
import { GESTURES, SHORTCUTS } from './shortcuts';
import { useEditor } from './store';

/** Where a double-click on subgraph nodes led: each file before is a step back. */
export function Breadcrumb({ trail, back }: { trail: string[]; back: (index: number) => void }) {
  const name = useEditor((s) => s.name);
  if (!name?.startsWith('lib/') && trail.length === 0) return null;
  return (
    <div className="crumbs" data-testid="breadcrumb">
      {trail.map((t, i) => (
        <span key={i}>
          <button className="btn small" onClick={() => back(i)} data-testid={`crumb-${i}`} title={`back to ${t}.yaml`}>
            {i === trail.length - 1 ? '‹ ' : ''}
            {t}
          </button>
          <span className="muted"> › </span>
        </span>
      ))}
      <b>{name}</b>
      {name?.startsWith('lib/') && (
        <span className="muted"> · a library subgraph: <code>$inputs.NAME</code> links are its node&apos;s inputs; its inputs: and outputs: are kept as they are when you save</span>
      )}
    </div>
  );
}

export function ConflictBar() {
  const conflict = useEditor((s) => s.conflict);
  const name = useEditor((s) => s.name);
  if (!conflict) return null;
  return (
    <div className="conflict" data-testid="conflict">
      <b>{name}.yaml</b> changed on disk {useEditor.getState().broken ? 'and does not read as a workflow' : 'while you have unsaved edits'}.
      <button className="btn" onClick={() => name && void useEditor.getState().load(name)}>
        Reload from disk
      </button>
      {!useEditor.getState().broken && (
        <button
          className="btn primary"
          onClick={() => void useEditor.getState().mergeDisk()}
          title="take the file's changes and keep your edits, input by input; where both changed the same input, yours is kept and named"
          data-testid="merge"
        >
          Merge my edits
        </button>
      )}
      <button
        className="btn"
        onClick={() => useEditor.setState({ revision: conflict.revision, conflict: null })}
        title="keep the canvas as it is; the next save replaces the file, dropping the changes on disk"
      >
        Keep mine (replace the file)
      </button>
    </div>
  );
}

export function Broken() {
  const broken = useEditor((s) => s.broken);
  const name = useEditor((s) => s.name);
  if (!broken) return null;
  const bad = new Set(broken.diagnostics.map((d) => d.pos?.line).filter(Boolean));
  return (
    <div className="broken" data-testid="broken">
      <h3>{name}.yaml does not read as a workflow</h3>
      <p className="muted">Fix the file on disk; the canvas comes back as soon as it parses.</p>
      <ul>
        {broken.diagnostics.map((d, i) => (
          <li key={i}>
            <DiagText d={d} />
          </li>
        ))}
      </ul>
      <pre>
        {broken.text.split('\n').map((l, i) => (
          <div key={i} className={bad.has(i + 1) ? 'bad' : ''}>
            <span className="ln">{i + 1}</span>
            {l}
          </div>
        ))}
      </pre>
    </div>
  );
}

function DiagText({ d }: { d: Diagnostic }) {
  return (
    <>
      {d.pos && <span className="pos">{d.pos.line}:{d.pos.column ?? d.pos.col} </span>}
      {d.node && <b>{d.node}{d.input ? `.${d.input}` : ''}: </b>}
      {d.message}
      {d.hint && <div className="hint">{d.hint}</div>}
    </>
  );
}

export function LooseDiagnostics() {
  const diags = useRunStore((s) => s.diagnostics);
  const ids = useEditor((s) => s.nodes.length);
  const nodes = useEditor.getState().nodes;
  const loose: Diagnostic[] = [...(diags[''] ?? [])];
  const known = new Set(nodes.map((n) => n.id));
  for (const [k, v] of Object.entries(diags)) if (k && !known.has(k)) loose.push(...v);
  if (loose.length === 0 || ids < 0) return null;
  return (
    <div className="loose" data-testid="loose-diagnostics">
      {loose.map((d, i) => (
        <div key={i} className="wn-diag">
          <DiagText d={d} />
        </div>
      ))}
    </div>
  );
}

export function Toast() {
  const message = useEditor((s) => s.message);
  useEffect(() => {
    if (!message) return;
    // Long messages (an importer's list of problems) stay longer, up to 20 s.
    const base = message.kind === 'error' ? 6000 : 2500;
    const t = setTimeout(() => useEditor.setState({ message: null }), Math.min(20000, base + message.text.length * 25));
    return () => clearTimeout(t);
  }, [message]);
  if (!message) return null;
  return (
    <div className={`toast ${message.kind}`} data-testid="toast">
      {message.text}
    </div>
  );
}

/** The keys, drawn from the one table the key handler runs (shortcuts.ts). */
export function Help({ onClose }: { onClose: () => void }) {
  return (
    <div className="help" data-testid="help" onClick={onClose}>
      <h3>Keys</h3>
      <table>
        <tbody>
          {[...SHORTCUTS, ...GESTURES].map((s) => (
            <tr key={s.keys}>
              <td>
                <kbd>{s.keys}</kbd>
              </td>
              <td>{s.does}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <p>Keys act on the canvas, not while you type in a field (save and run keys work anywhere).</p>
    </div>
  );
}

