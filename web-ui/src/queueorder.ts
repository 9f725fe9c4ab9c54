// The queue panel's order: the running run, then the waiting ones in the order the server
// takes them (its `queue` event lists them), and the request that moves one a step.
import type { RunDetail } from './api';

/** Where the server puts a queued run (POST /api/runs/{id}/move's body). */
export type QueuePlace = { to: 'front' | 'back' } | { before: number } | { after: number };

/** Running first, then queued runs in `order` (the server's); runs it does not list yet
 * (queued a moment ago, or past its 100 listed ids) follow, oldest first. */
export function inQueueOrder<R extends Pick<RunDetail, 'id' | 'status'>>(runs: R[], order: number[]): R[] {
  const place = new Map(order.map((id, i) => [id, i]));
  const rank = (r: R) => (r.status === 'running' ? -1 : (place.get(r.id) ?? order.length));
  return [...runs].sort((a, b) => rank(a) - rank(b) || a.id - b.id);
}

/** The move that takes queued run `id` one place up (`-1`), one down (`1`) or to the front,
 * among the queued ids in `order`; null when it is there already (or not queued). */
export function stepMove(order: number[], id: number, step: -1 | 1 | 'front'): QueuePlace | null {
  const at = order.indexOf(id);
  if (at < 0) return null;
  if (step === 'front') return at === 0 ? null : { to: 'front' };
  const next = at + step;
  if (next < 0 || next >= order.length) return null;
  return step < 0 ? { before: order[next] } : { after: order[next] };
}

/** The move that drops queued run `id` on the row of queued run `onto`, above it or (`below`)
 * under it; null when that is where it is already, or either is not queued. */
export function dropMove(order: number[], id: number, onto: number, below: boolean): QueuePlace | null {
  const from = order.indexOf(id);
  const at = order.indexOf(onto);
  if (from < 0 || at < 0 || id === onto) return null;
  // Where it lands among the others: it is there already when its neighbour on that side is `onto`.
  if (below ? order[from - 1] === onto : order[from + 1] === onto) return null;
  return below ? { after: onto } : { before: onto };
}
