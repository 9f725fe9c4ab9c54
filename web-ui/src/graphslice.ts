// The store's graph slice: the canvas's nodes, links, groups and sweep axes, every edit to them
// and the one undo history they share. The edits themselves are pure (graphedit.ts); nothing here
// reads or writes a file, the URL or the page (fileslice.ts does the file).
import type { StateCreator } from 'zustand';
import { applyEdgeChanges, applyNodeChanges, type Connection, type EdgeChange, type NodeChange } from '@xyflow/react';
import type { Appearance, Constant, NodeType, WorkflowDoc } from './api';
import { cleanLook, docToGraph, edgeId, graphToDoc, linkProblem, type GEdge, type GNode, type NodeMode } from './graph';
import { checkpointed, copied, duplicated, pasted, redone, undone, withDragCopied, withModeToggled, withNodeAdded, withSelectionDeleted, withSelectionDissolved, type Clipboard, type Snapshot } from './graphedit';
import { boxAround, DEFAULT_GROUP_COLOUR, type GroupBox } from './groupbox';
import { estimateNodeSize } from './nodesize';
import { viaReroute, withInputRouted, withRerouteAdded, withRerouteMoved, withRerouteRemoved, type Reroutes } from './reroutes';
import { emptySweep, type SweepContext, type SweepDraft } from './sweep';
import { accepts, typeColour } from './types';

/** A link dragged from a socket and dropped on empty canvas: the node picked next gets it. */
export interface PendingLink {
  node: string;
  handle: string;
  from: 'source' | 'target';
  type: string;
}

export interface GraphSlice {
  catalogue: Map<string, NodeType>;
  types: NodeType[];
  nodes: GNode[];
  edges: GEdge[];
  past: Snapshot[];
  future: Snapshot[];
  lastEditKey: string | null;
  lastEditAt: number;
  /** Bumped by every edit (to tell whether the canvas changed while a read was in flight). */
  edits: number;
  /** What Ctrl+C took (Ctrl+V pastes it). */
  clipboard: Clipboard | null;
  /** The toast: what the last action did or why it could not. */
  message: { text: string; kind: 'info' | 'error' } | null;
  /** The sweep panel's axes: the file's `sweep:` section, saved with it, one history with the graph. */
  sweep: SweepDraft;
  /** The file's `groups:` (Ctrl+G), apart from the nodes; one history with the graph. */
  groups: GroupBox[];
  selectedGroup: number | null;
  /** Ctrl+G: a group around the selected nodes. */
  groupSelected: () => void;
  /** Moves a group's box to `to` and its members by as much. */
  moveGroup: (index: number, to: { x: number; y: number }, members: Set<string>) => void;
  editGroup: (index: number, patch: Partial<GroupBox>) => void;
  removeGroup: (index: number) => void;
  /** The file's `reroutes:`: dots links are drawn through; one history with the graph. */
  reroutes: Reroutes;
  selectedReroute: string | null;
  /** A reroute point on the link `edge` at `at` (double-click the link, or its menu). */
  addReroute: (edge: string, at: { x: number; y: number }) => void;
  moveReroute: (id: string, at: { x: number; y: number }) => void;
  /** The point goes; its links stay, drawn straight. */
  removeReroute: (id: string) => void;

