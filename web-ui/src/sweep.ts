// Sweeps in the editor, as pure functions (unit-tested): axis values as typed (a list or a range),
// the cell count, the `sweep` of POST /api/runs, the file's `sweep:` section, the grid's layout.
import type { Constant, InputDecl } from './api';
import { WholeFloat, escapeDollar } from './graph';

export type SweepMode = 'grid' | 'zip';

/** The server refuses more cells unless asked; the editor never asks. */
export const MAX_CELLS = 10_000;

/** One axis as the user edits it: which input, and its values as typed. */
export interface SweepAxis {
  node: string;
  input: string;
  /** `1, 2, 3`, `4..8 step 2`; one value a line for a text input; `a, b` picked for a choices input. */
  text: string;
}

export interface SweepDraft {
  mode: SweepMode;
  axes: SweepAxis[];
}

export const emptySweep = (): SweepDraft => ({ mode: 'grid', axes: [] });

/** The workflow file's `sweep:` section as JSON: each axis a list of values or a range text. */
export interface SweepSection {
  mode?: SweepMode;
  axes: Record<string, Constant[] | string>;
}

export type AxisValues =
  | { ok: true; values: Constant[]; /** the range as typed, sent as text so the file keeps it */ range?: string }
  | { ok: false; error: string };

export const axisKey = (a: { node: string; input: string }) => `${a.node}.${a.input}`;

const NUMBER = String.raw`[-+]?(?:\d+(?:\.\d*)?|\.\d+)`;
const RANGE = new RegExp(String.raw`^\s*(${NUMBER})\s*\.\.\s*(${NUMBER})(?:\s+step\s+(${NUMBER}))?\s*$`, 'i');

/** Decimal places written in a number's text (`0.25` -> 2), to print range values without float noise. */
function decimals(text: string): number {
  const dot = text.indexOf('.');
  return dot < 0 ? 0 : text.length - dot - 1;
}

/**
 * `FROM..TO` or `FROM..TO step S`, both ends inclusive, as the server reads it: TO below FROM
 * counts down, a step must go from FROM towards TO, and a step that overshoots TO stops before
 * it. The count is worked out before any value is made, so `1..1000000000` is refused, not built.
 */
export function parseRange(text: string, whole: boolean): AxisValues | null {
  const m = RANGE.exec(text);
  if (!m) return null;
  const [, a, b, s] = m;
  const shown = text.trim();
  const from = Number(a);
  const to = Number(b);
  const step = s === undefined ? (to >= from ? 1 : -1) : Number(s);
  if (whole && [a, b, s ?? '1'].some((t) => /\./.test(t)))
    return { ok: false, error: `${shown}: this input takes whole numbers, so FROM, TO and the step must be whole` };
  if (step === 0 || (to - from) * step < 0) return { ok: false, error: `${shown}: a step of ${step} never goes from ${from} to ${to}` };
  const places = Math.min(12, Math.max(decimals(a), decimals(b), decimals(s ?? '1')));
  const count = Math.floor((to - from) / step + 1e-9) + 1;
  if (count > MAX_CELLS) return { ok: false, error: `${shown} makes ${count} values, over the ${MAX_CELLS.toLocaleString('en')} cell limit` };
  const values: Constant[] = [];
  for (let i = 0; i < count; i++) values.push(Number((from + i * step).toFixed(places)));
  return { ok: true, values, range: shown };
}

/** Why one value does not fit the input (the engine's check_constant, in short), or null. */
export function valueProblem(v: Constant, decl: InputDecl): string | null {
  if (decl.choices && decl.choices.length > 0) {
    return typeof v === 'string' && decl.choices.includes(v) ? null : `'${v}' is not one of: ${decl.choices.join(', ')}`;
  }
  switch (decl.type) {
    case 'bool':
      return typeof v === 'boolean' ? null : `'${v}' is not true or false`;
    case 'string':
    case 'enum':
      return typeof v === 'string' ? null : `expected text, found ${v}`;
    case 'int':
    case 'seed':
    case 'float': {
      if (typeof v !== 'number' || Number.isNaN(v)) return `'${v}' is not a number`;
      if (decl.type !== 'float' && !Number.isInteger(v)) return `${v} is not a whole number`;
      if (decl.type === 'seed' && v < 0) return `seed must be 0 or more, found ${v}`;
      if (decl.min != null && v < decl.min) return `${v} is below the minimum ${decl.min}`;
      if (decl.max != null && v > decl.max) return `${v} is above the maximum ${decl.max}`;
      if (decl.multiple_of && decl.type === 'int' && v % decl.multiple_of !== 0)
        return `${v} is not a multiple of ${decl.multiple_of}`;
      return null;
    }
  }
  return `${decl.type} inputs cannot be swept`;
}

const isNumberType = (t: string) => t === 'int' || t === 'seed' || t === 'float';

/** A text input takes one value a line (prompts have commas); the others a comma or space list. */
export const oneValueALine = (decl: InputDecl) => (decl.type === 'string' || decl.type === 'enum') && !decl.choices?.length;

