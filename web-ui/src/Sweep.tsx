// The sweep panel (axes: a node input and its values, grid or zip, the cell count live, Queue sweep)
// and the grid viewer of the sweep queued from here (cells filling in, full size, load a cell).
import { memo, useEffect, useMemo } from 'react';
import { useShallow } from 'zustand/react/shallow';
import { withToken, type InputDecl } from './api';
import { useEditor } from './store';
import { axisKey, checkSweep, gridLayout, oneValueALine, type SweepAxis, type SweepDraft } from './sweep';
import { cancelSweep, loadCell, queueSweep, sweepFinished, useSweepStore } from './sweeprun';

/** The inputs of a canvas node that a sweep may set: constants, not linked now. */
function sweepable(node: string): InputDecl[] {
  const ed = useEditor.getState();
  const ctx = ed.sweepContext();
  const kind = ctx.kindOf(node);
  const t = kind ? ed.catalogue.get(kind) : undefined;
  return (t?.inputs ?? []).filter((i) => !i.link_only && !ctx.isLinked(node, i.name));
}

/** An axis's starting values: what the input holds now, so the user edits from there. */
function currentText(node: string, input: string): string {
  const v = useEditor.getState().nodes.find((n) => n.id === node)?.data.values[input];
  return v === undefined ? '' : String(v);
}

function newAxis(draft: SweepDraft): SweepAxis | null {
  const ed = useEditor.getState();
  const taken = new Set(draft.axes.map(axisKey));
  // The selected node first: it is the one the user has in mind.
  const order = [...ed.nodes].sort((a, b) => Number(!!b.selected) - Number(!!a.selected));
  for (const n of order) {
    const free = sweepable(n.id).filter((i) => !taken.has(`${n.id}.${i.name}`));
    const pick = free.find((i) => i.type === 'seed') ?? free[0];
    if (pick) return { node: n.id, input: pick.name, text: currentText(n.id, pick.name) };
  }
  return null;
}

export function SweepPanel({ onClose }: { onClose: () => void }) {
  const draft = useEditor((s) => s.sweep);
  // Re-checked when the graph changes too: a deleted node or a new link makes an axis wrong.
  const nodes = useEditor((s) => s.nodes);
  const edges = useEditor((s) => s.edges);
  const catalogue = useEditor((s) => s.catalogue);
  const check = useMemo(
    () => checkSweep(draft, useEditor.getState().sweepContext()),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [draft, nodes, edges, catalogue],
  );
  const setSweep = useEditor((s) => s.setSweep);
  const candidates = useMemo(() => nodes.filter((n) => sweepable(n.id).length > 0).map((n) => n.id), [nodes, edges, catalogue]); // eslint-disable-line react-hooks/exhaustive-deps
  const update = (i: number, p: Partial<SweepAxis>, key?: string) =>
    setSweep({ ...draft, axes: draft.axes.map((a, j) => (j === i ? { ...a, ...p } : a)) }, key);
  const role = (i: number) => (draft.mode === 'zip' ? 'zipped' : draft.axes.length === 1 ? 'one row' : i === 1 ? 'columns' : i === 0 ? 'rows' : 'rows ×');
  const shape = useMemo(() => {
    if (check.cells == null || draft.mode === 'zip') return '';
    const n = check.axes.map((a) => (a.ok ? a.values.length : 0));
    if (n.length === 1) return ` · 1 row × ${n[0]}`;
    const rows = n.filter((_, i) => i !== 1).reduce((a, b) => a * b, 1);
    return ` · ${rows} row${rows === 1 ? '' : 's'} × ${n[1]} column${n[1] === 1 ? '' : 's'}`;
  }, [check, draft.mode]);
  return (
    <aside className="sweep" data-testid="sweep-panel">
      <div className="h-head">
        <b>Sweep</b>
        <button className="btn small" onClick={onClose} title="close">
          ×
        </button>
      </div>
      <p className="muted s-note">
        One run a cell; nodes the cells share run once (the cache). Saved in the file's <code>sweep:</code> section.
      </p>
      <div className="s-mode" role="radiogroup" aria-label="combine axes">
        {(['grid', 'zip'] as const).map((m) => (
          <button
            key={m}
            className={`btn small${draft.mode === m ? ' on' : ''}`}
            role="radio"
            aria-checked={draft.mode === m}
            data-testid={`sweep-mode-${m}`}
            title={m === 'grid' ? 'every combination of the values (cross product)' : 'the axes taken together: value i of each axis makes cell i'}
            onClick={() => draft.mode !== m && setSweep({ ...draft, mode: m })}
          >
            {m === 'grid' ? 'Grid (every combination)' : 'Zip (side by side)'}
          </button>
        ))}
      </div>
      {draft.axes.map((a, i) => (
        <AxisRow
          key={i}
          index={i}
          axis={a}
          role={role(i)}
          result={check.axes[i]}
          candidates={candidates.includes(a.node) ? candidates : [a.node, ...candidates]}
          onChange={(p, key) => update(i, p, key)}
          onRemove={() => setSweep({ ...draft, axes: draft.axes.filter((_, j) => j !== i) })}
        />
      ))}
      <button
        className="btn small"
        data-testid="sweep-add"
        disabled={candidates.length === 0}
        title={candidates.length === 0 ? 'no node on the canvas has a constant input to sweep' : 'sweep another input'}
        onClick={() => {
          const axis = newAxis(draft);
          if (axis) setSweep({ ...draft, axes: [...draft.axes, axis] });
        }}
      >
        + Axis
      </button>
      <div className={`s-count${check.cells == null && draft.axes.length ? ' bad' : ''}`} data-testid="sweep-count" data-cells={check.cells ?? ''}>
        {check.cells != null ? `${check.cells.toLocaleString('en')} cell${check.cells === 1 ? '' : 's'}${shape}` : check.problems.map((p, i) => <div key={i}>{p}</div>)}
      </div>
      <button className="btn primary" data-testid="sweep-queue" disabled={check.cells == null} onClick={() => void queueSweep()}>
        ▶ Queue sweep{check.cells != null ? ` (${check.cells})` : ''}
      </button>
      <button
        className="btn"
        data-testid="sweep-queue-front"
        disabled={check.cells == null}
        onClick={() => void queueSweep(true)}
        title="queue the sweep ahead of the runs already waiting (its cells keep their order)"
      >
        ⤒ Front
      </button>
      <SweepResults />
    </aside>
  );
}