  setCatalogue: (types: NodeType[]) => void;
  /** The graph alone (what validation and a single run take). */
  doc: () => WorkflowDoc;
  setSweep: (sweep: SweepDraft, key?: string) => void;
  sweepContext: () => SweepContext;
  onNodesChange: (changes: NodeChange<GNode>[]) => void;
  onEdgesChange: (changes: EdgeChange<GEdge>[]) => void;
  connect: (c: Connection) => void;
  addNode: (kind: string, at: { x: number; y: number }, link?: PendingLink) => string | null;
  setValue: (node: string, input: string, value: Constant) => void;
  unlink: (node: string, input: string) => void;
  checkpoint: (key?: string) => void;
  undo: () => void;
  redo: () => void;
  copy: () => void;
  /** `keepInputs` (Ctrl+Shift+V): the pasted nodes keep their links from nodes not copied. */
  paste: (at?: { x: number; y: number }, keepInputs?: boolean) => void;
  deleteSelected: () => void;
  /** Ctrl+X: deletes the selection and joins the links through it where the types fit. */
  dissolveSelected: () => void;
  /** Alt+drag ended: the dragged nodes go back to `starts`, their copies stay where dropped. */
  copyDragged: (starts: Map<string, { x: number; y: number }>) => void;
  /** Sets a title, colour or collapse on nodes (an empty title or colour removes it). */
  setLook: (ids: string[], patch: Appearance) => void;
  /** Alt+C: collapses the selected nodes to their headers (opens them when all are collapsed). */
  toggleCollapse: () => void;
  /** Copies of the selected nodes (and the links between them) beside them, selected. */
  duplicateSelected: () => void;
  selectAll: () => void;
  /** Selects only `id` unless it is selected already (what a right-click on a node does first). */
  selectForMenu: (id: string) => void;
  removeEdge: (id: string) => void;
  /** A link's end dragged off its input onto another input: one undo step. */
  moveLink: (id: string, made: Connection) => void;
  /** Ctrl+B / Ctrl+M: toggles the mode on the selected nodes (all on unless all have it already). */
  toggleMode: (mode: NodeMode) => void;
  say: (text: string, kind?: 'info' | 'error') => void;
}

/** What the graph slice needs of the rest of the store: an edit makes the open file unsaved. */
type GraphStore = GraphSlice & { dirty: boolean };

/** A link drawn in its output type's colour. */
export function styled(e: GEdge, nodes: Map<string, GNode>, cat: Map<string, NodeType>): GEdge {
  const s = nodes.get(e.source);
  const t = s && cat.get(s.data.kind)?.outputs.find((o) => o.name === e.sourceHandle)?.type;
  return t ? { ...e, style: { stroke: typeColour(t), strokeWidth: 2 } } : e;
}

/**
 * A document as the canvas's nodes and links. Nodes already on the canvas (an in-place reload)
 * keep their measured size and selection, so nothing jumps; new ones get a size worked out
 * before drawing, so React Flow draws only the nodes on screen instead of all of them once to
 * measure them (nodesize.ts).
 */
export function graphFromDoc(doc: WorkflowDoc, cat: Map<string, NodeType>, onCanvas: GNode[]): { nodes: GNode[]; edges: GEdge[] } {
  const { nodes, edges } = docToGraph(doc);
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const old = new Map(onCanvas.map((n) => [n.id, n]));
  const linked = new Map<string, Set<string>>();
  for (const e of edges) {
    const inputs = linked.get(e.target) ?? new Set<string>();
    inputs.add(e.targetHandle);
    linked.set(e.target, inputs);
  }
  for (const n of nodes) {
    const o = old.get(n.id);
    if (o?.measured) {
      n.measured = o.measured;
      n.selected = o.selected;
      continue;
    }
    if (o) n.selected = o.selected;
    const size = n.data.look?.collapsed ? null : estimateNodeSize(cat.get(n.data.kind), linked.get(n.id) ?? new Set());
    if (size) {
      n.measured = { width: size.width, height: size.height };
      n.handles = size.handles;
    }
  }
  return { nodes, edges: edges.map((e) => styled(e, byId, cat)) };
}

