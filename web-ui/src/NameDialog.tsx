// A small name dialog (instead of window.prompt) for New, Save as and Convert to subgraph:
// `askName` opens it and resolves with the name typed, or null when cancelled. Its state is a
// tiny store, so the dialog is plain React and nothing is assigned while rendering.
import { create } from 'zustand';

interface Asking {
  title: string;
  value: string;
  answer: (name: string | null) => void;
}

const useNameDialog = create<{ asking: Asking | null }>(() => ({ asking: null }));

/** Asks for a workflow name; a second question while one is open cancels the first. */
export function askName(title: string, value: string): Promise<string | null> {
  return new Promise((answer) => {
    useNameDialog.getState().asking?.answer(null);
    useNameDialog.setState({ asking: { title, value, answer } });
  });
}

/** A workflow's file name: letters, digits, `_ . -` (the server's rule for names). */
export const isWorkflowName = (name: string) => /^[A-Za-z0-9_.-]+$/.test(name);

export function NameDialog() {
  const d = useNameDialog((s) => s.asking);
  if (!d) return null;
  const done = (v: string | null) => {
    useNameDialog.setState({ asking: null });
    d.answer(v);
  };
  const ok = isWorkflowName(d.value);
  return (
    <div className="palette-back" onMouseDown={() => done(null)}>
      <form
        className="dialog"
        onMouseDown={(e) => e.stopPropagation()}
        onSubmit={(e) => {
          e.preventDefault();
          if (ok) done(d.value);
        }}
      >
        <b>{d.title}</b>
        <input
          autoFocus
          value={d.value}
          aria-label="workflow name"
          onChange={(e) => useNameDialog.setState({ asking: { ...d, value: e.target.value } })}
          onKeyDown={(e) => e.key === 'Escape' && done(null)}
        />
        <span className="muted">.yaml in the workflows folder{ok ? '' : ' — letters, digits, _ . - only'}</span>
        <div>
          <button className="btn primary" type="submit" disabled={!ok}>
            OK
          </button>
          <button className="btn" type="button" onClick={() => done(null)}>
            Cancel
          </button>
        </div>
      </form>
    </div>
  );
}
