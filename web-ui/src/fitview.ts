// Fitting the view to a workflow just opened.
import { useEditor } from './store';

/**
 * Fits the view once the nodes are drawn, but never below half size: a big graph opens readable
 * around its centre (and only the nodes on screen are drawn); `.` or the fit button shows it all.
 * With no nodes it does nothing (React Flow would fit the first node added later).
 */
export function fitSoon(rf: { fitView: (o: { padding: number; maxZoom: number; minZoom: number }) => unknown; setViewport: (v: { x: number; y: number; zoom: number }) => unknown }) {
  requestAnimationFrame(() => {
    if (useEditor.getState().nodes.length > 0) rf.fitView({ padding: 0.15, maxZoom: 1, minZoom: 0.5 });
    else rf.setViewport({ x: 0, y: 0, zoom: 1 });
    (window as unknown as { __weftFitted?: number }).__weftFitted = performance.now();
  });
}

