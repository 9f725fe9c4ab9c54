// Three-way merge of workflow documents: the revision a tab read (base), the file on disk now
// (theirs) and the canvas (mine), node by node and input by input, so two tabs (or a tab and a
// text editor) that changed different inputs both keep their edits.
import type { WorkflowDoc } from './api';
import { WholeFloat } from './graph';

/** An input (or node, or the sweep section) both sides changed differently; mine was kept. */
export interface MergeConflict {
  node: string;
  /** The input, or null for the whole node (deleted on one side, edited on the other). */
  input: string | null;
  theirs: unknown;
  mine: unknown;
}

export interface Merged {
  doc: WorkflowDoc;
  conflicts: MergeConflict[];
}

/** JSON text of a value with the canvas's whole floats (WholeFloat, `5.0`) as plain numbers. */
const plain = (v: unknown) =>
  JSON.stringify(v, (_, x) => (typeof x === 'string' && x.startsWith('\u0001float:') ? Number(x.slice(7, -1)) : x));
const same = (a: unknown, b: unknown) => plain(a) === plain(b);

/** One value's merge: whichever side changed it wins; both changed alike is no conflict. */
function pick<T>(base: T | undefined, theirs: T | undefined, mine: T | undefined): { value: T | undefined; conflict: boolean } {
  if (same(mine, base)) return { value: theirs, conflict: false };
  if (same(theirs, base) || same(theirs, mine)) return { value: mine, conflict: false };
  return { value: mine, conflict: true };
}

export function merge3(base: WorkflowDoc | null, theirs: WorkflowDoc, mine: WorkflowDoc): Merged {
  const b = base ?? { weft: theirs.weft, nodes: {} };
  const conflicts: MergeConflict[] = [];
  const nodes: WorkflowDoc['nodes'] = {};
  const ids = [...new Set([...Object.keys(theirs.nodes), ...Object.keys(mine.nodes), ...Object.keys(b.nodes)])];
  for (const id of ids) {
    const [nb, nt, nm] = [b.nodes[id], theirs.nodes[id], mine.nodes[id]];
    if (nt === undefined || nm === undefined) {
      // Deleted on one side (or added on one side only): whole-node rule.
      const { value, conflict } = pick(nb, nt, nm);
      if (conflict) conflicts.push({ node: id, input: null, theirs: nt ?? null, mine: nm ?? null });
      if (value !== undefined) nodes[id] = value;
      continue;
    }
    const merged: Record<string, (typeof nm)[string]> = {};
    const keys = [...new Set([...Object.keys(nt), ...Object.keys(nm), ...Object.keys(nb ?? {})])];
    for (const key of keys) {
      const { value, conflict } = pick(nb?.[key], nt[key], nm[key]);
      if (conflict) conflicts.push({ node: id, input: key, theirs: nt[key] ?? null, mine: nm[key] ?? null });
      if (value !== undefined) merged[key] = value;
    }
    nodes[id] = merged;
  }
  const doc: WorkflowDoc = { weft: mine.weft, nodes };
  // Positions: whoever moved a node wins (mine when both did); no conflict is worth a word.
  const layout: Record<string, [number, number]> = {};
  for (const id of Object.keys(nodes)) {
    const p = pick(b.layout?.[id], theirs.layout?.[id], mine.layout?.[id]).value;
    if (p) layout[id] = p;
  }
  if (Object.keys(layout).length) doc.layout = layout;
  // Titles, colours, collapse: like positions, whoever changed a node's look wins.
  const appearance: NonNullable<WorkflowDoc['appearance']> = {};
  for (const id of Object.keys(nodes)) {
    const look = pick(b.appearance?.[id], theirs.appearance?.[id], mine.appearance?.[id]).value;
    if (look) appearance[id] = look;
  }
  if (Object.keys(appearance).length) doc.appearance = appearance;
  const sweep = pick(b.sweep, theirs.sweep, mine.sweep);
  if (sweep.conflict) conflicts.push({ node: 'sweep', input: null, theirs: theirs.sweep ?? null, mine: mine.sweep ?? null });
  if (sweep.value) doc.sweep = sweep.value;
  // Groups: whichever side changed them wins, mine when both did (no input is at stake).
  const groups = pick(b.groups, theirs.groups, mine.groups).value;
  if (groups?.length) doc.groups = groups;
  // Reroute points too: drawing only, whichever side changed them.
  const reroutes = pick(b.reroutes, theirs.reroutes, mine.reroutes).value;
  if (reroutes && Object.keys(reroutes).length) doc.reroutes = reroutes;
  return { doc, conflicts };
}

/** "sample.cfg (file 6.5, yours 5)" for each conflict. */
export function describeConflicts(conflicts: MergeConflict[]): string {
  const show = (v: unknown) => (v === null ? 'none' : v instanceof WholeFloat ? String(v.value) : typeof v === 'object' ? 'changed' : JSON.stringify(v));
  return conflicts
    .map((c) => `${c.input ? `${c.node}.${c.input}` : c.node} (file ${show(c.theirs)}, yours ${show(c.mine)})`)
    .join(', ');
}

/**
 * The outcome of merging the canvas (`mine`) with the file on disk (`theirs`) from the revision the
 * tab read (`base`): the merged document and what to tell the user (conflicts named per input).
 */
export function mergedWithDisk(name: string, base: WorkflowDoc | null, theirs: WorkflowDoc, mine: WorkflowDoc): { doc: WorkflowDoc; text: string; kind: 'info' | 'error' } {
  const { doc, conflicts } = merge3(base, theirs, mine);
  if (conflicts.length) return { doc, kind: 'error', text: `merged with ${name}.yaml on disk; changed on both sides, yours kept: ${describeConflicts(conflicts)}. Save to write it` };
  return { doc, kind: 'info', text: `merged your edits with ${name}.yaml on disk; save to write both` };
}
