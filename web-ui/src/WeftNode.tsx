// The one node component: drawn from the node type's declaration, so a type added in Rust needs no UI change.
import { memo, useCallback, useEffect, useState } from 'react';
import { Handle, Position, useStore, type NodeProps, type ReactFlowState } from '@xyflow/react';
import { api, withToken, type Constant, type Diagnostic, type InputDecl, type NodeType } from './api';
import type { GEdge, GNode, WeftData } from './graph';
import { useEditor } from './store';
import { useRunStore, type NodeRunState } from './runstore';
import { dragStyles, typeColour } from './types';
import { queueRun } from './live';
import { openMaskEditor } from './maskstore';
import { isImageFile, isMultiline } from './nodesize';
import { openCanvasImages } from './ImageViewer';
import { inputsName } from './paths';

const EMPTY: Diagnostic[] = [];

/** Which inputs of each node are linked, and from where; one index per edges array. */
const linkIndex = new WeakMap<GEdge[], Map<string, string>>();
function linkedOf(edges: GEdge[], node: string): string {
  let idx = linkIndex.get(edges);
  if (!idx) {
    const m = new Map<string, string[]>();
    for (const e of edges) {
      const l = m.get(e.target) ?? [];
      l.push(`${e.targetHandle}=${e.source}.${e.sourceHandle}`);
      m.set(e.target, l);
    }
    idx = new Map([...m].map(([k, v]) => [k, v.sort().join('|')]));
    linkIndex.set(edges, idx);
  }
  return idx.get(node) ?? '';
}

/** Zoomed far out, nodes draw plain text instead of form fields (same size, a fraction of the DOM). */
const farSelector = (s: ReactFlowState) => s.transform[2] < 0.45;

function WeftNodeView({ id, data, selected }: NodeProps<GNode>) {
  // React Flow draws every node once to measure it, even off screen: that first pass is drawn
  // light (same size, no form fields), so opening a big graph costs little; the nodes left on
  // screen then get their fields.
  const measured = useStore(useCallback((s: ReactFlowState) => !!s.nodeLookup.get(id)?.internals.handleBounds, [id]));
  const far = useStore(farSelector) || !measured;
  const { kind, values, mode, look } = data as WeftData;
  const decl = useEditor(useCallback((s) => s.catalogue.get(kind), [kind]));
  const linkedKey = useEditor(useCallback((s) => linkedOf(s.edges, id), [id]));
  const run = useRunStore(useCallback((s) => s.nodes[id], [id]));
  const diags = useRunStore(useCallback((s) => s.diagnostics[id] ?? EMPTY, [id]));
  const linked = new Map(linkedKey ? linkedKey.split('|').map((p) => p.split('=') as [string, string]) : []);
  const nodeDiags = diags.filter((d) => !d.input || !decl?.inputs.some((i) => i.name === d.input));
  const state = run?.state && run.state !== 'idle' ? run.state : undefined;
  const collapsed = look?.collapsed === true;

  return (
    <div
      className={collapsed ? 'wn wn-collapsed' : 'wn'}
      data-state={state}
      data-mode={mode}
      data-invalid={diags.length > 0 || undefined}
      data-selected={selected || undefined}
      data-collapsed={collapsed || undefined}
      data-testid={`node-${id}`}
    >
      <header className="wn-head" style={look?.color ? { background: look.color } : undefined}>
        <button
          className="wn-fold nodrag"
          title={collapsed ? 'expand (Alt+C)' : 'collapse to this header (Alt+C)'}
          aria-label={collapsed ? 'expand' : 'collapse'}
          data-testid="collapse"
          onClick={() => useEditor.getState().setLook([id], { collapsed: !collapsed })}
        >
          {collapsed ? '▸' : '▾'}
        </button>
        <span className="wn-id" title={look?.title ? `${look.title} (id ${id}): ${decl?.doc ?? ''}` : decl?.doc} data-testid="node-title">
          {look?.title || id}
        </span>
        <span className="wn-kind">{look?.title ? `${id} · ${kind}` : kind}</span>
        {mode && (
          <span className={`wn-mode wn-mode-${mode}`} data-testid="node-mode" title={mode === 'bypass' ? 'bypassed (Ctrl+B): each output is its first input of the same type' : 'muted (Ctrl+M): not run, nor what needs it'}>
            {mode === 'bypass' ? 'bypassed' : 'muted'}
          </span>
        )}
        <Badge run={run} />
        <button
          className="wn-run nodrag"
          title="Run to here: run only what this node needs"
          onClick={() => void queueRun(id)}
        >
          ▶
        </button>
      </header>
      {collapsed && decl && <CollapsedHandles decl={decl} />}
      {!collapsed && <Status run={run} />}
      {!collapsed && !decl && <div className="wn-diag">unknown node type {kind}</div>}
      {!collapsed && decl && (
        <div className="wn-body">
          {decl.outputs.map((o) => (
            <div className="wn-row wn-out" key={o.name} title={`${o.type}: ${o.doc}`}>
              <span className="wn-label">{o.name}</span>
              <Handle
                type="source"
                position={Position.Right}
                id={o.name}
                className={`h h-out t-${o.type}`}
                style={{ background: typeColour(o.type) }}
              />
            </div>
          ))}
          {decl.inputs.map((i) => (
            <InputRow
              key={i.name}
              node={id}
              decl={i}
              value={values[i.name]}
              link={linked.get(i.name)}
              far={far}
              diags={diags.filter((d) => d.input === i.name)}
            />
          ))}
        </div>
      )}
      {!collapsed && nodeDiags.map((d, k) => (
        <DiagLine key={k} d={d} />
      ))}
      {!collapsed && kind === 'LoadImage' && <MaskButton node={id} value={values.path} />}
      {!collapsed && run?.value !== undefined && (
        <div className="wn-value nodrag" data-testid="value" title="what this output node shows, from the last run">
          {String(run.value)}
        </div>
      )}
      {!collapsed && <Images run={run} />}
    </div>
  );
}

