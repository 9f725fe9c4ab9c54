// The editor's one store, made of slices: the graph (graphslice.ts: nodes, links, groups, sweep
// axes and their one undo history) and the open file (fileslice.ts: read, save, merge, dirty,
// revision). Runs and their per-node state are a store of their own (runstore.ts), so progress
// events never re-render the canvas.
import { create } from 'zustand';
import { createFileSlice, type FileSlice } from './fileslice';
import { createGraphSlice, type GraphSlice } from './graphslice';

export type { PendingLink } from './graphslice';

export type EditorState = GraphSlice & FileSlice;

export const useEditor = create<EditorState>()((...a) => ({
  ...createGraphSlice(...a),
  ...createFileSlice(...a),
}));

/** Whether Paste has anything to paste (the context menu greys it out otherwise). */
export const hasClipboard = () => (useEditor.getState().clipboard?.nodes.length ?? 0) > 0;
