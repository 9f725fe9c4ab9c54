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
  selectAll: () => void;
  deleteSelected: () => void;
  bypass: () => void;
  mute: () => void;
  group: () => void;
  collapse: () => void;
  duplicate: () => void;
  search: () => void;
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
  { keys: 'Ctrl+V', does: 'paste at the mouse', match: (e) => ctrl(e) && key(e) === 'v', run: (c) => c.paste() },
  { keys: 'Ctrl+A', does: 'select every node', match: (e) => ctrl(e) && key(e) === 'a', run: (c) => c.selectAll() },
  { keys: 'Ctrl+B', does: 'bypass the selected nodes (inputs pass through)', match: (e) => ctrl(e) && key(e) === 'b', run: (c) => c.bypass() },
  { keys: 'Ctrl+M', does: 'mute the selected nodes (left out of runs)', match: (e) => ctrl(e) && key(e) === 'm', run: (c) => c.mute() },
  { keys: 'Ctrl+G', does: 'group the selected nodes', match: (e) => ctrl(e) && key(e) === 'g', run: (c) => c.group() },
  { keys: 'Alt+C', does: 'collapse the selected nodes to their headers (again: expand)', match: (e) => e.altKey && !ctrl(e) && e.code === 'KeyC', run: (c) => c.collapse() },
  { keys: 'Shift+D', does: 'duplicate the selected nodes', match: (e) => e.shiftKey && !ctrl(e) && !e.altKey && key(e) === 'd', run: (c) => c.duplicate() },
  { keys: 'Delete / Backspace', does: 'delete the selection', match: (e) => e.key === 'Delete' || e.key === 'Backspace', run: (c) => c.deleteSelected() },
  { keys: 'Space / Tab / double-click', does: 'search nodes to add', match: (e) => (e.key === ' ' || e.key === 'Tab') && !ctrl(e), run: (c) => c.search() },
  { keys: '.', does: 'fit the whole workflow in view', match: (e) => e.key === '.' && !ctrl(e), run: (c) => c.fit() },
  { keys: 'Q', does: 'show or hide the queue and run history', match: (e) => key(e) === 'q' && !ctrl(e), run: (c) => c.toggleHistory() },
  { keys: '?', does: 'show or hide this list', match: (e) => e.key === '?' && !ctrl(e), run: (c) => c.toggleHelp() },
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