/** A token as the file would read it: a number, true/false, else the text itself. */
function token(t: string, decl: InputDecl): Constant {
  if (isNumberType(decl.type) && t !== '' && !Number.isNaN(Number(t))) return Number(t);
  if (decl.type === 'bool' && /^(true|false)$/i.test(t)) return t.toLowerCase() === 'true';
  return t;
}

/** The values of an axis as typed, checked against the input's type, range and choices. */
export function axisValues(text: string, decl: InputDecl | undefined): AxisValues {
  if (!decl) return { ok: false, error: 'no such input' };
  if (decl.link_only) return { ok: false, error: `${decl.name} takes a link (${decl.type}), not values` };
  if (isNumberType(decl.type)) {
    const range = parseRange(text, decl.type !== 'float');
    if (range) {
      if (!range.ok) return range;
      for (const v of [range.values[0], range.values[range.values.length - 1]]) {
        const why = valueProblem(v, decl);
        if (why) return { ok: false, error: why };
      }
      return range;
    }
    if (/\.\./.test(text)) return { ok: false, error: `${text.trim()}: a range is FROM..TO or FROM..TO step S` };
  }
  const raw = oneValueALine(decl) ? text.split('\n').map((l) => l.replace(/\r$/, '')) : text.split(/[,\s]+/);
  const values = raw.filter((t) => t.trim() !== '').map((t) => token(oneValueALine(decl) ? t : t.trim(), decl));
  if (values.length === 0) return { ok: false, error: oneValueALine(decl) ? 'no values: one a line' : 'no values: a list like 1, 2, 3 or a range like 4..8 step 2' };
  if (values.length > MAX_CELLS) return { ok: false, error: `${values.length} values, over the ${MAX_CELLS.toLocaleString('en')} cell limit` };
  for (const v of values) {
    const why = valueProblem(v, decl);
    if (why) return { ok: false, error: why };
  }
  return { ok: true, values };
}

/** Cells of a sweep from its axes' lengths: the product (grid) or the common length (zip). */
export function countCells(mode: SweepMode, lengths: number[]): { cells: number } | { error: string } {
  if (lengths.length === 0) return { cells: 0 };
  if (mode === 'zip') {
    const n = lengths[0];
    if (lengths.some((l) => l !== n)) return { error: `zip takes axes of equal length; these have ${lengths.join(', ')} values` };
    return { cells: n };
  }
  const cells = lengths.reduce((a, b) => a * b, 1);
  return { cells };
}

/** What the canvas offers a sweep: node types by id, their input declarations, which inputs are linked. */
export interface SweepContext {
  kindOf: (node: string) => string | undefined;
  declOf: (kind: string, input: string) => InputDecl | undefined;
  isLinked: (node: string, input: string) => boolean;
}

export interface SweepCheck {
  /** Per axis (same order): its values or why not. */
  axes: AxisValues[];
  /** Cells when every axis is fine and the count is allowed. */
  cells: number | null;
  /** A sentence each: what stops the sweep from being queued. */
  problems: string[];
}

/** Everything the panel shows live: each axis checked, the cell count, what stops a queue. */
export function checkSweep(draft: SweepDraft, ctx: SweepContext): SweepCheck {
  const problems: string[] = [];
  const seen = new Set<string>();
  const axes = draft.axes.map((a): AxisValues => {
    const key = axisKey(a);
    const kind = ctx.kindOf(a.node);
    let r: AxisValues;
    if (!kind) r = { ok: false, error: `no node '${a.node}' on the canvas` };
    else if (!ctx.declOf(kind, a.input)) r = { ok: false, error: `${kind} has no input '${a.input}'` };
    else if (ctx.isLinked(a.node, a.input)) r = { ok: false, error: `${key} is linked to another node's output; unlink it to sweep its value` };
    else if (seen.has(key)) r = { ok: false, error: `${key} is already an axis` };
    else r = axisValues(a.text, ctx.declOf(kind, a.input));
    seen.add(key);
    if (!r.ok) problems.push(`${key}: ${r.error}`);
    return r;
  });
  if (draft.axes.length === 0) problems.push('add an axis: a node input and its values');
  let cells: number | null = null;
  if (problems.length === 0) {
    const c = countCells(
      draft.mode,
      axes.map((a) => (a.ok ? a.values.length : 0)),
    );
    if ('error' in c) problems.push(c.error);
    else if (c.cells > MAX_CELLS)
      problems.push(`${c.cells.toLocaleString('en')} cells is over the limit of ${MAX_CELLS.toLocaleString('en')}: fewer values, or zip instead of grid`);
    else cells = c.cells;
  }
  return { axes, cells, problems };
}

/**
 * The sweep as the file and the API take it: ranges as their text (the file keeps `4..8 step 2`),
 * lists as values, a float's whole numbers written as floats (`4.0`). An axis that does not parse
 * is kept as typed, so a save never drops it; the server then says where it is wrong.
 */
