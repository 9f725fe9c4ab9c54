// The editor's start-up and its keys, as hooks: what used to be effects inline in App.tsx's Editor.
import { useEffect } from 'react';
import { api } from './api';
import { followOpenFile } from './address';
import { saveAsAsk, saveOrAsk } from './fileactions';
import { cancelRun, connect, queueRun, reattach } from './live';
import { useMaskStore } from './maskstore';
import { runShortcut, type ShortcutContext } from './shortcuts';
import { useEditor } from './store';
import { startValidation } from './validation';
import { viewerOpen } from './viewer';

/** The workflow named in the address (`#/NAME`), or null. */
export const nameInAddress = () => decodeURIComponent(location.hash.replace(/^#\/?/, '')) || null;

/**
 * Start-up: the address and title follow the open file, edits are validated, then the catalogue,
 * the file list, the file named in the URL (else txt2img, else the first), the live connection
 * and any runs of it in flight. A hash change opens that file; leaving with unsaved edits asks.
 */
export function useStartup(openFile: (name: string) => Promise<void>, opened: () => void) {
  useEffect(() => {
    const stopAddress = followOpenFile(useEditor);
    const stopValidation = startValidation();
    let cancelled = false;
    (async () => {
      const ed = useEditor.getState();
      try {
        ed.setCatalogue(await api.nodes());
      } catch (e) {
        ed.say(`cannot read the node catalogue: ${(e as Error).message}`, 'error');
      }
      await ed.refreshList();
      if (cancelled) return;
      const list = useEditor.getState().workflows;
      const first = nameInAddress() ?? (list.find((w) => w.name === 'txt2img') ?? list[0])?.name;
      if (first) await ed.load(first);
      if (cancelled) return;
      opened();
      connect();
      void reattach();
    })();
    const onHash = () => {
      const n = nameInAddress();
      if (n && n !== useEditor.getState().name) void openFile(n);
    };
    window.addEventListener('hashchange', onHash);
    const beforeUnload = (e: BeforeUnloadEvent) => {
      if (useEditor.getState().dirty) e.preventDefault();
    };
    window.addEventListener('beforeunload', beforeUnload);
    return () => {
      cancelled = true;
      stopAddress();
      stopValidation();
      window.removeEventListener('hashchange', onHash);
      window.removeEventListener('beforeunload', beforeUnload);
    };
    // Once: openFile and opened only read refs and the store.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
}

/** The canvas's own actions the keys need beyond the store. */
export interface CanvasKeys {
  /** Pastes at the mouse when it is over the canvas. */
  paste: () => void;
  /** Ctrl+Shift+V: the same, keeping the pasted nodes' links from nodes not copied. */
  pasteWithInputs: () => void;
  search: () => void;
  fit: () => void;
  toggleHistory: () => void;
  toggleHelp: () => void;
}

/**
 * Keys (shortcuts.ts, the one table the help lists): they act on the canvas, never while typing
 * in a field, searching (`blocked`), painting a mask or viewing an image (Ctrl+S and the run keys
 * work anywhere).
 */
export function useShortcuts(canvas: CanvasKeys, blocked: boolean) {
  useEffect(() => {
    const ed = () => useEditor.getState();
    let space: 'idle' | 'armed' | 'dragged' = 'idle';
    const ctx: ShortcutContext = {
      save: (as) => void (as ? saveAsAsk() : saveOrAsk()),
      queue: () => void queueRun(),
      queueFront: () => void queueRun(undefined, true),
      cancel: () => void cancelRun(),
      undo: () => ed().undo(),
      redo: () => ed().redo(),
      copy: () => ed().copy(),
      selectAll: () => ed().selectAll(),
      deleteSelected: () => ed().deleteSelected(),
      dissolveSelected: () => ed().dissolveSelected(),
      // Space opens the search when it is released, unless the mouse was pressed meanwhile
      // (Space+drag pans: React Flow's pan key; ComfyUI's and Blender's habit).
      searchOnRelease: () => {
        if (space === 'idle') space = 'armed';
      },
      bypass: () => ed().toggleMode('bypass'),
      mute: () => ed().toggleMode('mute'),
      group: () => ed().groupSelected(),
      collapse: () => ed().toggleCollapse(),
      duplicate: () => ed().duplicateSelected(),
      ...canvas,
    };
    const onKey = (e: KeyboardEvent) => {
      const el = e.target as HTMLElement;
      const typing = el.closest('input, textarea, select, [contenteditable]') !== null;
      runShortcut(e, ctx, typing || blocked || useMaskStore.getState().node !== null || viewerOpen());
    };
    const onKeyUp = (e: KeyboardEvent) => {
      if (e.key !== ' ') return;
      if (space === 'armed') ctx.search();
      space = 'idle';
    };
    const onPointerDown = () => {
      if (space === 'armed') space = 'dragged';
    };
    window.addEventListener('keydown', onKey);
    window.addEventListener('keyup', onKeyUp);
    window.addEventListener('pointerdown', onPointerDown, true);
    return () => {
      window.removeEventListener('keydown', onKey);
      window.removeEventListener('keyup', onKeyUp);
      window.removeEventListener('pointerdown', onPointerDown, true);
    };
  }, [canvas, blocked]);
}
