// The store's file slice: which workflow file is open, at which revision, whether the canvas has
// unsaved edits, and reading, saving and merging it through the server. The URL and the page's
// title follow this state (address.ts); the canvas itself is the graph slice's.
import type { StateCreator } from 'zustand';
import { api, ApiError, type Diagnostic, type WorkflowDoc, type WorkflowEntry } from './api';
import { graphFromDoc, type GraphSlice } from './graphslice';
import { mergedWithDisk } from './merge';
import { prunedReroutes } from './reroutes';
import { forgetStale, groupDiagnostics, staleNodes, useRunStore } from './runstore';
import { draftFromSection, sweepSection } from './sweep';

export interface FileSlice {
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
  saving: boolean;

  load: (name: string, opts?: { keepView?: boolean }) => Promise<void>;
  /** A document onto the canvas (the file's, a dropped PNG's, a merge's); `dirty`: not what the file holds. */
  loadDoc: (doc: WorkflowDoc, dirty: boolean) => void;
  openImported: (doc: WorkflowDoc, diagnostics: Diagnostic[], suggest: string) => void;
  refreshList: () => Promise<void>;
  save: () => Promise<boolean>;
  /** Merges the canvas's edits into the file on disk now (three-way, from `base`). */
  mergeDisk: () => Promise<void>;
  saveAs: (name: string) => Promise<boolean>;
  create: (name: string) => Promise<boolean>;
  /** What Save writes: the graph and the sweep section. */
  fileDoc: () => WorkflowDoc;
}

export const createFileSlice: StateCreator<GraphSlice & FileSlice, [], [], FileSlice> = (set, get) => ({
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
  saving: false,

  fileDoc: () => {
    const doc = get().doc();
    const sweep = sweepSection(get().sweep, get().sweepContext());
    const groups = get().groups;
    const iface = get().iface;
    // Only the points whose links are still there (the canvas keeps the others for undo).
    const reroutes = prunedReroutes(get().reroutes, get().edges).reroutes;
    const rerouted = Object.keys(reroutes).length ? { reroutes } : {};
    return { ...doc, ...(iface ?? {}), ...(sweep ? { sweep } : {}), ...(groups.length ? { groups } : {}), ...rerouted };
  },

  loadDoc: (doc, dirty) => {
    const cat = get().catalogue;
    const { nodes, edges } = graphFromDoc(doc, cat, get().nodes);
    const pruned = prunedReroutes(doc.reroutes ?? {}, edges);
    const kindOf = new Map(nodes.map((n) => [n.id, n.data.kind]));
    const declOf = (node: string, input: string) => cat.get(kindOf.get(node) ?? '')?.inputs.find((i) => i.name === input);
    set({
      nodes,
      edges,
      sweep: draftFromSection(doc.sweep, declOf),
      groups: doc.groups ?? [],
      reroutes: pruned.reroutes,
      selectedReroute: null,
      iface: doc.inputs || doc.outputs ? { inputs: doc.inputs, outputs: doc.outputs } : null,
      selectedGroup: null,
      dirty,
      broken: null,
      conflict: null,
    });
    if (pruned.dropped.length) {
      const list = pruned.dropped.join(', ');
      get().say(`reroute point${pruned.dropped.length > 1 ? 's' : ''} ${list} left out: ${pruned.dropped.length > 1 ? 'their links are' : 'its link is'} gone`);
    }
  },

  openImported: (doc, diagnostics, suggest) => {
    // A new workflow apart from the file that was open: its own (empty) history, no file yet.
    set({ name: null, revision: null, suggest, past: [], future: [], nodes: [], edges: [] });
    get().loadDoc(doc, true);
    set({ edits: get().edits + 1 });
    useRunStore.setState({ nodes: {}, diagnostics: groupDiagnostics(diagnostics, false) });
  },

  load: async (name) => {
    try {
      const before = get().edits;
      const t0 = performance.now();
      const f = await api.workflow(name);
      // For the browser tests' figures: how long the server's answer took, apart from drawing it.
      (globalThis as unknown as { __weftOpen?: object }).__weftOpen = { name, t0, fetched: performance.now() };
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
      const merged = mergedWithDisk(name, get().base, f.workflow, get().fileDoc());
      get().checkpoint();
      get().loadDoc(merged.doc, true);
      set({ revision: f.revision, base: f.workflow });
      get().say(merged.text, merged.kind);
    } catch (e) {
      get().say(`cannot merge: ${(e as Error).message}`, 'error');
    }
  },

  saveAs: async (name) => {
    try {
      const r = await api.create(name, get().fileDoc());
      set({ name, revision: r.revision, base: get().fileDoc(), dirty: false, conflict: null, suggest: null });
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
      useRunStore.setState({ diagnostics: {}, nodes: {} });
      void get().refreshList();
      return true;
    } catch (e) {
      get().say(`cannot create ${name}: ${(e as Error).message}`, 'error');
      return false;
    }
  },
});
