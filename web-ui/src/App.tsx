import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import {
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  useKeyPress,
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
import type { NodeType } from './api';
import { linkProblem, type GEdge, type GNode } from './graph';
import { hasClipboard, useEditor, type PendingLink } from './store';
import { ContextMenu, type CanvasActions, type MenuAt } from './ContextMenu';
import { MaskEditor } from './MaskEditor';
import { ImageViewer } from './ImageViewer';
import { useRunStore, forgetShownRun } from './runstore';
import { WeftNode } from './WeftNode';
import { GroupNode, groupChanges, groupNodes } from './groups';
import { RerouteNode, rerouteChanges } from './RerouteNode';
import { RoutedEdge } from './RoutedEdge';
import { prunedReroutes, REROUTE_PREFIX, rerouteNodes, routedEdges, viaReroute } from './reroutes';
import { Palette } from './Palette';
import { History } from './History';
import { SweepPanel } from './Sweep';
import { useSweepStore } from './sweeprun';
import { dragStyles, typeColour } from './types';
import { convertToSubgraph, importComfy, openDroppedFile } from './fileactions';
import { fitSoon } from './fitview';
import { useShortcuts, useStartup, type CanvasKeys } from './editorhooks';
import { NameDialog } from './NameDialog';
import { Toolbar } from './Toolbar';
import { Breadcrumb, Broken, ConflictBar, Help, LooseDiagnostics, Toast } from './Notices';

const nodeTypes = { weft: WeftNode, group: GroupNode, reroute: RerouteNode };
const edgeTypes = { rerouted: RoutedEdge };

const proOptions = { hideAttribution: true };
const defaultEdgeOptions = { type: 'default' };
// Box select: Shift+drag, or Ctrl+drag as in ComfyUI (Ctrl+click still adds to the selection).
const selectionKeys = ['Shift', 'Control', 'Meta'];

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
  const allReroutes = useEditor((s) => s.reroutes);
  // Only the points whose links are there are drawn (the others stay in the state for undo).
  const reroutes = useMemo(() => prunedReroutes(allReroutes, edges).reroutes, [allReroutes, edges]);
  const selectedReroute = useEditor((s) => s.selectedReroute);
  const rerouteDrawn = useMemo(() => rerouteNodes(reroutes, selectedReroute), [reroutes, selectedReroute]);
  const shown = useMemo(
    () => (groupDrawn.length || rerouteDrawn.length ? [...groupDrawn, ...nodes, ...rerouteDrawn] : nodes),
    [groupDrawn, nodes, rerouteDrawn],
  );
  const shownEdges = useMemo(() => routedEdges(edges, reroutes), [edges, reroutes]);
  const onNodesChange = useCallback(
    (changes: Parameters<typeof onWeftNodesChange>[0]) => {
      const rest = rerouteChanges(groupChanges(changes));
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
  useStartup(
    openFile,
    useCallback(() => {
      setReady(true);
      fitSoon(rf);
    }, [rf]),
  );

  // Handle classes for dimming incompatible sockets while a link is dragged (types.ts).
  const dragCss = dragStyles(types).css;

  const handleType = useCallback((dragged: string, handleId: string, kind: 'source' | 'target') => {
    const s = useEditor.getState();
    // A reroute point's socket carries its source output's type.
    const { c } = viaReroute({ source: dragged, sourceHandle: handleId }, s.reroutes);
    const [node, handle] = [c.source ?? dragged, c.sourceHandle ?? handleId];
    const n = s.nodes.find((x) => x.id === node);
    const t = n && s.catalogue.get(n.data.kind);
    return kind === 'source'
      ? t?.outputs.find((o) => o.name === handle)?.type
      : t?.inputs.find((i) => i.name === handle)?.type;
  }, []);

  // Set while a link's end is dragged off its input (onReconnectStart below).
  const reconnecting = useRef<{ x: number; y: number; moved: boolean } | null>(null);
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
        const why = linkProblem(s.catalogue, new Map(s.nodes.map((n) => [n.id, n])), s.edges, viaReroute(c, s.reroutes).c);
        if (why) s.say(`link refused: ${why}`, 'error');
        return;
      }
      if (state.isValid === null && !state.toNode && state.fromHandle?.id && state.fromNode && !reconnecting.current) {
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

  const isValidConnection: IsValidConnection<GEdge> = useCallback((made) => {
    const s = useEditor.getState();
    const { c } = viaReroute(made, s.reroutes);
    const byId = new Map<string, GNode>();
    for (const n of s.nodes) if (n.id === c.source || n.id === c.target) byId.set(n.id, n);
    // The cycle check needs every edge; the node map needs only the two ends.
    return linkProblem(s.catalogue, byId, s.edges, c) === null;
  }, []);

  const onConnect = useCallback((c: Connection) => useEditor.getState().connect(c), []);

  // A link's end dragged off its input (ComfyUI; the grip is the link's last few pixels
  // before the input): dropped on another input the link moves there; dropped anywhere else
  // at least 5 px away it is removed (a click on the grip removes nothing).
  const onReconnectStart = useCallback((e: React.MouseEvent) => {
    reconnecting.current = { x: e.clientX, y: e.clientY, moved: false };
  }, []);
  const onReconnect = useCallback((old: GEdge, made: Connection) => {
    if (reconnecting.current) reconnecting.current.moved = true;
    useEditor.getState().moveLink(old.id, made);
  }, []);
  const onReconnectEnd = useCallback((e: MouseEvent | TouchEvent, edge: GEdge) => {
    const from = reconnecting.current;
    reconnecting.current = null;
    if (!from || from.moved) return;
    const pt = 'changedTouches' in e ? e.changedTouches[0] : e;
    if (Math.hypot(pt.clientX - from.x, pt.clientY - from.y) < 5) return;
    useEditor.getState().removeEdge(edge.id);
  }, []);

  // While Space is held a drag pans from anywhere, a node too (React Flow's pan key pans from
  // the canvas; a node that cannot be dragged lets the pan through).
  const spaceHeld = useKeyPress('Space');
  // Alt+drag duplicates (ComfyUI): where the dragged nodes started, so that at the drop they go
  // back there and their copies stay where they were dropped.
  const altDrag = useRef<Map<string, { x: number; y: number }> | null>(null);
  const onNodeDragStart = useCallback((e: { altKey: boolean }, _n: GNode, dragged: GNode[]) => {
    useEditor.getState().checkpoint();
    altDrag.current = e.altKey ? new Map(dragged.map((n) => [n.id, { ...n.position }])) : null;
  }, []);
  const onNodeDragStop = useCallback(() => {
    const starts = altDrag.current;
    altDrag.current = null;
    if (starts) useEditor.getState().copyDragged(starts);
  }, []);
  const onSelectionDragStart = useCallback((e: React.MouseEvent, dragged: GNode[]) => onNodeDragStart(e, dragged[0], dragged), [onNodeDragStart]);

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

  /** The mouse in flow coordinates when it is over the canvas (where a paste lands). */
  const mouseOnCanvas = useCallback(() => {
    const b = wrap.current?.getBoundingClientRect();
    const p = mouse.current;
    const inside = b && p.x >= b.left && p.x <= b.right && p.y >= b.top && p.y <= b.bottom;
    return inside ? rf.screenToFlowPosition(p) : undefined;
  }, [rf]);
  const canvasKeys: CanvasKeys = useMemo(
    () => ({
      paste: () => useEditor.getState().paste(mouseOnCanvas()),
      pasteWithInputs: () => useEditor.getState().paste(mouseOnCanvas(), true),
      search: () => openPalette(),
      fit: () => rf.fitView({ padding: 0.15, maxZoom: 1, duration: 0 }),
      toggleHistory: () => setShowHistory((v) => !v),
      toggleHelp: () => setShowHelp((v) => !v),
    }),
    [openPalette, rf, mouseOnCanvas],
  );
  useShortcuts(canvasKeys, !!palette);

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
    if (n.id.startsWith(REROUTE_PREFIX)) {
      setMenu({ kind: 'reroute', x: e.clientX, y: e.clientY, reroute: n.id.slice(REROUTE_PREFIX.length) });
      return;
    }
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
  const onEdgeContextMenu = useCallback(
    (e: React.MouseEvent, edge: GEdge) => {
      e.preventDefault();
      setMenu({ kind: 'edge', x: e.clientX, y: e.clientY, edge: edge.id, flow: rf.screenToFlowPosition({ x: e.clientX, y: e.clientY }) });
    },
    [rf],
  );
  // Double-click a link: a reroute point there (ComfyUI's habit).
  const onEdgeDoubleClick = useCallback(
    (e: React.MouseEvent, edge: GEdge) => useEditor.getState().addReroute(edge.id, rf.screenToFlowPosition({ x: e.clientX, y: e.clientY })),
    [rf],
  );
  const onSelectionContextMenu = useCallback((e: React.MouseEvent, chosen: GNode[]) => {
    e.preventDefault();
    const first = chosen.find((n) => n.type === 'weft');
    if (first) setMenu({ kind: 'node', x: e.clientX, y: e.clientY, node: first.id });
  }, []);

  const onDrop = useCallback(
    (e: React.DragEvent) => {
      const f = e.dataTransfer.files?.[0];
      if (!f) return;
      e.preventDefault();
      void openDroppedFile(f, fit);
    },
    [fit],
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
          onDrop={onDrop}
          data-testid="canvas"
        >
          <ReactFlow<GNode, GEdge>
            nodes={shown}
            edges={shownEdges}
            nodeTypes={nodeTypes}
            edgeTypes={edgeTypes}
            onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange}
            onConnect={onConnect}
            onConnectStart={onConnectStart}
            onConnectEnd={onConnectEnd}
            isValidConnection={isValidConnection}
            nodesDraggable={!spaceHeld}
            onNodeDragStart={onNodeDragStart}
            onNodeDragStop={onNodeDragStop}
            onSelectionDragStart={onSelectionDragStart}
            onSelectionDragStop={onNodeDragStop}
            onPaneContextMenu={onPaneContextMenu}
            onNodeContextMenu={onNodeContextMenu}
            onEdgeContextMenu={onEdgeContextMenu}
            onEdgeDoubleClick={onEdgeDoubleClick}
            onReconnectStart={onReconnectStart}
            onReconnect={onReconnect}
            onReconnectEnd={onReconnectEnd}
            onNodeDoubleClick={(e, n) => void onNodeDoubleClick(e, n)}
            onSelectionContextMenu={onSelectionContextMenu}
            deleteKeyCode={null}
            selectionKeyCode={selectionKeys}
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

function miniColour(n: GNode): string {
  const st = useRunStore.getState().nodes[n.id]?.state;
  if (st === 'failed') return '#e05555';
  if (st === 'running') return '#4fc3f7';
  if (st === 'cached') return '#5c6bc0';
  if (st === 'done') return '#66bb6a';
  const out = useEditor.getState().catalogue.get(n.data.kind)?.outputs[0]?.type;
  return out ? typeColour(out) : '#555';
}