export const WeftNode = memo(WeftNodeView);

/**
 * A collapsed node keeps every socket (its links still need ends to be drawn to), stacked
 * unseen on the header's sides; links are made on the expanded node.
 */
function CollapsedHandles({ decl }: { decl: NodeType }) {
  return (
    <div className="wn-folded-handles">
      {decl.inputs.map((i) => (
        <Handle key={`i-${i.name}`} type="target" position={Position.Left} id={i.name} isConnectable={false} className="h h-folded" />
      ))}
      {decl.outputs.map((o) => (
        <Handle key={`o-${o.name}`} type="source" position={Position.Right} id={o.name} isConnectable={false} className="h h-folded" />
      ))}
    </div>
  );
}

/** LoadImage: paint the area to inpaint on its image (MaskEditor.tsx). */
function MaskButton({ node, value }: { node: string; value: Constant | undefined }) {
  if (typeof value !== 'string' || !value) return null;
  return (
    <div className="wn-mask nodrag">
      <button className="btn small" data-testid="open-mask-editor" onClick={() => openMaskEditor(node)} title="paint the area to inpaint (saved as a new image whose painted pixels have alpha 0)">
        Open in mask editor
      </button>
    </div>
  );
}

/** The state badge in the header: queued, running i/n, cached, done with its time, failed. */
function Badge({ run }: { run?: NodeRunState }) {
  if (!run || run.state === 'idle') return null;
  const text =
    run.state === 'running'
      ? `running${run.total ? ` ${run.step}/${run.total}` : ''}`
      : run.state === 'done'
        ? `done ${fmtMicros(run.micros)}`
        : run.state === 'queued' && run.innerDone
          ? `queued ${run.innerDone}/${run.innerTotal}`
          : run.state;
  return (
    <span
      className={`st st-${run.state}`}
      data-testid="node-status"
      title={run.innerTotal ? `${run.innerDone ?? 0} of the ${run.innerTotal} nodes inside this subgraph that this run needs are done` : undefined}
    >
      {text}
    </span>
  );
}

/** Under the header: the step bar, why the node ran, a run error. */
function Status({ run }: { run?: NodeRunState }) {
  if (!run || run.state === 'idle') return null;
  const pct = run.total ? Math.round(((run.step ?? 0) / run.total) * 100) : 0;
  const why = run.why && run.why.length > 0 && run.state !== 'cached' ? run.why : null;
  if (!(run.state === 'running' && run.total) && !why && !run.error) return null;
  return (
    <div className="wn-status">
      {run.state === 'running' && run.total ? (
        <div className="bar">
          <div style={{ width: `${pct}%` }} />
        </div>
      ) : null}
      {why && (
        <div className="wn-why" title="why this node ran instead of coming from the cache">
          {why.join(' · ')}
        </div>
      )}
      {run.error && <div className="wn-diag">{run.error}</div>}
    </div>
  );
}

function fmtMicros(m?: number): string {
  if (m == null) return '';
  if (m < 1000) return `${m} µs`;
  if (m < 1e6) return `${(m / 1000).toFixed(1)} ms`;
  return `${(m / 1e6).toFixed(2)} s`;
}

