// Past runs, newest first, with their images.
import { useEffect, useState } from 'react';
import { api, withToken, type RunDetail } from './api';
import { cancelRunById } from './live';
import { useRunStore } from './runstore';

export function History({ onClose }: { onClose: () => void }) {
  const tick = useRunStore((s) => s.historyTick);
  const [runs, setRuns] = useState<RunDetail[]>([]);
  const [err, setErr] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    (async () => {
      try {
        const list = await api.runs(20);
        const full = await Promise.all(
          list.map((r) => (r.outputs ? Promise.resolve(r) : api.runDetail(r.id).catch(() => r))),
        );
        if (live) setRuns(full);
      } catch (e) {
        if (live) setErr((e as Error).message);
      }
    })();
    return () => {
      live = false;
    };
  }, [tick]);
  return (
    <aside className="history" data-testid="history">
      <div className="h-head">
        <b>History</b>
        <button className="btn small" onClick={onClose} title="close (Q)">
          ×
        </button>
      </div>
      {err && <div className="wn-diag">{err}</div>}
      {runs.length === 0 && !err && <div className="muted">no runs yet</div>}
      {runs.map((r) => (
        <div className="h-run" key={r.id}>
          <div className="h-line">
            <span>#{r.id}</span>
            <span className={`st st-${r.status}`}>{r.status}</span>
            <span className="muted">{r.workflow_name ?? ''}</span>
            {r.sweep && (
              <span className="muted" title={Object.entries(r.sweep.values).map(([k, v]) => `${k} = ${v}`).join('\n')} data-testid="history-sweep">
                sweep {r.sweep.id} · cell {r.sweep.cell + 1}
              </span>
            )}
            <span className="muted">{when(r.finished_at ?? r.queued_at)}</span>
            {(r.status === 'queued' || r.status === 'running') && (
              <button className="btn small" onClick={() => void cancelRunById(r.id)} title="cancel this run" data-testid="history-cancel">
                Cancel
              </button>
            )}
          </div>
          {r.error && <div className="wn-diag">{r.error.node ? `${r.error.node}: ` : ''}{r.error.message}</div>}
          <div className="h-imgs">
            {(r.outputs ?? []).map((o) => (
              <a key={o.url} href={withToken(o.url)} target="_blank" rel="noreferrer" title={o.node}>
                <img src={withToken(o.url)} alt={o.node} loading="lazy" />
              </a>
            ))}
          </div>
        </div>
      ))}
    </aside>
  );
}

function when(t?: string | number): string {
  if (t == null) return '';
  const d = typeof t === 'number' ? new Date(t < 1e12 ? t * 1000 : t) : new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleTimeString();
}
