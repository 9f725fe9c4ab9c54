// The editor's graph, the open file and one undo history for every change.
import { create } from 'zustand';
import { applyEdgeChanges, applyNodeChanges, type EdgeChange, type NodeChange, type Connection } from '@xyflow/react';
import { describeConflicts, merge3 } from './merge';
import { api, ApiError, type Appearance, type Constant, type Diagnostic, type NodeType, type WorkflowDoc, type WorkflowEntry } from './api';
import { cleanLook, cloneNodes, defaultValues, docToGraph, edgeId, freshId, graphToDoc, linkProblem, type GEdge, type GNode, type NodeMode } from './graph';
import { accepts, typeColour } from './types';
import { forgetStale, groupDiagnostics, staleNodes, useRunStore } from './runstore';
import { draftFromSection, emptySweep, sweepSection, type SweepContext, type SweepDraft } from './sweep';
import { boxAround, DEFAULT_GROUP_COLOUR, type GroupBox } from './groups';
import { estimateNodeSize } from './nodesize';

interface Snapshot {
  nodes: GNode[];
  edges: GEdge[];
  sweep: SweepDraft;
  groups: GroupBox[];
}

interface Clipboard {
  nodes: GNode[];
  edges: GEdge[];
}

export interface EditorState {
  catalogue: Map<string, NodeType>;
  types: NodeType[];
  nodes: GNode[];
  edges: GEdge[];
  /** Open file: name and the revision it was read or saved at (null: a new workflow not saved yet). */
  name: string | null;
  /** For an imported workflow not saved yet: the name Save suggests (from the file's name). */
  suggest: string | null;
  revision: string | null;
  dirty: boolean;
  /** The file changed on disk while the canvas has unsaved edits. */
  conflict: { revision: string } | null;
  /** A library subgraph's `inputs:` and `outputs:` as read: the canvas does not edit them, a save keeps them. */
  iface: { inputs?: Record<string, unknown>; outputs?: Record<string, unknown> } | null;
  /** The document at `revision` (what the file held when read or saved): the merge's base. */
  base: WorkflowDoc | null;
  /** The file on disk does not parse: its located errors, shown instead of a stale graph. */
  broken: { text: string; diagnostics: Diagnostic[] } | null;
  workflows: WorkflowEntry[];
  /** The library subgraphs' files, `lib/NAME`, each openable like a workflow. */
  library: WorkflowEntry[];
  past: Snapshot[];
  future: Snapshot[];
  lastEditKey: string | null;
  lastEditAt: number;
  /** Bumped by every edit (to tell whether the canvas changed while a read was in flight). */
  edits: number;
  message: { text: string; kind: 'info' | 'error' } | null;
  saving: boolean;
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

  setCatalogue: (types: NodeType[]) => void;
  load: (name: string, opts?: { keepView?: boolean }) => Promise<void>;
  loadDoc: (doc: WorkflowDoc, dirty: boolean) => void;
  openImported: (doc: WorkflowDoc, diagnostics: Diagnostic[], suggest: string) => void;
  refreshList: () => Promise<void>;
  save: () => Promise<boolean>;
  /** Merges the canvas's edits into the file on disk now (three-way, from `base`). */
  mergeDisk: () => Promise<void>;
  saveAs: (name: string) => Promise<boolean>;
  create: (name: string) => Promise<boolean>;
  /** The graph alone (what validation and a single run take). */
  doc: () => WorkflowDoc;
  /** What Save writes: the graph and the sweep section. */
  fileDoc: () => WorkflowDoc;
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
  paste: (at?: { x: number; y: number }) => void;
  deleteSelected: () => void;
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
  /** Ctrl+B / Ctrl+M: toggles the mode on the selected nodes (all on unless all have it already). */
  toggleMode: (mode: NodeMode) => void;
  say: (text: string, kind?: 'info' | 'error') => void;
}

/** A link dragged from a socket and dropped on empty canvas: the node picked next gets it. */
export interface PendingLink {
  node: string;
  handle: string;
  from: 'source' | 'target';
  type: string;
}

let clipboard: Clipboard | null = null;
/** Whether Paste has anything to paste (the context menu greys it out otherwise). */
export const hasClipboard = () => (clipboard?.nodes.length ?? 0) > 0;
const HISTORY = 200;

function styled(e: GEdge, nodes: Map<string, GNode>, cat: Map<string, NodeType>): GEdge {
  const s = nodes.get(e.source);
  const t = s && cat.get(s.data.kind)?.outputs.find((o) => o.name === e.sourceHandle)?.type;
  return t ? { ...e, style: { stroke: typeColour(t), strokeWidth: 2 } } : e;
}