function Images({ run }: { run?: NodeRunState }) {
  const images = run?.images ?? [];
  const preview = run?.state === 'running' ? run.preview : undefined;
  if (!preview && images.length === 0) return null;
  return (
    <div className="wn-images nodrag">
      {preview ? (
        <img src={preview} alt="step preview" className="wn-preview" />
      ) : (
        images.slice(-4).map((u) => (
          <a
            key={u}
            href={withToken(u)}
            target="_blank"
            rel="noreferrer"
            title="open in the viewer (zoom, step through the run's images, compare)"
            onClick={(e) => {
              if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
              e.preventDefault();
              openCanvasImages(u);
            }}
          >
            <img src={withToken(u)} alt="result" className="wn-result" loading="lazy" decoding="async" />
          </a>
        ))
      )}
    </div>
  );
}

function DiagLine({ d }: { d: Diagnostic }) {
  return (
    <div className="wn-diag" data-testid="diagnostic">
      {d.pos && (
        <span className="pos" title={d.file ? 'line:column in the subgraph file' : 'line:column in the workflow file'}>
          {d.file ? `${d.file.replace(/^.*[\\/]/, '')} ` : ''}
          {d.pos.line}:{d.pos.column ?? d.pos.col}{' '}
        </span>
      )}
      {d.message}
      {d.hint && <div className="hint">{d.hint}</div>}
    </div>
  );
}


interface RowProps {
  node: string;
  decl: InputDecl;
  value: Constant | undefined;
  link?: string;
  far: boolean;
  diags: Diagnostic[];
}

const InputRow = memo(function InputRow({ node, decl, value, link, far, diags }: RowProps) {
  const acc = dragStyles(useEditor.getState().types).classes[decl.type] ?? `t-${decl.type}`;
  const block = !link && (isMultiline(decl) || isImageFile(decl));
  return (
    <div className="wn-in" data-input={decl.name} data-invalid={diags.length > 0 || undefined}>
      <div className="wn-row" title={`${decl.type}${decl.optional ? ', optional' : ''}: ${decl.doc}`}>
        <Handle
          type="target"
          position={Position.Left}
          id={decl.name}
          className={`h h-in ${acc}${decl.link_only ? '' : ' h-widget'}`}
          style={{ background: typeColour(decl.type) }}
        />
        <span className="wn-label">{decl.name}</span>
        {link ? (
          <span className="wn-linked" title="linked; remove the link to edit the value here">
            ← {link}
            {!decl.link_only && (
              <button className="nodrag x" title="unlink: back to a widget" onClick={() => useEditor.getState().unlink(node, decl.name)}>
                ×
              </button>
            )}
          </span>
        ) : decl.link_only ? (
          <span className="wn-type" style={{ color: typeColour(decl.type) }}>
            {decl.type}
          </span>
        ) : block ? null : far ? (
          <span className="w-far">{value === undefined ? '' : String(value)}</span>
        ) : (
          <Widget node={node} decl={decl} value={value} />
        )}
      </div>
      {block && far && <div className="w-far-block">{value === undefined ? '' : String(value)}</div>}
      {block && !far && (isImageFile(decl) ? (
        <ImageUpload node={node} decl={decl} value={value} />
      ) : (
        <Widget node={node} decl={decl} value={value} />
      ))}
      {diags.map((d, k) => (
        <DiagLine key={k} d={d} />
      ))}
    </div>
  );
});

/** The widget the catalogue names for the input (`widget`, the engine's `Widget`). */
function Widget({ node, decl, value }: { node: string; decl: InputDecl; value: Constant | undefined }) {
  const set = (v: Constant) => useEditor.getState().setValue(node, decl.name, v);
  const text = value === undefined ? '' : String(value);
  const placeholder = decl.default !== undefined ? String(decl.default) : '';
  switch (decl.widget) {
    case 'choice':
      return <ChoiceField decl={decl} value={text} onChange={set} />;
    case 'image_file':
      // The files in the inputs folder when the server lists them; the upload button sits beside.
      return decl.choices?.length ? <ChoiceField decl={decl} value={text} onChange={set} /> : <TextField value={text} onChange={set} label={decl.name} placeholder={placeholder} />;
    case 'toggle':
      return (
        <label className="nodrag toggle">
          <input type="checkbox" checked={value === true} onChange={(e) => set(e.target.checked)} aria-label={decl.name} />
          <span />
        </label>
      );
    case 'number':
      return (
        <span className="w-num">
          <NumberField value={value} decl={decl} onChange={set} />
        </span>
      );
    case 'slider':
      return (
        <span className="w-num w-slider">
          <input
            type="range"
            className="nodrag nowheel"
            aria-label={`${decl.name} slider`}
            min={decl.min}
            max={decl.max}
            step={decl.step ?? (decl.type === 'float' ? 0.01 : 1)}
            value={typeof value === 'number' ? value : typeof decl.default === 'number' ? decl.default : (decl.min ?? 0)}
            onChange={(e) => set(Number(e.target.value))}
          />
          <NumberField value={value} decl={decl} onChange={set} />
        </span>
      );
    case 'seed':
      return (
        <span className="w-num">
          <NumberField value={value} decl={decl} onChange={set} />
          <button
            className="nodrag dice"
            title="random seed"
            onClick={() => set(Math.floor(Math.random() * Math.min(decl.max ?? 2 ** 32 - 1, 2 ** 32 - 1)))}
          >
            <svg width="12" height="12" viewBox="0 0 12 12" aria-hidden="true">
              <rect x="0.75" y="0.75" width="10.5" height="10.5" rx="2" fill="none" stroke="currentColor" strokeWidth="1.2" />
              <circle cx="3.5" cy="3.5" r="1" fill="currentColor" />
              <circle cx="6" cy="6" r="1" fill="currentColor" />
              <circle cx="8.5" cy="8.5" r="1" fill="currentColor" />
            </svg>
          </button>
        </span>
      );
    case 'multiline':
      return <TextField multiline value={text} onChange={set} label={decl.name} placeholder={placeholder} />;
    default:
      return <TextField value={text} onChange={set} label={decl.name} placeholder={placeholder} />;
  }
}

