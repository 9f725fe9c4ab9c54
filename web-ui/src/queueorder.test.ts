import { describe, expect, it } from 'vitest';
import { dropMove, inQueueOrder, stepMove } from './queueorder';

describe('queue order', () => {
  const runs = [
    { id: 5, status: 'queued' },
    { id: 3, status: 'queued' },
    { id: 9, status: 'queued' },
    { id: 2, status: 'running' },
    { id: 7, status: 'queued' },
  ];

  it('lists the running run, then the server order, then runs it does not list yet', () => {
    expect(inQueueOrder(runs, [9, 3, 5]).map((r) => r.id)).toEqual([2, 9, 3, 5, 7]);
    // Before the first queue event: oldest first.
    expect(inQueueOrder(runs, []).map((r) => r.id)).toEqual([2, 3, 5, 7, 9]);
  });

  it('a step up or down is a move next to the neighbour; the ends do not move', () => {
    const order = [9, 3, 5];
    expect(stepMove(order, 3, -1)).toEqual({ before: 9 });
    expect(stepMove(order, 3, 1)).toEqual({ after: 5 });
    expect(stepMove(order, 5, 'front')).toEqual({ to: 'front' });
    expect(stepMove(order, 9, -1)).toBeNull();
    expect(stepMove(order, 9, 'front')).toBeNull();
    expect(stepMove(order, 5, 1)).toBeNull();
    expect(stepMove(order, 4, 1)).toBeNull();
  });

  it('drops a run above or below another, and nowhere when it is there already', () => {
    const order = [1, 2, 3, 4];
    expect(dropMove(order, 4, 2, false)).toEqual({ before: 2 });
    expect(dropMove(order, 1, 3, true)).toEqual({ after: 3 });
    expect(dropMove(order, 2, 3, false)).toBeNull();
    expect(dropMove(order, 3, 2, true)).toBeNull();
    expect(dropMove(order, 2, 2, true)).toBeNull();
    expect(dropMove(order, 9, 2, true)).toBeNull();
    expect(dropMove(order, 2, 9, true)).toBeNull();
  });
});
