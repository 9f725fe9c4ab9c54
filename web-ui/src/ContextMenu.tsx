// The right-click menus: on the canvas (add a node there, paste, select all, fit), on a node
// (rename, colour, collapse, bypass, mute, duplicate, delete; the mask painter on LoadImage)
// on a link (add a reroute point, delete) and on a reroute point (delete it, the links stay). Actions on a node act on the selection it belongs to, as keys do.
import { useEffect, useRef, useState } from 'react';
import { useEditor } from './store';
import { openMaskEditor } from './maskstore';

export type MenuAt =
  | { kind: 'canvas'; x: number; y: number; flow: { x: number; y: number } }
  | { kind: 'node'; x: number; y: number; node: string }
  | { kind: 'edge'; x: number; y: number; edge: string; flow: { x: number; y: number } }
  | { kind: 'reroute'; x: number; y: number; reroute: string };

/** ComfyUI's node colours (its LGraphCanvas.node_colors' title colours), and none. */
export const NODE_COLOURS: { name: string; color: string }[] = [
  { name: 'red', color: '#553333' },
  { name: 'brown', color: '#593930' },
  { name: 'green', color: '#335533' },
  { name: 'blue', color: '#333355' },
  { name: 'pale blue', color: '#3f5159' },
  { name: 'cyan', color: '#335555' },
  { name: 'purple', color: '#553355' },
  { name: 'yellow', color: '#665533' },
  { name: 'black', color: '#222222' },
];

export interface CanvasActions {
  addAt: (flow: { x: number; y: number }) => void;
  pasteAt: (flow: { x: number; y: number }) => void;
  canPaste: () => boolean;
  fit: () => void;
  /** The selected nodes into a new library subgraph (asks its name). */
  convert: () => void;
}

export function ContextMenu({ at, actions, onClose }: { at: MenuAt; actions: CanvasActions; onClose: () => void }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const away = (e: MouseEvent) => {
      if (!box.current?.contains(e.target as Node)) onClose();
    };
    const esc = (e: KeyboardEvent) => e.key === 'Escape' && onClose();
    window.addEventListener('mousedown', away, true);
    window.addEventListener('keydown', esc);
    return () => {
      window.removeEventListener('mousedown', away, true);
      window.removeEventListener('keydown', esc);
    };
  }, [onClose]);
  // Kept inside the window.
  const left = Math.min(at.x, window.innerWidth - 230);
  const top = Math.min(at.y, window.innerHeight - (at.kind === 'node' ? 360 : 160));
  return (
    <div ref={box} className="ctx" style={{ left, top }} data-testid="context-menu" onContextMenu={(e) => e.preventDefault()}>
      {at.kind === 'canvas' && <CanvasItems flow={at.flow} actions={actions} done={onClose} />}
      {at.kind === 'node' && <NodeItems node={at.node} done={onClose} actions={actions} />}
      {at.kind === 'edge' && (
        <>
          <Item label="Add reroute point" keys="dbl-click" testid="ctx-add-reroute" onClick={() => (useEditor.getState().addReroute(at.edge, at.flow), onClose())} />
          <Item label="Delete link" testid="ctx-delete-link" onClick={() => (useEditor.getState().removeEdge(at.edge), onClose())} />
        </>
      )}
      {at.kind === 'reroute' && (
        <Item label="Delete reroute point (links stay)" keys="Del" testid="ctx-delete-reroute" onClick={() => (useEditor.getState().removeReroute(at.reroute), onClose())} />
      )}
    </div>
  );
}

function Item({ label, keys, onClick, testid, disabled }: { label: string; keys?: string; onClick: () => void; testid: string; disabled?: boolean }) {
  return (
    <button className="ctx-item" onClick={onClick} data-testid={testid} disabled={disabled}>
      <span>{label}</span>
      {keys && <kbd>{keys}</kbd>}
    </button>
  );
}

