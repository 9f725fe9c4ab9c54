// The queue panel's moves of a waiting run: buttons one place up, one down, to the front, and
// dragging its row onto another waiting row (above or below it, by which half it is dropped on).
import type React from 'react';
import { api } from './api';
import { dropMove, stepMove, type QueuePlace } from './queueorder';
import { useRunStore } from './runstore';
import { useEditor } from './store';

async function move(id: number, step: -1 | 1 | 'front'): Promise<void> {
  // The server's order, as its last `queue` event gave it: the neighbour is the one it takes
  // before or after this run, whatever the panel's list shows.
  await moveTo(id, stepMove(useRunStore.getState().queue.queued, id, step));
}

async function moveTo(id: number, place: QueuePlace | null): Promise<void> {
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

/** The data type a dragged queue row carries (so a file or a node dropped here is ignored). */
const RUN_DRAG = 'application/x-weft-run';

/** Props that make a queue row draggable (waiting runs) and a drop target (waiting runs). */
export function queueDrag(id: number, queued: boolean): React.HTMLAttributes<HTMLDivElement> & { draggable?: boolean } {
  if (!queued) return {};
  return {
    draggable: true,
    onDragStart: (e) => {
      e.dataTransfer.setData(RUN_DRAG, String(id));
      e.dataTransfer.effectAllowed = 'move';
    },
    onDragOver: (e) => {
      if (!e.dataTransfer.types.includes(RUN_DRAG)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'move';
      const box = e.currentTarget.getBoundingClientRect();
      e.currentTarget.dataset.drop = e.clientY > box.top + box.height / 2 ? 'below' : 'above';
    },
    onDragLeave: (e) => {
      delete e.currentTarget.dataset.drop;
    },
    onDrop: (e) => {
      const dragged = Number(e.dataTransfer.getData(RUN_DRAG));
      delete e.currentTarget.dataset.drop;
      if (!dragged) return;
      e.preventDefault();
      const box = e.currentTarget.getBoundingClientRect();
      const below = e.clientY > box.top + box.height / 2;
      void moveTo(dragged, dropMove(useRunStore.getState().queue.queued, dragged, id, below));
    },
  };
}