export const useEditor = create<EditorState>()((set, get) => ({
  catalogue: new Map(),
  types: [],
  nodes: [],
  edges: [],
  name: null,
  suggest: null,
  revision: null,
  base: null,
  iface: null,
  dirty: false,
  conflict: null,
  broken: null,
  workflows: [],
  library: [],
  past: [],
  future: [],
  lastEditKey: null,
  lastEditAt: 0,
  edits: 0,
  message: null,
  saving: false,
  sweep: emptySweep(),
  groups: [],
  selectedGroup: null,

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

  fileDoc: () => {
    const doc = get().doc();
    const sweep = sweepSection(get().sweep, get().sweepContext());
    const groups = get().groups;
    const iface = get().iface;
    return { ...doc, ...(iface ?? {}), ...(sweep ? { sweep } : {}), ...(groups.length ? { groups } : {}) };
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

  loadDoc: (doc, dirty) => {
    const { nodes, edges } = docToGraph(doc);
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const cat = get().catalogue;
    // Keep each node's measured size and selection across an in-place reload, so nothing jumps.
    const old = new Map(get().nodes.map((n) => [n.id, n]));
    const linked = new Map<string, Set<string>>();
    for (const e of edges) {
      const set = linked.get(e.target) ?? new Set<string>();
      set.add(e.targetHandle);
      linked.set(e.target, set);
    }
    for (const n of nodes) {
      const o = old.get(n.id);
      if (o?.measured) {
        n.measured = o.measured;
        n.selected = o.selected;
        continue;
      }
      if (o) n.selected = o.selected;
      // Size and sockets worked out before drawing: React Flow then draws only the nodes on
      // screen instead of all of them once to measure them (nodesize.ts).
      const size = n.data.look?.collapsed ? null : estimateNodeSize(cat.get(n.data.kind), linked.get(n.id) ?? new Set());
      if (size) {
        n.measured = { width: size.width, height: size.height };
        n.handles = size.handles;
      }
    }
    const declOf = (node: string, input: string) => cat.get(byId.get(node)?.data.kind ?? '')?.inputs.find((i) => i.name === input);
    set({
      nodes,
      edges: edges.map((e) => styled(e, byId, cat)),
      sweep: draftFromSection(doc.sweep, declOf),
      groups: doc.groups ?? [],
      iface: doc.inputs || doc.outputs ? { inputs: doc.inputs, outputs: doc.outputs } : null,
      selectedGroup: null,
      dirty,
      broken: null,
      conflict: null,
    });
  },

  openImported: (doc, diagnostics, suggest) => {
    // A new workflow apart from the file that was open: its own (empty) history, no file yet.
    set({ name: null, revision: null, suggest, past: [], future: [], nodes: [], edges: [] });
    get().loadDoc(doc, true);
    set({ edits: get().edits + 1 });
    useRunStore.setState({ nodes: {}, diagnostics: groupDiagnostics(diagnostics, false) });
    history.replaceState(null, '', location.pathname + location.search);
    document.title = `${suggest} (unsaved) · weft`;
  },

  load: async (name) => {
    try {
      const before = get().edits;
      const t0 = performance.now();
      const f = await api.workflow(name);
      // For the browser tests' figures: how long the server's answer took, apart from drawing it.
      (window as unknown as { __weftOpen?: object }).__weftOpen = { name, t0, fetched: performance.now() };
      const switching = get().name !== name;
      if (!switching && get().edits !== before) {
        // Edited while the file was being read: never drop those edits; a different file is a conflict.
        if (f.revision !== get().revision) set({ conflict: { revision: f.revision } });
        return;
      }
      if (switching) set({ past: [], future: [] });
      // A file that does not read gives no revision to save over: the canvas still holds the
      // last workflow that read (or another file's), and a save must not replace the text on
      // disk without asking (the server answers 409 to the old revision; the bar then asks).
      if (f.workflow) set({ name, revision: f.revision, base: f.workflow, suggest: null });
      else set({ name, suggest: null, ...(switching ? { revision: null } : {}) });
      if (f.workflow) {
        if (!switching) {
          get().checkpoint();
          // Read again after a disk edit: nodes that will re-run lose the last run's marks.
          forgetStale(staleNodes(get().doc(), f.workflow));
        }
        get().loadDoc(f.workflow, false);
        useRunStore.setState({ diagnostics: groupDiagnostics(f.diagnostics ?? [], true) });
      } else {
        set({ broken: { text: f.text, diagnostics: f.diagnostics ?? [] }, conflict: null, dirty: false });
      }
      if (location.hash !== `#/${name}`) history.replaceState(null, '', `#/${name}`);
      document.title = `${name} · weft`;
    } catch (e) {
      get().say(`cannot open ${name}: ${(e as Error).message}`, 'error');
    }
  },

  refreshList: async () => {
    try {
      const listed = await api.workflows();
      set({ workflows: listed.workflows, library: listed.library ?? [] });
    } catch (e) {
      get().say(`cannot list workflows: ${(e as Error).message}`, 'error');
    }
  },

  save: async () => {
    const { name, revision } = get();
    if (!name) return false;
    set({ saving: true });
    try {
      const doc = get().fileDoc();
      const r = await api.save(name, doc, revision ?? '');
      set({ revision: r.revision, base: doc, dirty: false, conflict: null, saving: false });
      useRunStore.setState({ diagnostics: groupDiagnostics(r.diagnostics ?? [], true) });
      get().say(`saved ${name}.yaml`);
      void get().refreshList();
      return true;
    } catch (e) {
      set({ saving: false });
      if (e instanceof ApiError && e.status === 409) {
        set({ conflict: { revision: String(e.body.revision ?? '') } });
        if (get().broken)
          get().say(`${name}.yaml on disk does not read as a workflow (shown below): nothing was saved; fix it and reload, or keep your version to replace it`, 'error');
        else get().say('the file changed on disk since it was opened: reload it or keep your version', 'error');
      } else get().say(`save failed: ${(e as Error).message}`, 'error');
      return false;
    }
  },

  mergeDisk: async () => {
    const name = get().name;
    if (!name) return;
    try {
      const f = await api.workflow(name);
      if (!f.workflow) {
        get().say(`${name}.yaml on disk does not read as a workflow: fix it first (nothing merged)`, 'error');
        return;
      }
      const { doc, conflicts } = merge3(get().base, f.workflow, get().fileDoc());
      get().checkpoint();
      get().loadDoc(doc, true);
      set({ revision: f.revision, base: f.workflow });
      if (conflicts.length)
        get().say(`merged with ${name}.yaml on disk; changed on both sides, yours kept: ${describeConflicts(conflicts)}. Save to write it`, 'error');
      else get().say(`merged your edits with ${name}.yaml on disk; save to write both`);
    } catch (e) {
      get().say(`cannot merge: ${(e as Error).message}`, 'error');
    }
  },

  saveAs: async (name) => {
    try {
      const r = await api.create(name, get().fileDoc());
      set({ name, revision: r.revision, base: get().fileDoc(), dirty: false, conflict: null, suggest: null });
      history.replaceState(null, '', `#/${name}`);
      document.title = `${name} · weft`;
      get().say(`saved as ${name}.yaml`);
      void get().refreshList();
      return true;
    } catch (e) {
      get().say(`save as failed: ${(e as Error).message}`, 'error');
      return false;
    }
  },

  create: async (name) => {
    try {
      const doc: WorkflowDoc = { weft: 1, nodes: {} };
      const r = await api.create(name, doc);
      set({ name, revision: r.revision, base: doc, past: [], future: [], suggest: null });
      get().loadDoc(doc, false);
      history.replaceState(null, '', `#/${name}`);
      document.title = `${name} · weft`;
      useRunStore.setState({ diagnostics: {}, nodes: {} });
      void get().refreshList();
      return true;
    } catch (e) {
      get().say(`cannot create ${name}: ${(e as Error).message}`, 'error');
      return false;
    }
  },

  checkpoint: (key) => {
    const s = get();
    const now = Date.now();
    if (key && key === s.lastEditKey && now - s.lastEditAt < 1500) {
      set({ lastEditAt: now, edits: s.edits + 1 });
      return;
    }
    set({
      past: [...s.past.slice(-HISTORY + 1), { nodes: s.nodes, edges: s.edges, sweep: s.sweep, groups: s.groups }],
      future: [],
      lastEditKey: key ?? null,
      lastEditAt: now,
      edits: s.edits + 1,
    });
  },

  undo: () => {
    const s = get();
    const prev = s.past[s.past.length - 1];
    if (!prev) return;
    set({
      past: s.past.slice(0, -1),
      future: [...s.future, { nodes: s.nodes, edges: s.edges, sweep: s.sweep, groups: s.groups }],
      nodes: prev.nodes,
      edges: prev.edges,
      sweep: prev.sweep,
      groups: prev.groups,
      dirty: true,
      edits: s.edits + 1,
      lastEditKey: null,
    });
  },

  redo: () => {
    const s = get();
    const next = s.future[s.future.length - 1];
    if (!next) return;
    set({
      future: s.future.slice(0, -1),
      past: [...s.past, { nodes: s.nodes, edges: s.edges, sweep: s.sweep, groups: s.groups }],
      nodes: next.nodes,
      edges: next.edges,
      sweep: next.sweep,
      groups: next.groups,
      dirty: true,
      edits: s.edits + 1,
      lastEditKey: null,
    });
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
    const patch: Partial<EditorState> = { nodes };
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

  connect: (c) => {
    const s = get();
    const byId = new Map(s.nodes.map((n) => [n.id, n]));
    const problem = linkProblem(s.catalogue, byId, s.edges, c);
    if (problem) {
      s.say(problem, 'error');
      return;
    }
    s.checkpoint();
    const e: GEdge = {
      id: edgeId(c.target, c.targetHandle!),
      source: c.source,
      sourceHandle: c.sourceHandle!,
      target: c.target,
      targetHandle: c.targetHandle!,
    };
    // One link per input: a new link replaces the old one.
    const edges = s.edges.filter((x) => x.id !== e.id);
    set({ edges: [...edges, styled(e, byId, s.catalogue)], dirty: true });
  },

  addNode: (kind, at, link) => {
    const s = get();
    const t = s.catalogue.get(kind);
    if (!t) return null;
    s.checkpoint();
    const ids = new Set(s.nodes.map((n) => n.id));
    const id = freshId(kind, (x) => ids.has(x));
    const node: GNode = {
      id,
      type: 'weft',
      position: at,
      data: { kind, values: defaultValues(t), order: t.inputs.map((i) => i.name) },
      selected: true,
    };
    const nodes = [...s.nodes.map((n) => (n.selected ? { ...n, selected: false } : n)), node];
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
      nodes: get().nodes.map((n) =>
        n.id === node ? { ...n, data: { ...n.data, values: { ...n.data.values, [input]: value } } } : n,
      ),
      dirty: true,
    });
  },

  unlink: (node, input) => {
    get().checkpoint();
    set({ edges: get().edges.filter((e) => e.id !== edgeId(node, input)), dirty: true });
  },

  copy: () => {
    const s = get();
    const nodes = s.nodes.filter((n) => n.selected);
    const ids = new Set(nodes.map((n) => n.id));
    clipboard = { nodes, edges: s.edges.filter((e) => ids.has(e.source) && ids.has(e.target)) };
    if (nodes.length) s.say(`copied ${nodes.length} node${nodes.length > 1 ? 's' : ''}`);
  },

  paste: (at) => {
    if (!clipboard || clipboard.nodes.length === 0) return;
    const s = get();
    s.checkpoint();
    const minX = Math.min(...clipboard.nodes.map((n) => n.position.x));
    const minY = Math.min(...clipboard.nodes.map((n) => n.position.y));
    const dx = at ? at.x - minX : 40;
    const dy = at ? at.y - minY : 40;
    const fresh = cloneNodes(clipboard.nodes, clipboard.edges, new Set(s.nodes.map((n) => n.id)), dx, dy);
    // A second paste lands a step further, not on top of the first.
    if (!at) clipboard = { ...clipboard, nodes: clipboard.nodes.map((n) => ({ ...n, position: { x: n.position.x + 40, y: n.position.y + 40 } })) };
    set({
      nodes: [...s.nodes.map((n) => (n.selected ? { ...n, selected: false } : n)), ...fresh.nodes],
      edges: [...s.edges, ...fresh.edges],
      dirty: true,
    });
  },

  duplicateSelected: () => {
    const s = get();
    const chosen = s.nodes.filter((n) => n.selected);
    if (chosen.length === 0) return;
    s.checkpoint();
    const fresh = cloneNodes(chosen, s.edges, new Set(s.nodes.map((n) => n.id)), 40, 40);
    set({
      nodes: [...s.nodes.map((n) => (n.selected ? { ...n, selected: false } : n)), ...fresh.nodes],
      edges: [...s.edges, ...fresh.edges],
      dirty: true,
    });
    s.say(`duplicated ${chosen.length} node${chosen.length > 1 ? 's' : ''}: ${fresh.nodes.map((n) => n.id).join(', ')}`);
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
    const chosen = s.nodes.filter((n) => n.selected);
    if (chosen.length === 0) return;
    const on = !chosen.every((n) => n.data.mode === mode);
    s.checkpoint();
    set({
      nodes: s.nodes.map((n) => {
        if (!n.selected) return n;
        const data = { ...n.data };
        if (on) data.mode = mode;
        else delete data.mode;
        return { ...n, data };
      }),
      dirty: true,
    });
    const names = chosen.map((n) => n.id).join(', ');
    s.say(`${on ? (mode === 'bypass' ? 'bypassed' : 'muted') : mode === 'bypass' ? 'no longer bypassed' : 'no longer muted'}: ${names}`);
  },

  deleteSelected: () => {
    const s = get();
    if (s.selectedGroup != null && s.groups[s.selectedGroup]) {
      s.removeGroup(s.selectedGroup);
      return;
    }
    const gone = new Set(s.nodes.filter((n) => n.selected).map((n) => n.id));
    const edgesLeft = s.edges.filter((e) => !e.selected && !gone.has(e.source) && !gone.has(e.target));
    if (gone.size === 0 && edgesLeft.length === s.edges.length) return;
    s.checkpoint();
    set({ nodes: s.nodes.filter((n) => !gone.has(n.id)), edges: edgesLeft, dirty: true });
  },
}));
