import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import {
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  useReactFlow,
  useStore,
  type ReactFlowState,
  type Connection,
  type FinalConnectionState,
  type IsValidConnection,
  type OnConnectStartParams,
} from '@xyflow/react';
import '@xyflow/react/dist/base.css';
import './app.css';
import { api, type Diagnostic, type NodeType, type WorkflowDoc } from './api';
import { linkProblem, nameForImport, type GEdge, type GNode } from './graph';
import { hasClipboard, useEditor, type PendingLink } from './store';
import { followOpenFile } from './address';
import { ContextMenu, type CanvasActions, type MenuAt } from './ContextMenu';
import { MaskEditor } from './MaskEditor';
import { ImageViewer } from './ImageViewer';
import { viewerOpen } from './viewer';
import { extractSubgraph } from './extract';
import { useMaskStore } from './maskstore';
import { useRunStore, groupDiagnostics, forgetShownRun } from './runstore';
import { WeftNode, setAcceptClasses } from './WeftNode';
import { GroupNode, groupChanges, groupNodes } from './groups';
import { SHORTCUTS, runShortcut, type ShortcutContext } from './shortcuts';
import { Palette } from './Palette';
import { History } from './History';
import { SweepPanel } from './Sweep';
import { useSweepStore } from './sweeprun';
import { cancelRun, connect, queueRun, reattach } from './live';
import { pngWorkflowText } from './png';
import { accepts, typeColour } from './types';

const nodeTypes = { weft: WeftNode, group: GroupNode };

/**
 * Fits the view once the nodes are drawn, but never below half size: a big graph opens readable
 * around its centre (and only the nodes on screen are drawn); `.` or the fit button shows it all.
 * With no nodes it does nothing (React Flow would fit the first node added later).
 */
function fitSoon(rf: { fitView: (o: { padding: number; maxZoom: number; minZoom: number }) => unknown; setViewport: (v: { x: number; y: number; zoom: number }) => unknown }) {
  requestAnimationFrame(() => {
    if (useEditor.getState().nodes.length > 0) rf.fitView({ padding: 0.15, maxZoom: 1, minZoom: 0.5 });
    else rf.setViewport({ x: 0, y: 0, zoom: 1 });
    (window as unknown as { __weftFitted?: number }).__weftFitted = performance.now();
  });
}

/** Save; a new workflow with no file yet (an import) asks for its name first. */
function saveOrAsk(): Promise<boolean> {
  const ed = useEditor.getState();
  if (ed.name) return ed.save();
  return askName('Save the new workflow as', ed.suggest ?? 'untitled').then((n) => (n ? useEditor.getState().saveAs(n) : false));
}

function saveAsAsk(): Promise<boolean> {
  const { name, suggest } = useEditor.getState();
  return askName('Save as', name ? `${name}-copy` : suggest ?? 'untitled').then((n) => (n ? useEditor.getState().saveAs(n) : false));
}

/**
 * The selected nodes become a library subgraph: lib/NAME.yaml is written (never over an existing
 * file), NAME joins the catalogue as a node type, and one NAME node replaces them on the canvas,
 * wired as they were (an undoable, unsaved edit). Its inner nodes run to the same cache keys.
 */
