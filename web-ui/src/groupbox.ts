// A group's box (Ctrl+G) as the file's `groups:` holds it, and the box around some nodes: pure,
// apart from the group's drawing (groups.tsx), so the store can make groups without importing a view.
import type { GNode } from './graph';

export interface GroupBox {
  title: string;
  color?: string;
  /** x, y, width, height in canvas units. */
  box: [number, number, number, number];
}

export const GROUP_PREFIX = 'group:';
export const DEFAULT_GROUP_COLOUR = '#3f789e';
/** Room around the nodes a new group holds, and for its title bar. */
const PAD = 24;
const TITLE = 36;

/** The box around some nodes (their measured size, or the usual node size before measuring). */
export function boxAround(nodes: GNode[]): [number, number, number, number] {
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const n of nodes) {
    const w = n.measured?.width ?? 260;
    const h = n.measured?.height ?? 200;
    x0 = Math.min(x0, n.position.x);
    y0 = Math.min(y0, n.position.y);
    x1 = Math.max(x1, n.position.x + w);
    y1 = Math.max(y1, n.position.y + h);
  }
  return [Math.round(x0 - PAD), Math.round(y0 - PAD - TITLE), Math.round(x1 - x0 + 2 * PAD), Math.round(y1 - y0 + 2 * PAD + TITLE)];
}