function ChoiceField({ decl, value, onChange }: { decl: InputDecl; value: string; onChange: (v: string) => void }) {
  const choices = decl.choices ?? [];
  const opts = choices.includes(value) || value === '' ? choices : [value, ...choices];
  return (
    <select className="nodrag w" value={value} onChange={(e) => onChange(e.target.value)} aria-label={decl.name}>
      {value === '' && <option value="">{decl.default !== undefined ? `${decl.default} (default)` : '—'}</option>}
      {opts.map((c) => (
        <option key={c} value={c}>
          {decl.choices_from === 'inputs' ? inputsName(c, choices) : c}
        </option>
      ))}
    </select>
  );
}

function TextField({
  value,
  onChange,
  label,
  multiline,
  placeholder,
}: {
  value: string;
  onChange: (v: string) => void;
  label: string;
  multiline?: boolean;
  placeholder?: string;
}) {
  const [text, setText] = useState(value);
  useEffect(() => setText(value), [value]);
  const props = {
    className: `nodrag nowheel w ${multiline ? 'w-text' : ''}`,
    value: text,
    'aria-label': label,
    placeholder,
    spellCheck: false,
    onChange: (e: { target: { value: string } }) => {
      setText(e.target.value);
      onChange(e.target.value);
    },
  };
  return multiline ? <textarea rows={2} {...props} /> : <input type="text" {...props} />;
}

function NumberField({ value, decl, onChange }: { value: Constant | undefined; decl: InputDecl; onChange: (v: number) => void }) {
  const [text, setText] = useState(value === undefined ? '' : String(value));
  useEffect(() => setText(value === undefined ? '' : String(value)), [value]);
  const isInt = decl.type !== 'float';
  return (
    <input
      type="number"
      className="nodrag nowheel w"
      aria-label={decl.name}
      value={text}
      placeholder={decl.default !== undefined ? String(decl.default) : ''}
      min={decl.min}
      max={decl.max}
      step={decl.step ?? decl.multiple_of ?? (isInt ? 1 : 0.1)}
      onChange={(e) => {
        setText(e.target.value);
        const n = isInt ? parseInt(e.target.value, 10) : parseFloat(e.target.value);
        if (Number.isFinite(n)) onChange(n);
      }}
    />
  );
}

function ImageUpload({ node, decl, value }: { node: string; decl: InputDecl; value: Constant | undefined }) {
  const [busy, setBusy] = useState(false);
  const name = value === undefined ? '' : String(value);
  const onFile = async (f: File | undefined) => {
    if (!f) return;
    setBusy(true);
    try {
      const stored = await api.upload(f);
      useEditor.getState().setValue(node, decl.name, stored);
      // The upload is an input image now: the path list offers it (named in the inputs folder).
      void api.nodes().then((types) => useEditor.getState().setCatalogue(types), () => undefined);
    } catch (e) {
      useEditor.getState().say(`upload failed: ${(e as Error).message}`, 'error');
    } finally {
      setBusy(false);
    }
  };
  const src = name ? withToken(`/api/uploads/${encodeURIComponent(name.split('/').pop()!)}`) : '';
  return (
    <div className="w-upload nodrag">
      <Widget node={node} decl={decl} value={value} />
      <label className="btn small">
        {busy ? 'uploading…' : 'upload'}
        <input type="file" accept="image/png,image/jpeg" hidden onChange={(e) => void onFile(e.target.files?.[0])} />
      </label>
      {src && <img className="wn-result" src={src} alt="" onError={(e) => ((e.target as HTMLImageElement).style.display = 'none')} />}
    </div>
  );
}