export function sweepSection(draft: SweepDraft, ctx: SweepContext): SweepSection | undefined {
  if (draft.axes.length === 0) return undefined;
  const axes: Record<string, Constant[] | string> = {};
  for (const a of draft.axes) {
    const kind = ctx.kindOf(a.node);
    const decl = kind ? ctx.declOf(kind, a.input) : undefined;
    const r = decl ? axisValues(a.text, decl) : null;
    if (r?.ok) {
      axes[axisKey(a)] = r.range ?? r.values.map((v) => fileValue(v, decl!));
    } else if (decl && oneValueALine(decl)) {
      axes[axisKey(a)] = a.text.split('\n').filter((l) => l.trim() !== '').map(escapeDollar);
    } else {
      axes[axisKey(a)] = a.text.trim();
    }
  }
  return draft.mode === 'zip' ? { mode: 'zip', axes } : { mode: 'grid', axes };
}

/** A value as the file writes it: a literal text starting with `$` as `$$` (else a link), `4.0` for a float. */
function fileValue(v: Constant, decl: InputDecl): Constant {
  if (typeof v === 'string') return escapeDollar(v);
  if (decl.type === 'float' && typeof v === 'number' && Number.isInteger(v)) return new WholeFloat(v) as unknown as Constant;
  return v;
}

/** The `sweep` of POST /api/runs: exactly the file's section (one format everywhere). */
export const sweepRequest = sweepSection;

/** A `sweep:` section read from a file, as the panel edits it. */
export function draftFromSection(section: SweepSection | undefined | null, declOf: (node: string, input: string) => InputDecl | undefined): SweepDraft {
  if (!section || typeof section !== 'object' || !section.axes) return emptySweep();
  const axes: SweepAxis[] = [];
  for (const [key, spec] of Object.entries(section.axes)) {
    const dot = key.indexOf('.');
    const node = dot < 0 ? key : key.slice(0, dot);
    const input = dot < 0 ? '' : key.slice(dot + 1);
    const decl = declOf(node, input);
    let text: string;
    const literal = (v: Constant) => (typeof v === 'string' && v.startsWith('$$') ? v.slice(1) : String(v));
    if (Array.isArray(spec)) text = spec.map(literal).join(decl && oneValueALine(decl) ? '\n' : ', ');
    else text = String(spec);
    axes.push({ node, input, text });
  }
  return { mode: section.mode === 'zip' ? 'zip' : 'grid', axes };
}

/** A sweep cell as the server reports it. */
export interface SweepCell {
  run: number;
  values: Record<string, Constant>;
  status: string;
  image: string | null;
}

export interface GridLayout {
  rowLabels: string[];
  colLabels: string[];
  /** Cell indexes by row then column; null where no cell falls. */
  at: (number | null)[][];
}

/** `sample.seed` -> `seed`, unless two axes share an input name (then the whole key). */
function shortNames(keys: string[]): Map<string, string> {
  const tails = keys.map((k) => k.slice(k.indexOf('.') + 1));
  return new Map(keys.map((k, i) => [k, tails.filter((t) => t === tails[i]).length > 1 ? k : tails[i]]));
}

const show = (v: Constant | undefined) => (typeof v === 'string' ? (v.length > 40 ? `${v.slice(0, 39)}…` : v) : String(v));

/**
 * Where each cell goes: rows by the values of the `rows` axes, columns by the `columns` axes
 * (placed by value, not index, because a third axis multiplies the rows while the cells come
 * last-axis-fastest). A zip sweep is one row, each column labelled with all its values. A
 * repeated value gets a row of its own instead of hiding a cell.
 */
export function gridLayout(cells: SweepCell[], rows: string[], columns: string[], mode: SweepMode): GridLayout {
  const names = shortNames([...rows, ...columns]);
  const label = (keys: string[], c: SweepCell) => keys.map((k) => `${names.get(k)} ${show(c.values[k])}`).join(' · ');
  if (mode === 'zip') {
    const keys = [...rows, ...columns];
    return { rowLabels: [''], colLabels: cells.map((c) => label(keys, c)), at: [cells.map((_, i) => i)] };
  }
  const colKeys: string[] = [];
  const colLabels: string[] = [];
  const rowKeys: string[] = [];
  const rowLabels: string[] = [];
  const at: (number | null)[][] = [];
  cells.forEach((c, i) => {
    const ck = JSON.stringify(columns.map((k) => c.values[k]));
    let col = colKeys.indexOf(ck);
    if (col < 0) {
      col = colKeys.push(ck) - 1;
      colLabels.push(label(columns, c));
    }
    const rk = JSON.stringify(rows.map((k) => c.values[k]));
    let row = rowKeys.findIndex((k, r) => k === rk && at[r][col] == null);
    if (row < 0) {
      row = rowKeys.push(rk) - 1;
      rowLabels.push(label(rows, c));
      at.push([]);
    }
    at[row][col] = i;
  });
  for (const r of at) for (let c = 0; c < colKeys.length; c++) r[c] ??= null;
  return { rowLabels, colLabels, at };
}