async function convertToSubgraph() {
  const ed = useEditor.getState();
  const selected = new Set(ed.nodes.filter((n) => n.selected).map((n) => n.id));
  if (selected.size === 0) return ed.say('select the nodes to put in the subgraph first', 'error');
  const kinds = [...new Set(ed.nodes.filter((n) => selected.has(n.id)).map((n) => n.data.kind))].join('');
  let suggest = kinds.slice(0, 40) || 'Subgraph';
  for (let i = 2; ed.catalogue.has(suggest); i++) suggest = `${kinds.slice(0, 40)}${i}`;
  const name = await askName(`Convert ${selected.size} node${selected.size === 1 ? '' : 's'} to a library subgraph (workflows/lib/NAME.yaml, a node type)`, suggest);
  if (!name) return;
  if (useEditor.getState().catalogue.has(name)) return ed.say(`a node type named ${name} exists: choose another name`, 'error');
  let extracted;
  try {
    extracted = extractSubgraph(useEditor.getState().fileDoc(), selected, useEditor.getState().catalogue, name);
  } catch (e) {
    return ed.say(`cannot convert: ${(e as Error).message}`, 'error');
  }
  try {
    await api.create(`lib/${name}`, extracted.library);
  } catch (e) {
    return ed.say(`cannot write lib/${name}.yaml: ${(e as Error).message}`, 'error');
  }
  try {
    useEditor.getState().setCatalogue(await api.nodes());
  } catch (e) {
    return ed.say(`wrote lib/${name}.yaml, but cannot read the node catalogue again: ${(e as Error).message}`, 'error');
  }
  const now = useEditor.getState();
  now.checkpoint();
  now.loadDoc(extracted.workflow, true);
  useEditor.setState((s) => ({ nodes: s.nodes.map((n) => (n.selected === (n.id === extracted.node) ? n : { ...n, selected: n.id === extracted.node })) }));
  const inputs = Object.keys(extracted.library.inputs).length;
  const outputs = Object.keys(extracted.library.outputs).length;
  now.say(`wrote lib/${name}.yaml (${inputs} input${inputs === 1 ? '' : 's'}, ${outputs} output${outputs === 1 ? '' : 's'}); ${selected.size} nodes are now one ${name} node: save to keep it, Ctrl+Z to undo`);
}

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/**
 * A ComfyUI file (API or UI JSON, or a PNG ComfyUI saved) converted by the server's importer,
 * opened as a new unsaved workflow; Save asks for its name, suggesting one from the file name
 * that no workflow has. The server's message, when it refuses the file, goes to the toast.
 */
async function importComfy(f: File, fit: () => void) {
  const ed = useEditor.getState();
  if (ed.dirty && !confirm(`Discard unsaved edits to ${ed.name ?? 'this workflow'}?`)) return;
  let r;
  try {
    r = await api.importComfy(f);
  } catch (e) {
    ed.say(`cannot import ${f.name}: ${(e as Error).message}`, 'error');
    return;
  }
  await ed.refreshList();
  const taken = new Set(useEditor.getState().workflows.map((w) => w.name));
  const suggest = nameForImport(f.name, (n) => taken.has(n));
  forgetShownRun();
  useEditor.getState().openImported(r.workflow, r.diagnostics ?? [], suggest);
  const count = Object.keys(r.workflow.nodes).length;
  const notes = r.notes?.length ? `\n${r.notes.map((n) => n.text).join('\n')}` : '';
  ed.say(`imported ${count} node${count === 1 ? '' : 's'} from ${f.name} (ComfyUI ${r.format}), not saved yet: Save asks for a name${notes}`);
  fit();
}

const proOptions = { hideAttribution: true };
const defaultEdgeOptions = { type: 'default' };

export function App() {
  return (
    <ReactFlowProvider>
      <Editor />
    </ReactFlowProvider>
  );
}

/** Zoomed out so far that no text reads: the nodes' bodies are not painted (their size stays). */
const tinySelector = (s: ReactFlowState) => s.transform[2] < 0.2;

