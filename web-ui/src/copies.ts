//! "Queue N copies with new seeds": which inputs are seeds (by the catalogue's `seed` type), and
//! one set of fresh values a copy, as the `set` overrides POST /api/runs takes.
import type { Constant, NodeType, WorkflowDoc } from './api';

/** `node.input` of every seed input the workflow gives a value (a linked seed follows its link). */
export function seedInputs(doc: WorkflowDoc, catalogue: Map<string, NodeType>): { path: string; max: number }[] {
  const out: { path: string; max: number }[] = [];
  for (const [id, node] of Object.entries(doc.nodes)) {
    const t = catalogue.get(String(node.type));
    for (const i of t?.inputs ?? []) {
      if (i.type !== 'seed') continue;
      const v = node[i.name];
      if (typeof v === 'string' && v.startsWith('$') && !v.startsWith('$$')) continue;
      out.push({ path: `${id}.${i.name}`, max: Math.min(i.max ?? 2 ** 32 - 1, 2 ** 32 - 1) });
    }
  }
  return out;
}

/**
 * `count` override sets, each giving every seed a new value: drawn at random, never the seed the
 * workflow has now nor one an earlier copy used, so no copy repeats another's image.
 */
export function copiesWithNewSeeds(
  doc: WorkflowDoc,
  catalogue: Map<string, NodeType>,
  count: number,
  random: () => number = Math.random,
): Record<string, Constant>[] {
  const seeds = seedInputs(doc, catalogue);
  const used = new Map(seeds.map((s) => [s.path, new Set<number>([Number(valueAt(doc, s.path))])]));
  const sets: Record<string, Constant>[] = [];
  for (let c = 0; c < count; c++) {
    const set: Record<string, Constant> = {};
    for (const s of seeds) {
      const taken = used.get(s.path)!;
      let v = Math.floor(random() * (s.max + 1));
      // A collision is rare; stepping on keeps the values distinct even with a poor random source.
      for (let tries = 0; taken.has(v) && tries <= s.max; tries++) v = v >= s.max ? 0 : v + 1;
      taken.add(v);
      set[s.path] = v;
    }
    sets.push(set);
  }
  return sets;
}

function valueAt(doc: WorkflowDoc, path: string): Constant | undefined {
  const dot = path.indexOf('.');
  return doc.nodes[path.slice(0, dot)]?.[path.slice(dot + 1)];
}

/** The document with the overrides written in (for a canvas that is not its saved file). */
export function withValues(doc: WorkflowDoc, set: Record<string, Constant>): WorkflowDoc {
  const nodes = { ...doc.nodes };
  for (const [path, v] of Object.entries(set)) {
    const dot = path.indexOf('.');
    const id = path.slice(0, dot);
    nodes[id] = { ...nodes[id], [path.slice(dot + 1)]: v };
  }
  return { ...doc, nodes };
}
