// Reroute points (ComfyUI's Reroute nodes): dots a link is drawn through, saved in the file's
// `reroutes:` section. Drawing only: the links stay the inputs' `$node.output`, so deleting a
// point keeps its links. Pure edits here (reroutes.test.ts); the dot is RerouteNode.tsx, the
// bent link RoutedEdge.tsx.
import type { RerouteDoc } from './api';
import type { GEdge, GNode } from './graph';

export type Reroutes = Record<string, RerouteDoc>;

/** React Flow ids of the dots: `reroute:r1`. */
export const REROUTE_PREFIX = 'reroute:';

const inputOf = (e: GEdge) => `${e.target}.${e.targetHandle}`;
const outputOf = (e: GEdge) => `${e.source}.${e.sourceHandle}`;

/** A fresh point id: r1, r2, ... */
export function freshRerouteId(reroutes: Reroutes): string {
  for (let i = 1; ; i++) if (!reroutes[`r${i}`]) return `r${i}`;
}

/** `input` (`node.input`) taken out of every point; points left with no input go. */
function withoutInput(reroutes: Reroutes, input: string): Reroutes {
  const out: Reroutes = {};
  for (const [id, r] of Object.entries(reroutes)) {
    const to = r.to.filter((x) => x !== input);
    if (to.length) out[id] = to.length === r.to.length ? r : { ...r, to };
  }
  return out;
}

/** A new point at `at` on the link `edge` (which leaves any point it went through). */
export function withRerouteAdded(reroutes: Reroutes, edge: GEdge, at: { x: number; y: number }): { reroutes: Reroutes; id: string } {
  const rest = withoutInput(reroutes, inputOf(edge));
  const id = freshRerouteId(rest);
  rest[id] = { at: [Math.round(at.x), Math.round(at.y)], from: outputOf(edge), to: [inputOf(edge)] };
  return { reroutes: rest, id };
}

export function withRerouteMoved(reroutes: Reroutes, id: string, at: { x: number; y: number }): Reroutes | null {
  const r = reroutes[id];
  const to: [number, number] = [Math.round(at.x), Math.round(at.y)];
  if (!r || (r.at[0] === to[0] && r.at[1] === to[1])) return null;
  return { ...reroutes, [id]: { ...r, at: to } };
}

/** The point removed: its links are untouched (they never changed), drawn straight again. */
export function withRerouteRemoved(reroutes: Reroutes, id: string): Reroutes | null {
  if (!reroutes[id]) return null;
  const out = { ...reroutes };
  delete out[id];
  return out;
}

/** The link just made into `edge`'s input from the point `id` goes through the point too. */
export function withInputRouted(reroutes: Reroutes, id: string, edge: GEdge): Reroutes {
  const r = reroutes[id];
  if (!r || r.from !== outputOf(edge)) return reroutes;
  const rest = withoutInput(reroutes, inputOf(edge));
  const mine = rest[id] ?? r;
  return { ...rest, [id]: { ...mine, to: [...mine.to.filter((x) => x !== inputOf(edge)), inputOf(edge)] } };
}

/**
 * The points with every input that is no longer linked to the point's `from` taken out, and
 * the points left with none dropped; `dropped` says which went (a point is only drawing, so a
 * stale one is a note, not an error: the engine does the same when it reads the file).
 */
export function prunedReroutes(reroutes: Reroutes, edges: GEdge[]): { reroutes: Reroutes; dropped: string[] } {
  const linked = new Map(edges.map((e) => [inputOf(e), outputOf(e)]));
  const routed = new Set<string>();
  const out: Reroutes = {};
  const dropped: string[] = [];
  for (const [id, r] of Object.entries(reroutes)) {
    const to = r.to.filter((input) => linked.get(input) === r.from && !routed.has(input));
    for (const input of to) routed.add(input);
    if (to.length) out[id] = to.length === r.to.length ? r : { ...r, to };
    else dropped.push(id);
  }
  return { reroutes: out, dropped };
}

/** The links as drawn: one going through a point is a `rerouted` edge that knows its point. */
export function routedEdges(edges: GEdge[], reroutes: Reroutes): GEdge[] {
  const via = new Map<string, string>();
  for (const [id, r] of Object.entries(reroutes)) for (const input of r.to) via.set(input, id);
  if (via.size === 0) return edges;
  return edges.map((e) => {
    const id = via.get(inputOf(e));
    return id && reroutes[id].from === outputOf(e) ? { ...e, type: 'rerouted', data: { via: id } } : e;
  });
}

/** The points as React Flow nodes (ids `reroute:ID`), centred on their `at`. */
export function rerouteNodes(reroutes: Reroutes, selected: string | null): GNode[] {
  return Object.entries(reroutes).map(([id, r]) => ({
    id: `${REROUTE_PREFIX}${id}`,
    type: 'reroute' as 'weft',
    position: { x: r.at[0], y: r.at[1] },
    origin: [0.5, 0.5] as [number, number],
    selected: selected === id,
    className: 'wr-node',
    data: { kind: '', values: {}, reroute: id },
  }));
}

/** A link made from a point's output socket stands for one from the point's `from`. */
export function viaReroute<C extends { source: string | null; sourceHandle?: string | null }>(c: C, reroutes: Reroutes): { c: C; via: string | null } {
  if (!c.source?.startsWith(REROUTE_PREFIX)) return { c, via: null };
  const via = c.source.slice(REROUTE_PREFIX.length);
  const r = reroutes[via];
  if (!r) return { c, via: null };
  const dot = r.from.indexOf('.');
  return { c: { ...c, source: r.from.slice(0, dot), sourceHandle: r.from.slice(dot + 1) }, via };
}