export const createGraphSlice: StateCreator<GraphStore, [], [], GraphSlice> = (set, get) => {
  /** Links `made` (from a reroute point's socket: from the point's source, drawn through it); `checkpoint`: as its own undo step. */
  const linkUp = (made: Connection, checkpoint: boolean) => {
    const s = get();
    // From a reroute point's socket: a link from the point's source, drawn through the point.
    const { c, via } = viaReroute(made, s.reroutes);
    const byId = new Map(s.nodes.map((n) => [n.id, n]));
    const problem = linkProblem(s.catalogue, byId, s.edges, c);
    if (problem) {
      s.say(problem, 'error');
      return;
    }
    if (checkpoint) s.checkpoint();
    const e: GEdge = {
      id: edgeId(c.target, c.targetHandle!),
      source: c.source,
      sourceHandle: c.sourceHandle!,
      target: c.target,
      targetHandle: c.targetHandle!,
    };
    // One link per input: a new link replaces the old one.
    const edges = s.edges.filter((x) => x.id !== e.id);
    set({ edges: [...edges, styled(e, byId, s.catalogue)], dirty: true, ...(via ? { reroutes: withInputRouted(s.reroutes, via, e) } : {}) });
  };

  return {
    catalogue: new Map(),
    types: [],
    nodes: [],
    edges: [],
    past: [],
    future: [],
    lastEditKey: null,
    lastEditAt: 0,
    edits: 0,
    clipboard: null,
    message: null,
    sweep: emptySweep(),
    groups: [],
    selectedGroup: null,
    reroutes: {},
    selectedReroute: null,

    addReroute: (edge, at) => {
      const s = get();
      const e = s.edges.find((x) => x.id === edge);
      if (!e) return;
      s.checkpoint();
      const { reroutes, id } = withRerouteAdded(s.reroutes, e, at);
      set({ reroutes, selectedReroute: id, dirty: true });
      s.say('reroute point added: drag it to move the link, drag from its socket to feed another input');
    },

    moveReroute: (id, at) => {
      const s = get();
      const reroutes = withRerouteMoved(s.reroutes, id, at);
      // (onNodeDragStart took the undo checkpoint.)
      if (reroutes) set({ reroutes, dirty: true, edits: s.edits + 1 });
    },

    removeReroute: (id) => {
      const s = get();
      const reroutes = withRerouteRemoved(s.reroutes, id);
      if (!reroutes) return;
      s.checkpoint();
      set({ reroutes, selectedReroute: s.selectedReroute === id ? null : s.selectedReroute, dirty: true });
    },

    groupSelected: () => {
      const s = get();
      const chosen = s.nodes.filter((n) => n.selected);
      if (chosen.length === 0) {
        s.say('select the nodes to group first (Shift+drag or Ctrl+click)', 'error');
        return;
      }
      s.checkpoint();
      set({ groups: [...s.groups, { title: 'Group', color: DEFAULT_GROUP_COLOUR, box: boxAround(chosen) }], dirty: true });
      s.say(`grouped ${chosen.length} node${chosen.length > 1 ? 's' : ''}: drag its title to move them, double-click it to rename`);
    },

    moveGroup: (index, to, members) => {
      const s = get();
      const g = s.groups[index];
      if (!g) return;
      const dx = to.x - g.box[0];
      const dy = to.y - g.box[1];
      if (dx === 0 && dy === 0) return;
      const groups = s.groups.slice();
      groups[index] = { ...g, box: [to.x, to.y, g.box[2], g.box[3]] };
      set({
        groups,
        nodes: s.nodes.map((n) => (members.has(n.id) ? { ...n, position: { x: n.position.x + dx, y: n.position.y + dy } } : n)),
        dirty: true,
        edits: s.edits + 1,
      });
    },

    editGroup: (index, patch) => {
      const s = get();
      const g = s.groups[index];
      if (!g) return;
      s.checkpoint(`group${index}.${Object.keys(patch).join()}`);
      const groups = s.groups.slice();
      groups[index] = { ...g, ...patch };
      set({ groups, dirty: true });
    },

    removeGroup: (index) => {
      const s = get();
      if (!s.groups[index]) return;
      s.checkpoint();
      set({ groups: s.groups.filter((_, i) => i !== index), selectedGroup: null, dirty: true });
    },

    setCatalogue: (types) => set({ types, catalogue: new Map(types.map((t) => [t.type, t])) }),

    say: (text, kind = 'info') => set({ message: { text, kind } }),

    doc: () => {
      const cat = get().catalogue;
      return graphToDoc(get().nodes, get().edges, (kind, input) => cat.get(kind)?.inputs.find((i) => i.name === input)?.type === 'float');
    },

    setSweep: (sweep, key) => {
      get().checkpoint(key);
      set({ sweep, dirty: true });
    },

    sweepContext: () => {
      const s = get();
      const kinds = new Map(s.nodes.map((n) => [n.id, n.data.kind]));
      const linked = new Set(s.edges.map((e) => edgeId(e.target, e.targetHandle)));
      return {
        kindOf: (node) => kinds.get(node),
        declOf: (kind, input) => s.catalogue.get(kind)?.inputs.find((i) => i.name === input),
        isLinked: (node, input) => linked.has(edgeId(node, input)),
      };
    },

    checkpoint: (key) => set(checkpointed(get(), key, Date.now())),

    undo: () => {
      const prev = undone(get());
      if (prev) set({ ...prev, dirty: true });
    },

    redo: () => {
      const next = redone(get());
      if (next) set({ ...next, dirty: true });
    },

    onNodesChange: (changes) => {
      let edits = false;
      for (const c of changes) if (c.type === 'remove' || c.type === 'add') edits = true;
      if (edits) get().checkpoint();
      let moved = false;
      for (const c of changes) if (c.type === 'position' && c.position) moved = true;
      let nodes = applyNodeChanges(changes, get().nodes);
      // Measured for real: the estimated sockets give way to the drawn ones for good (React Flow
      // would otherwise take a node's `handles` again whenever the node object changes).
      const drawn = new Set(changes.filter((c) => c.type === 'dimensions').map((c) => c.id));
      if (drawn.size) nodes = nodes.map((n) => (drawn.has(n.id) && n.handles ? { ...n, handles: undefined } : n));
      const patch: Partial<GraphStore> = { nodes };
      if (edits) {
        const ids = new Set(nodes.map((n) => n.id));
        patch.edges = get().edges.filter((e) => ids.has(e.source) && ids.has(e.target));
      }
      if (edits || moved) {
        patch.dirty = true;
        patch.edits = get().edits + 1;
      }
      set(patch);
    },

    onEdgesChange: (changes) => {
      if (changes.some((c) => c.type === 'remove')) {
        get().checkpoint();
        set({ dirty: true });
      }
      set({ edges: applyEdgeChanges(changes, get().edges) });
    },

    connect: (made) => {
      linkUp(made, true);
    },

    moveLink: (id, made) => {
      const s = get();
      const old = s.edges.find((e) => e.id === id);
      if (!old) return;
      const without = s.edges.filter((e) => e.id !== id);
      const byId = new Map(s.nodes.map((n) => [n.id, n]));
      const { c } = viaReroute(made, s.reroutes);
      // Checked without the link being moved: it may come back to the same input.
      const problem = linkProblem(s.catalogue, byId, without, c);
      if (problem) {
        s.say(problem, 'error');
        return;
      }
      s.checkpoint();
      set({ edges: without });
      linkUp(made, false);
    },

    addNode: (kind, at, link) => {
      const s = get();
      const t = s.catalogue.get(kind);
      if (!t) return null;
      s.checkpoint();
      const { nodes, id } = withNodeAdded(s.nodes, t, at);
      set({ nodes, dirty: true });
      if (link) {
        if (link.from === 'source') {
          const inp = t.inputs.find((i) => accepts(i.type, link.type));
          if (inp) get().connect({ source: link.node, sourceHandle: link.handle, target: id, targetHandle: inp.name });
        } else {
          const out = t.outputs.find((o) => accepts(link.type, o.type));
          if (out) get().connect({ source: id, sourceHandle: out.name, target: link.node, targetHandle: link.handle });
        }
        set({ past: get().past.slice(0, -1) }); // the node and its link are one undo step
      }
      return id;
    },

    setValue: (node, input, value) => {
      get().checkpoint(`${node}.${input}`);
      set({
        nodes: get().nodes.map((n) => (n.id === node ? { ...n, data: { ...n.data, values: { ...n.data.values, [input]: value } } } : n)),
        dirty: true,
      });
    },

    unlink: (node, input) => {
      get().checkpoint();
      set({ edges: get().edges.filter((e) => e.id !== edgeId(node, input)), dirty: true });
    },

    copy: () => {
      const s = get();
      const clipboard = copied(s.nodes, s.edges);
      set({ clipboard });
      const n = clipboard.nodes.length;
      if (n) s.say(`copied ${n} node${n > 1 ? 's' : ''}`);
    },

    paste: (at, keepInputs) => {
      const s = get();
      if (!s.clipboard || s.clipboard.nodes.length === 0) return;
      s.checkpoint();
      const p = pasted(s.nodes, s.edges, s.clipboard, at, keepInputs);
      if (p) set({ ...p, dirty: true });
    },

    copyDragged: (starts) => {
      const s = get();
      // The drag's start already made the undo step: undo takes back the move and the copy at once.
      const d = withDragCopied(s.nodes, s.edges, starts);
      if (!d) return;
      set({ nodes: d.nodes, edges: d.edges, dirty: true });
      s.say(`copied ${d.added.length} node${d.added.length > 1 ? 's' : ''}: ${d.added.map((x) => x.id).join(', ')}`);
    },

    dissolveSelected: () => {
      const s = get();
      const byId = new Map(s.nodes.map((n) => [n.id, n]));
      const d = withSelectionDissolved(s.nodes, s.edges, (link, edgesSoFar) => linkProblem(s.catalogue, byId, edgesSoFar, link) === null);
      if (!d) return;
      s.checkpoint();
      set({ nodes: d.nodes, edges: d.edges, dirty: true });
      if (d.joined.length) s.say(`reconnected ${d.joined.map((e) => `${e.source}.${e.sourceHandle} → ${e.target}.${e.targetHandle}`).join(', ')}`);
    },

    duplicateSelected: () => {
      const s = get();
      if (!s.nodes.some((n) => n.selected)) return;
      s.checkpoint();
      const d = duplicated(s.nodes, s.edges);
      if (!d) return;
      set({ nodes: d.nodes, edges: d.edges, dirty: true });
      const n = d.added.length;
      s.say(`duplicated ${n} node${n > 1 ? 's' : ''}: ${d.added.map((x) => x.id).join(', ')}`);
    },

    selectAll: () => set((s) => ({ nodes: s.nodes.map((n) => (n.selected ? n : { ...n, selected: true })) })),

    selectForMenu: (id) => {
      const s = get();
      if (s.nodes.find((n) => n.id === id)?.selected) return;
      set({ nodes: s.nodes.map((n) => (n.id === id ? { ...n, selected: true } : n.selected ? { ...n, selected: false } : n)) });
    },

    removeEdge: (id) => {
      const s = get();
      if (!s.edges.some((e) => e.id === id)) return;
      s.checkpoint();
      set({ edges: s.edges.filter((e) => e.id !== id), dirty: true });
    },

    setLook: (ids, patch) => {
      const s = get();
      const chosen = new Set(ids);
      s.checkpoint(`look:${ids.join()}:${Object.keys(patch).join()}`);
      set({
        nodes: s.nodes.map((n) => {
          if (!chosen.has(n.id)) return n;
          const look = cleanLook({ ...n.data.look, ...patch });
          const data = { ...n.data };
          if (look) data.look = look;
          else delete data.look;
          return { ...n, data };
        }),
        dirty: true,
      });
    },

    toggleCollapse: () => {
      const s = get();
      const chosen = s.nodes.filter((n) => n.selected);
      if (chosen.length === 0) return;
      const collapse = !chosen.every((n) => n.data.look?.collapsed);
      s.setLook(
        chosen.map((n) => n.id),
        { collapsed: collapse },
      );
    },

    toggleMode: (mode) => {
      const s = get();
      if (!s.nodes.some((n) => n.selected)) return;
      s.checkpoint();
      const t = withModeToggled(s.nodes, mode);
      if (!t) return;
      set({ nodes: t.nodes, dirty: true });
      const names = t.chosen.join(', ');
      s.say(`${t.on ? (mode === 'bypass' ? 'bypassed' : 'muted') : mode === 'bypass' ? 'no longer bypassed' : 'no longer muted'}: ${names}`);
    },

    deleteSelected: () => {
      const s = get();
      if (s.selectedReroute != null && s.reroutes[s.selectedReroute]) {
        s.removeReroute(s.selectedReroute);
        return;
      }
      if (s.selectedGroup != null && s.groups[s.selectedGroup]) {
        s.removeGroup(s.selectedGroup);
        return;
      }
      const left = withSelectionDeleted(s.nodes, s.edges);
      if (!left) return;
      s.checkpoint();
      set({ ...left, dirty: true });
    },
  };
};
