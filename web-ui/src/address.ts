// The browser's address (`#/NAME`) and the tab's title follow the open file: the store's file
// slice only says which file is open; this is the one place that writes them.
import type { StoreApi } from 'zustand';

interface OpenFile {
  name: string | null;
  suggest: string | null;
}

/** The tab's title for an open file, or for an imported workflow not saved yet. */
export function titleFor(f: OpenFile): string | null {
  if (f.name) return `${f.name} · weft`;
  if (f.suggest) return `${f.suggest} (unsaved) · weft`;
  return null;
}

function show(f: OpenFile) {
  const title = titleFor(f);
  if (title) document.title = title;
  if (f.name) {
    // replaceState: no history entry per file, and no hashchange (which would open it again).
    if (location.hash !== `#/${f.name}`) history.replaceState(null, '', `#/${f.name}`);
  } else if (f.suggest && location.hash) {
    history.replaceState(null, '', location.pathname + location.search);
  }
}

/** Keeps the address and title on the open file from now on; returns the unsubscribe. */
export function followOpenFile(store: StoreApi<OpenFile>): () => void {
  let last = store.getState();
  show(last);
  return store.subscribe((now) => {
    if (now.name === last.name && now.suggest === last.suggest) return;
    last = now;
    show(now);
  });
}
