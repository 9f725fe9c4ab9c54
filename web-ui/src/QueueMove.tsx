// The queue panel's buttons that move a waiting run: one place up, one down, to the front.
import { api } from './api';
import { stepMove } from './queueorder';
import { useRunStore } from './runstore';
import { useEditor } from './store';

async function move(id: number, step: -1 | 1 | 'front'): Promise<void> {
  // The server's order, as its last `queue` event gave it: the neighbour is the one it takes
  // before or after this run, whatever the panel's list shows.
  const place = stepMove(useRunStore.getState().queue.queued, id, step);
  if (!place) return;
  try {
    const { queued } = await api.moveRun(id, place);
    useRunStore.setState((s) => ({ queue: { ...s.queue, queued }, historyTick: s.historyTick + 1 }));
  } catch (e) {
    useEditor.getState().say(`cannot move run #${id}: ${(e as Error).message}`, 'error');
  }
}

export function QueueMove({ id }: { id: number }) {
  const order = useRunStore((s) => s.queue.queued);
  const at = order.indexOf(id);
  const button = (step: -1 | 1 | 'front', label: string, title: string, testid: string) => (
    <button
      className="btn small"
      onClick={() => void move(id, step)}
      disabled={stepMove(order, id, step) == null}
      title={title}
      data-testid={testid}
    >
      {label}
    </button>
  );
  if (at < 0) return null;
  return (
    <span className="q-move">
      {button('front', '⤒', 'run this next (front of the queue)', 'queue-front')}
      {button(-1, '↑', 'one place earlier', 'queue-up')}
      {button(1, '↓', 'one place later', 'queue-down')}
    </span>
  );
}