const AxisRow = memo(function AxisRow({
  index,
  axis,
  role,
  result,
  candidates,
  onChange,
  onRemove,
}: {
  index: number;
  axis: SweepAxis;
  role: string;
  result: ReturnType<typeof checkSweep>['axes'][number] | undefined;
  candidates: string[];
  onChange: (p: Partial<SweepAxis>, key?: string) => void;
  onRemove: () => void;
}) {
  const inputs = sweepable(axis.node);
  const decl = useEditor((s) => {
    const kind = s.nodes.find((n) => n.id === axis.node)?.data.kind;
    return kind ? s.catalogue.get(kind)?.inputs.find((i) => i.name === axis.input) : undefined;
  });
  const names = inputs.map((i) => i.name);
  if (!names.includes(axis.input)) names.unshift(axis.input);
  return (
    <div className="s-axis" data-testid={`sweep-axis-${index}`} data-key={axisKey(axis)}>
      <div className="s-line">
        <span className="s-role" title="where this axis goes in the grid">{role}</span>
        <select
          aria-label="node"
          data-testid="sweep-node"
          value={axis.node}
          onChange={(e) => {
            const node = e.target.value;
            const first = sweepable(node).find((i) => i.type === 'seed') ?? sweepable(node)[0];
            onChange({ node, input: first?.name ?? '', text: first ? currentText(node, first.name) : '' });
          }}
        >
          {candidates.map((id) => (
            <option key={id} value={id}>
              {id}
            </option>
          ))}
        </select>
        <span>.</span>
        <select
          aria-label="input"
          data-testid="sweep-input"
          value={axis.input}
          onChange={(e) => onChange({ input: e.target.value, text: currentText(axis.node, e.target.value) })}
        >
          {names.map((n) => (
            <option key={n} value={n}>
              {n}
            </option>
          ))}
        </select>
        <button className="btn small" onClick={onRemove} title="remove this axis" data-testid="sweep-remove">
          ×
        </button>
      </div>
      <Values axis={axis} decl={decl} onChange={(text) => onChange({ text }, `sweep.${index}.text`)} />
      <div className={`s-status${result && !result.ok ? ' bad' : ''}`} data-testid="sweep-axis-status">
        {result ? (result.ok ? `${result.values.length} value${result.values.length === 1 ? '' : 's'}: ${preview(result.values)}` : result.error) : ''}
      </div>
    </div>
  );
});

function preview(values: unknown[]): string {
  // Texts quoted: a prompt may have commas of its own.
  const shown = values.slice(0, 8).map((v) => (typeof v === 'string' ? JSON.stringify(v.length > 24 ? `${v.slice(0, 23)}…` : v) : String(v)));
  return shown.join(', ') + (values.length > 8 ? ', …' : '');
}

function Values({ axis, decl, onChange }: { axis: SweepAxis; decl: InputDecl | undefined; onChange: (text: string) => void }) {
  if (decl?.choices?.length) {
    // A choices input: tick the values. The order as written stays (a file may say `[dpmpp_2m, euler]`);
    // a new tick goes last.
    const list = axis.text.split(/[,\s]+/).filter(Boolean);
    const picked = new Set(list);
    return (
      <div className="s-choices" data-testid="sweep-values" role="group" aria-label={`${axis.input} values`}>
        {decl.choices.map((c) => (
          <label key={c}>
            <input
              type="checkbox"
              checked={picked.has(c)}
              onChange={(e) => onChange((e.target.checked ? [...list, c] : list.filter((x) => x !== c)).join(', '))}
            />
            {c}
          </label>
        ))}
      </div>
    );
  }
  if (decl && oneValueALine(decl)) {
    return (
      <textarea
        className="s-values"
        data-testid="sweep-values"
        rows={3}
        placeholder="one value a line"
        value={axis.text}
        onChange={(e) => onChange(e.target.value)}
      />
    );
  }
  return (
    <input
      className="s-values"
      data-testid="sweep-values"
      placeholder={decl?.type === 'bool' ? 'true, false' : '1, 2, 3  or  4..8 step 2'}
      value={axis.text}
      onChange={(e) => onChange(e.target.value)}
    />
  );
}

