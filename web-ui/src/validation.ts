// Validation while editing: the server's diagnostics on nodes and inputs before anything runs,
// asked for a moment after the graph changes. Messages change node heights, so they are not
// applied while a link is being dragged. Started by the editor (useValidation), not at import.
import { useEffect } from 'react';
import { api } from './api';
import { groupDiagnostics, useRunStore } from './runstore';
import { useEditor } from './store';

/** For the browser tests: 1 while a validation is pending or in flight, else 0. */
const pending = (n: number) => ((window as unknown as { __weftValidating: number }).__weftValidating = n);

/** Validates the canvas after each graph change from now on; returns the stop. */
export function startValidation(): () => void {
  let lastValidated = '';
  let timer: ReturnType<typeof setTimeout> | null = null;
  let generation = 0;
  pending(0);
  const validateSoon = (delay: number) => {
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
        const r = await api.validate(doc, useEditor.getState().name ?? undefined);
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
  };
  const unsubscribe = useEditor.subscribe((s, prev) => {
    if (s.edges === prev.edges && s.nodes === prev.nodes) return;
    if (s.broken) return;
    validateSoon(300);
  });
  return () => {
    unsubscribe();
    if (timer) clearTimeout(timer);
    generation++;
    pending(0);
  };
}

export function useValidation() {
  useEffect(() => startValidation(), []);
}