function CanvasItems({ flow, actions, done }: { flow: { x: number; y: number }; actions: CanvasActions; done: () => void }) {
  return (
    <>
      <Item label="Add node here…" keys="dbl-click" testid="ctx-add" onClick={() => (done(), actions.addAt(flow))} />
      <Item label="Paste here" keys="Ctrl+V" testid="ctx-paste" disabled={!actions.canPaste()} onClick={() => (actions.pasteAt(flow), done())} />
      <Item label="Select all" keys="Ctrl+A" testid="ctx-select-all" onClick={() => (useEditor.getState().selectAll(), done())} />
      <Item label="Fit the workflow in view" keys="." testid="ctx-fit" onClick={() => (actions.fit(), done())} />
    </>
  );
}

function NodeItems({ node, done, actions }: { node: string; done: () => void; actions: CanvasActions }) {
  const ed = useEditor.getState();
  const n = useEditor((s) => s.nodes.find((x) => x.id === node));
  const count = useEditor((s) => s.nodes.filter((x) => x.selected).length);
  const [renaming, setRenaming] = useState(false);
  const [title, setTitle] = useState(n?.data.look?.title ?? '');
  if (!n) return null;
  const selected = () => ed.nodes.filter((x) => x.selected).map((x) => x.id);
  const several = count > 1 ? ` (${count} nodes)` : '';
  if (renaming) {
    return (
      <form
        className="ctx-rename"
        onSubmit={(e) => {
          e.preventDefault();
          useEditor.getState().setLook([node], { title: title.trim() });
          done();
        }}
      >
        <label className="muted">Title of {node} (empty: show the id)</label>
        <input autoFocus value={title} onChange={(e) => setTitle(e.target.value)} aria-label="node title" data-testid="ctx-title" />
      </form>
    );
  }
  return (
    <>
      <div className="ctx-head">{n.data.look?.title ? `${n.data.look.title} (${node})` : node}{several}</div>
      <Item label="Rename…" testid="ctx-rename" onClick={() => setRenaming(true)} />
      <div className="ctx-colours" role="group" aria-label="colour">
        {NODE_COLOURS.map((c) => (
          <button
            key={c.name}
            className="swatch"
            title={c.name}
            aria-label={`colour ${c.name}`}
            data-testid={`ctx-colour-${c.name.replace(' ', '-')}`}
            style={{ background: c.color }}
            onClick={() => (useEditor.getState().setLook(selected(), { color: c.color }), done())}
          />
        ))}
        <button className="swatch none" title="no colour" aria-label="no colour" data-testid="ctx-colour-none" onClick={() => (useEditor.getState().setLook(selected(), { color: '' }), done())}>
          ×
        </button>
      </div>
      <Item label={n.data.look?.collapsed ? 'Expand' : 'Collapse'} keys="Alt+C" testid="ctx-collapse" onClick={() => (useEditor.getState().toggleCollapse(), done())} />
      <Item label={n.data.mode === 'bypass' ? 'Stop bypassing' : 'Bypass'} keys="Ctrl+B" testid="ctx-bypass" onClick={() => (useEditor.getState().toggleMode('bypass'), done())} />
      <Item label={n.data.mode === 'mute' ? 'Unmute' : 'Mute'} keys="Ctrl+M" testid="ctx-mute" onClick={() => (useEditor.getState().toggleMode('mute'), done())} />
      <Item label="Duplicate" keys="Shift+D" testid="ctx-duplicate" onClick={() => (useEditor.getState().duplicateSelected(), done())} />
      <Item label="Convert to subgraph…" testid="ctx-convert" onClick={() => (done(), actions.convert())} />
      {n.data.kind === 'LoadImage' && <Item label="Open in mask editor" testid="ctx-mask" onClick={() => (openMaskEditor(node), done())} />}
      <Item label="Delete" keys="Del" testid="ctx-delete" onClick={() => (useEditor.getState().deleteSelected(), done())} />
    </>
  );
}