/** The grid viewer: the sweep queued from here, cells filling in as their runs finish. */
function SweepResults() {
  const view = useSweepStore((s) => s.view);
  const open = useSweepStore((s) => s.open);
  const name = useEditor((s) => s.name);
  const layout = useMemo(() => (view ? gridLayout(view.cells, view.rows, view.columns, view.mode) : null), [view]);
  if (!view || !layout) return null;
  const done = view.cells.filter((c) => sweepFinished(c.status)).length;
  const finished = sweepFinished(view.status);
  const corner = view.mode === 'zip' ? '' : `${view.rows.join(' × ')}${view.rows.length && view.columns.length ? ' ↓  ' : ''}${view.columns.join(' × ')}${view.columns.length ? ' →' : ''}`;
  return (
    <section className="s-results" data-testid="sweep-results" data-status={view.status}>
      <div className="h-line">
        <b>Sweep {view.id}</b>
        <span className={`st st-${view.status}`}>{view.status}</span>
        <span className="muted" data-testid="sweep-progress">
          {done}/{view.cells.length}
        </span>
        {view.workflow && view.workflow !== name && <span className="muted">of {view.workflow}</span>}
        <span className="grow" />
        {!finished && (
          <button className="btn small" onClick={() => void cancelSweep()} data-testid="sweep-cancel" title="cancel every cell not finished">
            ■ Cancel
          </button>
        )}
        {finished && (
          <button className="btn small" onClick={() => useSweepStore.setState({ view: null, open: null })} title="clear">
            ×
          </button>
        )}
      </div>
      <div className="s-grid-wrap">
        <table className="s-grid" data-testid="sweep-grid">
          <thead>
            <tr>
              <th className="s-corner">{corner}</th>
              {layout.colLabels.map((l, c) => (
                <th key={c} scope="col">
                  {l}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {layout.at.map((row, r) => (
              <tr key={r}>
                <th scope="row">{layout.rowLabels[r]}</th>
                {row.map((i, c) => (
                  <td key={c}>{i == null ? null : <Cell index={i} />}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {view.grid && (
        <figure className="s-composed" data-testid="sweep-composed">
          <a href={withToken(view.grid)} target="_blank" rel="noreferrer" title="the grid the server composed, full size">
            <img src={withToken(view.grid)} alt={`grid of sweep ${view.id}`} data-testid="sweep-grid-image" />
          </a>
          <figcaption>
            <a href={withToken(view.grid)} target="_blank" rel="noreferrer" data-testid="sweep-grid-link">
              open grid.png
            </a>
          </figcaption>
        </figure>
      )}
      {open != null && <CellView index={open} />}
    </section>
  );
}

const Cell = memo(function Cell({ index }: { index: number }) {
  const cell = useSweepStore(useShallow((s) => s.view?.cells[index]));
  if (!cell) return null;
  const values = Object.entries(cell.values)
    .map(([k, v]) => `${k} = ${v}`)
    .join('\n');
  return (
    <button
      className="s-cell"
      data-testid={`sweep-cell-${index}`}
      data-status={cell.status}
      disabled={!cell.image}
      title={`cell ${index + 1}, run #${cell.run}: ${cell.status}\n${values}`}
      onClick={() => useSweepStore.setState({ open: index })}
    >
      {cell.image ? <img src={withToken(cell.image)} alt={`cell ${index + 1}`} /> : <span className={`st st-${cell.status}`}>{cell.status}</span>}
    </button>
  );
});

/** One cell full size, with "load this cell". */
function CellView({ index }: { index: number }) {
  const cell = useSweepStore((s) => s.view?.cells[index]);
  const close = () => useSweepStore.setState({ open: null });
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => e.key === 'Escape' && close();
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, []);
  if (!cell?.image) return null;
  return (
    <div className="palette-back" onMouseDown={close}>
      <div className="dialog s-cellview" onMouseDown={(e) => e.stopPropagation()} data-testid="sweep-cellview">
        <b>
          Cell {index + 1} · run #{cell.run}
        </b>
        <img src={withToken(cell.image)} alt={`cell ${index + 1} full size`} />
        <ul>
          {Object.entries(cell.values).map(([k, v]) => (
            <li key={k}>
              <code>{k}</code> = {String(v)}
            </li>
          ))}
        </ul>
        <div>
          <button
            className="btn primary"
            data-testid="sweep-load-cell"
            title="put this cell's own workflow (its values, no sweep) on the canvas"
            onClick={() => {
              close();
              void loadCell(index);
            }}
          >
            Load this cell
          </button>
          <a className="btn" href={withToken(cell.image)} target="_blank" rel="noreferrer">
            Open image
          </a>
          <button className="btn" onClick={close}>
            Close
          </button>
        </div>
      </div>
    </div>
  );
}
