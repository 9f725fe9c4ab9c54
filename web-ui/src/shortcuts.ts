// The keyboard shortcuts: one table that the key handler runs and the help overlay (?) lists,
// so a key cannot work without being listed, nor be listed without working. ComfyUI's keys
// where it has one (EDITOR.md's table).

/** What a shortcut may do beyond the store (the canvas's own actions, given by the editor). */
export interface ShortcutContext {
  save: (as: boolean) => void;
  queue: () => void;
  /** Queues ahead of every waiting run (ComfyUI's Queue Front). */
  queueFront: () => void;
  cancel: () => void;
  undo: () => void;
  redo: () => void;
  copy: () => void;
  /** Pastes at the mouse when it is over the canvas. */
  paste: () => void;
  /** Pastes keeping the pasted nodes' input links from nodes not copied. */
  pasteWithInputs: () => void;
  selectAll: () => void;
  deleteSelected: () => void;
  /** Deletes the selection, joining the links through it where the types fit. */
  dissolveSelected: () => void;
  bypass: () => void;
  mute: () => void;
  group: () => void;
  collapse: () => void;
  duplicate: () => void;
  search: () => void;
  /** Space: the search opens when Space is released without a drag (Space+drag pans). */
  searchOnRelease: () => void;
  fit: () => void;
  toggleHistory: () => void;
  toggleHelp: () => void;
}

export interface Shortcut {
  /** As shown in the help: `Ctrl+B`. */
  keys: string;
  does: string;
  /** Works while typing in a field too (save, run); others act on the canvas only. */
  anywhere?: boolean;
  match: (e: KeyboardEvent) => boolean;
  run: (ctx: ShortcutContext, e: KeyboardEvent) => void;
}

const ctrl = (e: KeyboardEvent) => e.ctrlKey || e.metaKey;
const key = (e: KeyboardEvent) => e.key.toLowerCase();

export const SHORTCUTS: Shortcut[] = [
  { keys: 'Ctrl+S', does: 'save (Ctrl+Shift+S: save as)', anywhere: true, match: (e) => ctrl(e) && key(e) === 's', run: (c, e) => c.save(e.shiftKey) },
  { keys: 'Ctrl+Enter', does: 'queue a run', anywhere: true, match: (e) => ctrl(e) && e.key === 'Enter' && !e.altKey && !e.shiftKey, run: (c) => c.queue() },
  { keys: 'Ctrl+Shift+Enter', does: 'queue a run at the front of the queue (taken next)', anywhere: true, match: (e) => ctrl(e) && e.key === 'Enter' && !e.altKey && e.shiftKey, run: (c) => c.queueFront() },
  { keys: 'Ctrl+Alt+Enter', does: 'cancel the run', anywhere: true, match: (e) => ctrl(e) && e.key === 'Enter' && e.altKey, run: (c) => c.cancel() },
  { keys: 'Ctrl+Z', does: 'undo', match: (e) => ctrl(e) && !e.shiftKey && key(e) === 'z', run: (c) => c.undo() },
  { keys: 'Ctrl+Y / Ctrl+Shift+Z', does: 'redo', match: (e) => ctrl(e) && (key(e) === 'y' || (e.shiftKey && key(e) === 'z')), run: (c) => c.redo() },
  { keys: 'Ctrl+C', does: 'copy the selected nodes', match: (e) => ctrl(e) && key(e) === 'c', run: (c) => c.copy() },
  { keys: 'Ctrl+Shift+V', does: 'paste keeping the links into the pasted nodes from nodes not copied', match: (e) => ctrl(e) && e.shiftKey && key(e) === 'v', run: (c) => c.pasteWithInputs() },
  { keys: 'Ctrl+V', does: 'paste at the mouse', match: (e) => ctrl(e) && key(e) === 'v', run: (c) => c.paste() },
  { keys: 'Ctrl+A', does: 'select every node', match: (e) => ctrl(e) && key(e) === 'a', run: (c) => c.selectAll() },
  { keys: 'Ctrl+B', does: 'bypass the selected nodes (inputs pass through)', match: (e) => ctrl(e) && key(e) === 'b', run: (c) => c.bypass() },
  { keys: 'Ctrl+M', does: 'mute the selected nodes (left out of runs)', match: (e) => ctrl(e) && key(e) === 'm', run: (c) => c.mute() },
  { keys: 'Ctrl+G', does: 'group the selected nodes', match: (e) => ctrl(e) && key(e) === 'g', run: (c) => c.group() },
  {
    keys: 'Alt+C / H',
    does: 'collapse the selected nodes to their headers (again: expand)',
    match: (e) => (e.altKey && !ctrl(e) && e.code === 'KeyC') || (!e.altKey && !ctrl(e) && !e.shiftKey && key(e) === 'h'),
    run: (c) => c.collapse(),
  },
  { keys: 'Shift+D', does: 'duplicate the selected nodes', match: (e) => e.shiftKey && !ctrl(e) && !e.altKey && key(e) === 'd', run: (c) => c.duplicate() },
  { keys: 'Delete / Backspace', does: 'delete the selection', match: (e) => e.key === 'Delete' || e.key === 'Backspace', run: (c) => c.deleteSelected() },
  { keys: 'Ctrl+X', does: 'delete the selection and join the links through it where the types fit', match: (e) => ctrl(e) && !e.shiftKey && key(e) === 'x', run: (c) => c.dissolveSelected() },
  { keys: 'Space', does: 'search nodes to add (on release; Space+drag pans instead)', match: (e) => e.key === ' ' && !ctrl(e), run: (c) => c.searchOnRelease() },
  { keys: 'Tab / double-click', does: 'search nodes to add', match: (e) => e.key === 'Tab' && !ctrl(e), run: (c) => c.search() },
  { keys: '.', does: 'fit the whole workflow in view', match: (e) => e.key === '.' && !ctrl(e), run: (c) => c.fit() },
  { keys: 'Q', does: 'show or hide the queue and run history', match: (e) => key(e) === 'q' && !ctrl(e), run: (c) => c.toggleHistory() },
  { keys: '?', does: 'show or hide this list', match: (e) => e.key === '?' && !ctrl(e), run: (c) => c.toggleHelp() },
];

/** Mouse gestures the help lists beside the keys (React Flow and the canvas's drag handlers do them). */
export const GESTURES: { keys: string; does: string }[] = [
  { keys: 'Space+drag / drag the canvas', does: 'pan' },
  { keys: 'Alt+drag a node', does: 'duplicate: the original stays, the copy goes where you drop' },
  { keys: 'Shift+drag / Ctrl+drag / Ctrl+click', does: 'select (a box, or one more node)' },
  { keys: "drag a link's end off its input", does: 'onto another input: the link moves there; onto the canvas: it is removed' },
  { keys: 'double-click a link', does: 'put a reroute point on it' },
];

/** Runs the shortcut for a key press, if any; `typing`: the focus is in a text field. */
export function runShortcut(e: KeyboardEvent, ctx: ShortcutContext, typing: boolean): boolean {
  const s = SHORTCUTS.find((x) => x.match(e));
  if (!s || (typing && !s.anywhere)) return false;
  // The browser's own meaning (save page, bookmark, print...) gives way, except copy/paste's.
  if (!['Ctrl+C', 'Ctrl+V', 'Delete / Backspace'].includes(s.keys)) e.preventDefault();
  s.run(ctx, e);
  return true;
}
