import { createRoot } from 'react-dom/client';
import { App } from './App';

createRoot(document.getElementById('root')!).render(
  <>
    <App />
  </>,
);

// For the browser tests and for poking at the editor from the console.
import { useEditor } from './store';
import { useRunStore } from './runstore';
import { useSweepStore } from './sweeprun';
Object.assign(window, { __weft: useEditor, __weftRun: useRunStore, __weftSweep: useSweepStore });