function Editor() {
  const tiny = useStore(tinySelector);
  const nodes = useEditor((s) => s.nodes);
  const edges = useEditor((s) => s.edges);
  const types = useEditor((s) => s.types);
  const onWeftNodesChange = useEditor((s) => s.onNodesChange);
  const groups = useEditor((s) => s.groups);
  const groupDrawn = useMemo(() => groupNodes(groups), [groups]);
  const shown = useMemo(() => (groupDrawn.length ? [...groupDrawn, ...nodes] : nodes), [groupDrawn, nodes]);
  const onNodesChange = useCallback(
    (changes: Parameters<typeof onWeftNodesChange>[0]) => {
      const rest = groupChanges(changes);
      if (rest.length) onWeftNodesChange(rest);
    },
    [onWeftNodesChange],
  );
  const onEdgesChange = useEditor((s) => s.onEdgesChange);
  const rf = useReactFlow<GNode, GEdge>();
  const wrap = useRef<HTMLDivElement>(null);
  const mouse = useRef({ x: 200, y: 200 });
  const [palette, setPalette] = useState<{ at: { x: number; y: number }; link?: PendingLink } | null>(null);
  const [showHistory, setShowHistory] = useState(false);
  const [showHelp, setShowHelp] = useState(false);
  const [showSweep, setShowSweep] = useState(false);
  // A sweep shown again after a reload opens its panel (sweeprun.ts counts them).
  const reattachedSweeps = useSweepStore((s) => s.reattached);
  useEffect(() => setShowSweep((shown) => shown || reattachedSweeps > 0), [reattachedSweeps]);
  const [ready, setReady] = useState(false);
  const [menu, setMenu] = useState<MenuAt | null>(null);
  /** The files opened on the way into a library subgraph (double-click), for the breadcrumb. */
  const [trail, setTrail] = useState<string[]>([]);
  const closeMenu = useCallback(() => setMenu(null), []);

  // The address and the tab's title follow the open file.
  useEffect(() => followOpenFile(useEditor), []);

  // Catalogue, file list, the file named in the URL, the live connection.
  useEffect(() => {
    (async () => {
      const ed = useEditor.getState();
      try {
        ed.setCatalogue(await api.nodes());
      } catch (e) {
        ed.say(`cannot read the node catalogue: ${(e as Error).message}`, 'error');
      }
      await ed.refreshList();
      const fromHash = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
      const list = useEditor.getState().workflows;
      const first = fromHash || (list.find((w) => w.name === 'txt2img') ?? list[0])?.name;
      if (first) await ed.load(first);
      setReady(true);
      fitSoon(rf);
      connect();
      void reattach();
    })();
    const onHash = () => {
      const n = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
      if (n && n !== useEditor.getState().name) void openFile(n);
    };
    window.addEventListener('hashchange', onHash);
    const beforeUnload = (e: BeforeUnloadEvent) => {
      if (useEditor.getState().dirty) e.preventDefault();
    };
    window.addEventListener('beforeunload', beforeUnload);
    return () => {
      window.removeEventListener('hashchange', onHash);
      window.removeEventListener('beforeunload', beforeUnload);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  const openFile = useCallback(
    async (name: string) => {
      const ed = useEditor.getState();
      if (ed.dirty && !confirm(`Discard unsaved edits to ${ed.name}?`)) return;
      forgetShownRun();
      await ed.load(name);
      fitSoon(rf);
    },
    [rf],
  );

  // Handle classes for dimming incompatible sockets while a link is dragged.
  const dragCss = useMemo(() => {
    const all = new Set<string>();
    for (const t of types) {
      for (const i of t.inputs) all.add(i.type);
      for (const o of t.outputs) all.add(o.type);
    }
    const acc: Record<string, string> = {};
    const rules: string[] = [];
    for (const x of all) {
      const ok = [...all].filter((t) => accepts(x, t));
      acc[x] = ok.map((t) => `acc-${t}`).join(' ');
      rules.push(`.drag-in-${x} .h-out${ok.map((t) => `:not(.t-${t})`).join('')}{opacity:.15}`);
      rules.push(`.drag-out-${x} .h-in:not(.acc-${x}){opacity:.15}`);
    }
    setAcceptClasses(acc);
    return rules.join('\n');
  }, [types]);

  const handleType = useCallback((node: string, handle: string, kind: 'source' | 'target') => {
    const s = useEditor.getState();
    const n = s.nodes.find((x) => x.id === node);
    const t = n && s.catalogue.get(n.data.kind);
    return kind === 'source'
      ? t?.outputs.find((o) => o.name === handle)?.type
      : t?.inputs.find((i) => i.name === handle)?.type;
  }, []);

  const onConnectStart = useCallback(
    (_: unknown, p: OnConnectStartParams) => {
      if (!p.nodeId || !p.handleId || !p.handleType) return;
      const t = handleType(p.nodeId, p.handleId, p.handleType);
      if (t && wrap.current) wrap.current.dataset.drag = `${p.handleType === 'source' ? 'drag-out' : 'drag-in'}-${t}`;
      if (wrap.current) wrap.current.className = `canvas ${wrap.current.dataset.drag ?? ''}`;
    },
    [handleType],
  );

  const onConnectEnd = useCallback(
    (e: MouseEvent | TouchEvent, state: FinalConnectionState) => {
      if (wrap.current) wrap.current.className = 'canvas';
      if (state.isValid === false && state.fromHandle && state.toHandle) {
        const s = useEditor.getState();
        const from = state.fromHandle;
        const to = state.toHandle;
        const c =
          from.type === 'source'
            ? { source: from.nodeId, sourceHandle: from.id ?? null, target: to.nodeId, targetHandle: to.id ?? null }
            : { source: to.nodeId, sourceHandle: to.id ?? null, target: from.nodeId, targetHandle: from.id ?? null };
        const why = linkProblem(s.catalogue, new Map(s.nodes.map((n) => [n.id, n])), s.edges, c);
        if (why) s.say(`link refused: ${why}`, 'error');
        return;
      }
      if (state.isValid === null && !state.toNode && state.fromHandle?.id && state.fromNode) {
        // Dropped on empty canvas: pick a node that fits, it lands here, wired.
        const pt = 'changedTouches' in e ? e.changedTouches[0] : e;
        const t = handleType(state.fromNode.id, state.fromHandle.id, state.fromHandle.type);
        if (!t) return;
        setPalette({
          at: rf.screenToFlowPosition({ x: pt.clientX, y: pt.clientY }),
          link: { node: state.fromNode.id, handle: state.fromHandle.id, from: state.fromHandle.type, type: t },
        });
      }
    },
    [handleType, rf],
  );

  const isValidConnection: IsValidConnection<GEdge> = useCallback((c) => {
    const s = useEditor.getState();
    const byId = new Map<string, GNode>();
    for (const n of s.nodes) if (n.id === c.source || n.id === c.target) byId.set(n.id, n);
    // The cycle check needs every edge; the node map needs only the two ends.
    return linkProblem(s.catalogue, byId, s.edges, c) === null;
  }, []);

  const onConnect = useCallback((c: Connection) => useEditor.getState().connect(c), []);

  const onNodeDragStart = useCallback(() => useEditor.getState().checkpoint(), []);

  const openPalette = useCallback(() => {
    const b = wrap.current?.getBoundingClientRect();
    const p = mouse.current;
    const inside = b && p.x >= b.left && p.x <= b.right && p.y >= b.top && p.y <= b.bottom;
    const at = rf.screenToFlowPosition(inside ? p : { x: (b?.left ?? 0) + 300, y: (b?.top ?? 0) + 200 });
    setPalette({ at });
  }, [rf]);

  const pick = useCallback(
    (t: NodeType) => {
      if (!palette) return;
      useEditor.getState().addNode(t.type, palette.at, palette.link);
      setPalette(null);
      wrap.current?.focus();
    },
    [palette],
  );

  // Keys (shortcuts.ts, the one table the help lists): act on the canvas, never while typing in
  // a field or searching (Ctrl+S and the run keys work anywhere).
  useEffect(() => {
    const ctx: ShortcutContext = {
      save: (as) => void (as ? saveAsAsk() : saveOrAsk()),
      queue: () => void queueRun(),
      cancel: () => void cancelRun(),
      undo: () => useEditor.getState().undo(),
      redo: () => useEditor.getState().redo(),
      copy: () => useEditor.getState().copy(),
      paste: () => {
        const b = wrap.current?.getBoundingClientRect();
        const p = mouse.current;
        const inside = b && p.x >= b.left && p.x <= b.right && p.y >= b.top && p.y <= b.bottom;
        useEditor.getState().paste(inside ? rf.screenToFlowPosition(p) : undefined);
      },
      selectAll: () => useEditor.getState().selectAll(),
      deleteSelected: () => useEditor.getState().deleteSelected(),
      bypass: () => useEditor.getState().toggleMode('bypass'),
      mute: () => useEditor.getState().toggleMode('mute'),
      group: () => useEditor.getState().groupSelected(),
      collapse: () => useEditor.getState().toggleCollapse(),
      duplicate: () => useEditor.getState().duplicateSelected(),
      search: () => openPalette(),
      fit: () => rf.fitView({ padding: 0.15, maxZoom: 1, duration: 0 }),
      toggleHistory: () => setShowHistory((v) => !v),
      toggleHelp: () => setShowHelp((v) => !v),
    };
    const onKey = (e: KeyboardEvent) => {
      const el = e.target as HTMLElement;
      const typing = el.closest('input, textarea, select, [contenteditable]') !== null;
      // Keys belong to the mask painter while it is open.
      // Keys belong to the image viewer while it is open (it also stops them itself).
      runShortcut(e, ctx, typing || !!palette || useMaskStore.getState().node !== null || viewerOpen());
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [openPalette, palette, rf]);

  const fit = useCallback(() => fitSoon(rf), [rf]);

  // Right-click menus (ContextMenu.tsx): React Flow says what was clicked.
  const menuActions: CanvasActions = useMemo(
    () => ({
      addAt: (flow) => setPalette({ at: flow }),
      pasteAt: (flow) => useEditor.getState().paste(flow),
      canPaste: hasClipboard,
      fit: () => rf.fitView({ padding: 0.15, maxZoom: 1, duration: 0 }),
      convert: () => void convertToSubgraph(),
    }),
    [rf],
  );
  const onPaneContextMenu = useCallback(
    (e: MouseEvent | React.MouseEvent) => {
      e.preventDefault();
      setMenu({ kind: 'canvas', x: e.clientX, y: e.clientY, flow: rf.screenToFlowPosition({ x: e.clientX, y: e.clientY }) });
    },
    [rf],
  );
  const onNodeContextMenu = useCallback((e: React.MouseEvent, n: GNode) => {
    e.preventDefault();
    if (n.type !== 'weft') return;
    useEditor.getState().selectForMenu(n.id);
    setMenu({ kind: 'node', x: e.clientX, y: e.clientY, node: n.id });
  }, []);
  // Double-click a library subgraph's node: its file (lib/NAME) opens; the breadcrumb leads back.
  const onNodeDoubleClick = useCallback(
    async (e: React.MouseEvent, n: GNode) => {
      if (n.type !== 'weft' || (e.target as HTMLElement).closest('input, textarea, select, button')) return;
      const ed = useEditor.getState();
      const t = ed.catalogue.get(n.data.kind);
      if (t?.category !== 'subgraph') return;
      if (!/^[A-Za-z0-9_.-]+$/.test(n.data.kind)) return ed.say(`${n.data.kind} is a subgraph by path; open its file in your editor`, 'error');
      const from = ed.name;
      await openFile(`lib/${n.data.kind}`);
      if (useEditor.getState().name === `lib/${n.data.kind}` && from) setTrail((tr) => [...tr, from]);
    },
    [openFile],
  );
  const back = useCallback(
    async (to: number) => {
      const target = trail[to];
      await openFile(target);
      if (useEditor.getState().name === target) setTrail((tr) => tr.slice(0, to));
    },
    [trail, openFile],
  );
  const onEdgeContextMenu = useCallback((e: React.MouseEvent, edge: GEdge) => {
    e.preventDefault();
    setMenu({ kind: 'edge', x: e.clientX, y: e.clientY, edge: edge.id });
  }, []);
  const onSelectionContextMenu = useCallback((e: React.MouseEvent, chosen: GNode[]) => {
    e.preventDefault();
    const first = chosen.find((n) => n.type === 'weft');
    if (first) setMenu({ kind: 'node', x: e.clientX, y: e.clientY, node: first.id });
  }, []);

  const onDrop = useCallback(
    async (e: React.DragEvent) => {
      const f = e.dataTransfer.files?.[0];
      if (!f) return;
      e.preventDefault();
      const ed = useEditor.getState();
      const bytes = new Uint8Array(await f.arrayBuffer());
      const isPng = PNG_SIGNATURE.every((b, i) => bytes[i] === b);
      // A weft PNG carries its own workflow; any other PNG and JSON go to the ComfyUI importer,
      // which says when a PNG is a plain image.
      const text = isPng ? await pngWorkflowText(bytes) : null;
      if (!text) {
        const json = /\.json$/i.test(f.name) || f.type === 'application/json' || bytes.find((b) => b > 32) === 0x7b;
        if (isPng || json) await importComfy(f, fit);
        else ed.say(`${f.name}: drop a weft or ComfyUI PNG, or a ComfyUI workflow (.json)`, 'error');
        return;
      }
      let doc: WorkflowDoc;
      try {
        doc = JSON.parse(text);
      } catch {
        const YAML = await import('yaml');
        doc = YAML.parse(text);
      }
      ed.checkpoint();
      forgetShownRun();
      ed.loadDoc(doc, true);
      ed.say(`loaded the workflow from ${f.name}; save to write it to ${ed.name ?? 'a file'}.yaml`);
      fitSoon(rf);
    },
    [rf, fit],
  );

  return (
    <div className="app">
      <style>{dragCss}</style>
      <Toolbar openFile={openFile} onAdd={openPalette} onImport={(f) => void importComfy(f, fit)} history={showHistory} toggleHistory={() => setShowHistory((v) => !v)} sweep={showSweep} toggleSweep={() => setShowSweep((v) => !v)} />
      <ConflictBar />
      <Breadcrumb trail={trail} back={(i) => void back(i)} />
      <div className="main">
        <div
          ref={wrap}
          data-tiny={tiny || undefined}
          className="canvas"
          tabIndex={0}
          onMouseMove={(e) => (mouse.current = { x: e.clientX, y: e.clientY })}
          onDoubleClick={(e) => {
            if ((e.target as HTMLElement).classList.contains('react-flow__pane')) {
              mouse.current = { x: e.clientX, y: e.clientY };
              openPalette();
            }
          }}
          onDragOver={(e) => e.preventDefault()}
          onDrop={(e) => void onDrop(e)}
          data-testid="canvas"
        >
          <ReactFlow<GNode, GEdge>
            nodes={shown}
            edges={edges}
            nodeTypes={nodeTypes}
            onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange}
            onConnect={onConnect}
            onConnectStart={onConnectStart}
            onConnectEnd={onConnectEnd}
            isValidConnection={isValidConnection}
            onNodeDragStart={onNodeDragStart}
            onSelectionDragStart={onNodeDragStart}
            onPaneContextMenu={onPaneContextMenu}
            onNodeContextMenu={onNodeContextMenu}
            onEdgeContextMenu={onEdgeContextMenu}
            onNodeDoubleClick={(e, n) => void onNodeDoubleClick(e, n)}
            onSelectionContextMenu={onSelectionContextMenu}
            deleteKeyCode={null}
            selectionKeyCode="Shift"
            multiSelectionKeyCode={['Meta', 'Control']}
            zoomOnDoubleClick={false}
            minZoom={0.05}
            maxZoom={2}
            onlyRenderVisibleElements
            proOptions={proOptions}
            defaultEdgeOptions={defaultEdgeOptions}
            connectionRadius={24}
            colorMode="dark"
          >
            <Background gap={24} size={1} color="#2a2d33" />
            <Controls showInteractive={false} />
            <MiniMap pannable zoomable nodeColor={miniColour} maskColor="rgba(10,12,15,0.7)" />
          </ReactFlow>
          {ready && nodes.length === 0 && !useEditor.getState().broken && (
            <div className="empty-hint">
              Double-click the canvas or press <kbd>Space</kbd> to add a node · drop a weft PNG, or a ComfyUI PNG or JSON, to load its workflow
            </div>
          )}
          <Broken />
          <LooseDiagnostics />
          <Toast />
          {showHelp && <Help onClose={() => setShowHelp(false)} />}
          {menu && <ContextMenu at={menu} actions={menuActions} onClose={closeMenu} />}
        </div>
        {showSweep && <SweepPanel onClose={() => setShowSweep(false)} />}
        {showHistory && <History onClose={() => setShowHistory(false)} openFile={openFile} />}
      </div>
      {palette && (
        <Palette types={types} link={palette.link} onPick={pick} onClose={() => setPalette(null)} />
      )}
      <NameDialog />
      <MaskEditor />
      <ImageViewer />
    </div>
  );
}

/** The keys, drawn from the one table the key handler runs (shortcuts.ts). */
function Help({ onClose }: { onClose: () => void }) {
  return (
    <div className="help" data-testid="help" onClick={onClose}>
      <h3>Keys</h3>
      <table>
        <tbody>
          {SHORTCUTS.map((s) => (
            <tr key={s.keys}>
              <td>
                <kbd>{s.keys}</kbd>
              </td>
              <td>{s.does}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <p>Keys act on the canvas, not while you type in a field (save and run keys work anywhere). Shift+drag or Ctrl+click selects.</p>
    </div>
  );
}

function miniColour(n: GNode): string {
  const st = useRunStore.getState().nodes[n.id]?.state;
  if (st === 'failed') return '#e05555';
  if (st === 'running') return '#4fc3f7';
  if (st === 'cached') return '#5c6bc0';
  if (st === 'done') return '#66bb6a';
  const out = useEditor.getState().catalogue.get(n.data.kind)?.outputs[0]?.type;
  return out ? typeColour(out) : '#555';
}

function Toolbar({
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
      <button className="btn" onClick={() => void askName('New workflow', 'untitled').then((n) => (n ? ed().create(n) : false))}>
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

/** Where a double-click on subgraph nodes led: each file before is a step back. */
function Breadcrumb({ trail, back }: { trail: string[]; back: (index: number) => void }) {
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

function ConflictBar() {
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

function Broken() {
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

function LooseDiagnostics() {
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

function Toast() {
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

// A small name dialog (instead of window.prompt) for New and Save as.
let resolveName: ((v: string | null) => void) | null = null;
let setDialog: ((d: { title: string; value: string } | null) => void) | null = null;
function askName(title: string, value: string): Promise<string | null> {
  return new Promise((res) => {
    resolveName = res;
    setDialog?.({ title, value });
  });
}

function NameDialog() {
  const [d, setD] = useState<{ title: string; value: string } | null>(null);
  setDialog = setD;
  if (!d) return null;
  const done = (v: string | null) => {
    setD(null);
    resolveName?.(v);
    resolveName = null;
  };
  const ok = /^[A-Za-z0-9_.-]+$/.test(d.value);
  return (
    <div className="palette-back" onMouseDown={() => done(null)}>
      <form
        className="dialog"
        onMouseDown={(e) => e.stopPropagation()}
        onSubmit={(e) => {
          e.preventDefault();
          if (ok) done(d.value);
        }}
      >
        <b>{d.title}</b>
        <input
          autoFocus
          value={d.value}
          aria-label="workflow name"
          onChange={(e) => setD({ ...d, value: e.target.value })}
          onKeyDown={(e) => e.key === 'Escape' && done(null)}
        />
        <span className="muted">.yaml in the workflows folder{ok ? '' : ' — letters, digits, _ . - only'}</span>
        <div>
          <button className="btn primary" type="submit" disabled={!ok}>
            OK
          </button>
          <button className="btn" type="button" onClick={() => done(null)}>
            Cancel
          </button>
        </div>
      </form>
    </div>
  );
}

// Validation while editing: the server's diagnostics on nodes and inputs before anything runs.
// Messages change node heights, so they are not applied while a link is being dragged.
let lastValidated = '';
let timer: ReturnType<typeof setTimeout> | null = null;
const pending = (n: number) => ((window as unknown as { __weftValidating: number }).__weftValidating = n);
pending(0);
let generation = 0;
function validateSoon(delay: number) {
  if (timer) clearTimeout(timer);
  pending(1);
  const mine = ++generation;
  timer = setTimeout(async () => {
    if (document.querySelector('.react-flow__connectionline')) return validateSoon(150);
    // The canvas is the file as read or saved: the server's diagnostics of the file (located in
    // it) are on the nodes already; the canvas's would carry positions in a serialisation.
    if (!useEditor.getState().dirty) {
      lastValidated = '';
      return void (mine === generation && pending(0));
    }
    // A library subgraph's file is checked against its own `inputs:` and `outputs:`.
    const { iface } = useEditor.getState();
    const doc = { ...useEditor.getState().doc(), ...(iface ?? {}) };
    delete doc.layout;
    const key = JSON.stringify(doc);
    if (key === lastValidated) return void (mine === generation && pending(0));
    try {
      const r = await api.validate(doc);
      lastValidated = key;
      if (document.querySelector('.react-flow__connectionline')) {
        lastValidated = '';
        return validateSoon(150);
      }
      useRunStore.setState({ diagnostics: groupDiagnostics(r.diagnostics, false) });
    } catch {
      /* the server is away; the next edit tries again */
    }
    if (mine === generation) pending(0);
  }, delay);
}
useEditor.subscribe((s, prev) => {
  if (s.edges === prev.edges && s.nodes === prev.nodes) return;
  if (s.broken) return;
  validateSoon(300);
});
