import { describe, expect, it } from 'vitest';
import type { InputDecl } from './api';
import { toJsonText } from './graph';
import {
  MAX_CELLS,
  axisValues,
  checkSweep,
  countCells,
  draftFromSection,
  gridLayout,
  parseRange,
  sweepRequest,
  type SweepCell,
  type SweepContext,
  type SweepDraft,
} from './sweep';

const decl = (name: string, type: string, more: Partial<InputDecl> = {}): InputDecl => ({
  name,
  type,
  doc: '',
  optional: false,
  link_only: false,
  ...more,
});

const sampler: Record<string, InputDecl> = {
  model: decl('model', 'model', { link_only: true }),
  seed: decl('seed', 'seed'),
  steps: decl('steps', 'int', { min: 1, max: 1000 }),
  cfg: decl('cfg', 'float', { min: 0, max: 30 }),
  sampler: decl('sampler', 'enum', { choices: ['euler', 'euler_ancestral', 'dpmpp_2m'] }),
};
const prompt: Record<string, InputDecl> = { text: decl('text', 'string') };
const latent: Record<string, InputDecl> = { width: decl('width', 'int', { min: 8, max: 2048, multiple_of: 8 }) };

const ctx: SweepContext = {
  kindOf: (n) => ({ sample: 'Sampler', positive: 'PromptEncode', latent: 'EmptyLatent' })[n],
  declOf: (kind, input) => ({ Sampler: sampler, PromptEncode: prompt, EmptyLatent: latent })[kind]?.[input],
  isLinked: (n, i) => n === 'sample' && i === 'model',
};

describe('axis values', () => {
  it('reads a list, with commas or spaces', () => {
    expect(axisValues('1, 2, 3', sampler.seed)).toEqual({ ok: true, values: [1, 2, 3] });
    expect(axisValues('4 6\n8', sampler.cfg)).toEqual({ ok: true, values: [4, 6, 8] });
  });

  it('reads an inclusive range, with or without a step, and keeps its text', () => {
    expect(parseRange('1..4', true)).toEqual({ ok: true, values: [1, 2, 3, 4], range: '1..4' });
    expect(axisValues(' 4..8 step 2 ', sampler.cfg)).toEqual({ ok: true, values: [4, 6, 8], range: '4..8 step 2' });
    // A step that overshoots the end stops before it; TO below FROM counts down (as the server reads it).
    expect(axisValues('1..10 step 4', sampler.seed)).toMatchObject({ values: [1, 5, 9] });
    expect(axisValues('3..1', sampler.seed)).toMatchObject({ values: [3, 2, 1] });
    expect(axisValues('8..4 step -2', sampler.cfg)).toMatchObject({ values: [8, 6, 4] });
  });

  it('makes float range values without rounding noise', () => {
    expect(axisValues('0.1..0.5 step 0.1', sampler.cfg)).toMatchObject({ values: [0.1, 0.2, 0.3, 0.4, 0.5] });
    expect(axisValues('7..8 step 0.25', sampler.cfg)).toMatchObject({ values: [7, 7.25, 7.5, 7.75, 8] });
  });

  it('refuses bad ranges with the reason', () => {
    expect(axisValues('8..4 step 2', sampler.seed)).toMatchObject({ ok: false, error: '8..4 step 2: a step of 2 never goes from 8 to 4' });
    expect(axisValues('1..8 step 0', sampler.seed)).toMatchObject({ ok: false, error: expect.stringMatching(/step of 0 never goes/) });
    expect(axisValues('1..2 step 0.5', sampler.seed)).toMatchObject({ ok: false, error: expect.stringMatching(/whole numbers/) });
    expect(axisValues('1...4', sampler.seed)).toMatchObject({ ok: false, error: expect.stringMatching(/FROM..TO/) });
  });

  it('counts a huge range without building it', () => {
    const t0 = performance.now();
    const r = axisValues('1..1000000000', sampler.seed);
    // Building a billion values would take tens of seconds (or run out of memory); the bound
    // is loose so a loaded machine does not fail it (50 ms failed at load 10).
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(r).toMatchObject({ ok: false, error: expect.stringMatching(/1000000000 values, over the 10,000 cell limit/) });
  });

  it('checks each value against the input type, range, multiple and choices', () => {
    expect(axisValues('1, 2.5', sampler.steps)).toMatchObject({ ok: false, error: '2.5 is not a whole number' });
    expect(axisValues('0..3', sampler.steps)).toMatchObject({ ok: false, error: '0 is below the minimum 1' });
    expect(axisValues('4, 40', sampler.cfg)).toMatchObject({ ok: false, error: '40 is above the maximum 30' });
    expect(axisValues('-1', sampler.seed)).toMatchObject({ ok: false, error: 'seed must be 0 or more, found -1' });
    expect(axisValues('64, 70', latent.width)).toMatchObject({ ok: false, error: '70 is not a multiple of 8' });
    expect(axisValues('seven', sampler.steps)).toMatchObject({ ok: false, error: "'seven' is not a number" });
    expect(axisValues('euler, dpmpp_2m', sampler.sampler)).toEqual({ ok: true, values: ['euler', 'dpmpp_2m'] });
    expect(axisValues('euler, heunn', sampler.sampler)).toMatchObject({ ok: false, error: expect.stringMatching(/'heunn' is not one of: euler/) });
    expect(axisValues('', sampler.seed)).toMatchObject({ ok: false, error: expect.stringMatching(/^no values/) });
    expect(axisValues('1', sampler.model)).toMatchObject({ ok: false, error: expect.stringMatching(/takes a link/) });
  });

  it('takes one text a line, commas and all', () => {
    expect(axisValues('a red circle, small\n\na blue square\n', prompt.text)).toEqual({
      ok: true,
      values: ['a red circle, small', 'a blue square'],
    });
  });
});

describe('cell count', () => {
  it('multiplies a grid and zips equal lengths', () => {
    expect(countCells('grid', [4, 3])).toEqual({ cells: 12 });
    expect(countCells('grid', [])).toEqual({ cells: 0 });
    expect(countCells('zip', [3, 3])).toEqual({ cells: 3 });
    expect(countCells('zip', [4, 3])).toEqual({ error: 'zip takes axes of equal length; these have 4, 3 values' });
  });

  it('refuses more than 10,000 cells with the reason, and counts up to the limit', () => {
    const at: SweepDraft = { mode: 'grid', axes: [{ node: 'sample', input: 'seed', text: '1..100' }, { node: 'sample', input: 'steps', text: '1..100' }] };
    expect(checkSweep(at, ctx)).toMatchObject({ cells: MAX_CELLS, problems: [] });
    const over: SweepDraft = { ...at, axes: [at.axes[0], { node: 'sample', input: 'steps', text: '1..101' }] };
    const c = checkSweep(over, ctx);
    expect(c.cells).toBeNull();
    expect(c.problems).toEqual(['10,100 cells is over the limit of 10,000: fewer values, or zip instead of grid']);
  });

  it('names what is wrong with an axis: no such node or input, a linked input, a repeat', () => {
    const d: SweepDraft = {
      mode: 'grid',
      axes: [
        { node: 'gone', input: 'seed', text: '1' },
        { node: 'sample', input: 'nope', text: '1' },
        { node: 'sample', input: 'model', text: '1' },
        { node: 'sample', input: 'seed', text: '1, 2' },
        { node: 'sample', input: 'seed', text: '3' },
      ],
    };
    const c = checkSweep(d, ctx);
    expect(c.cells).toBeNull();
    expect(c.problems).toEqual([
      "gone.seed: no node 'gone' on the canvas",
      "sample.nope: Sampler has no input 'nope'",
      "sample.model: sample.model is linked to another node's output; unlink it to sweep its value",
      'sample.seed: sample.seed is already an axis',
    ]);
    expect(checkSweep({ mode: 'grid', axes: [] }, ctx).problems).toEqual(['add an axis: a node input and its values']);
  });
});

describe('the request and the file section', () => {
  const draft: SweepDraft = {
    mode: 'grid',
    axes: [
      { node: 'sample', input: 'seed', text: '1, 2' },
      { node: 'sample', input: 'cfg', text: '4, 6' },
      { node: 'sample', input: 'steps', text: '4..8 step 2' },
      { node: 'positive', input: 'text', text: 'a red circle, small\n$5 off' },
      { node: 'sample', input: 'sampler', text: 'euler, dpmpp_2m' },
    ],
  };

  it('builds the contract body: ranges as text, lists as values, whole floats as floats', () => {
    const body = sweepRequest(draft, ctx);
    expect(toJsonText(body)).toBe(
      '{"mode":"grid","axes":{"sample.seed":[1,2],"sample.cfg":[4.0,6.0],"sample.steps":"4..8 step 2",' +
        '"positive.text":["a red circle, small","$$5 off"],"sample.sampler":["euler","dpmpp_2m"]}}',
    );
    expect(sweepRequest({ mode: 'zip', axes: [draft.axes[0]] }, ctx)).toEqual({ mode: 'zip', axes: { 'sample.seed': [1, 2] } });
    expect(sweepRequest({ mode: 'grid', axes: [] }, ctx)).toBeUndefined();
  });

  it('keeps an axis that does not parse as typed, so a save never drops it', () => {
    const body = sweepRequest({ mode: 'grid', axes: [{ node: 'sample', input: 'steps', text: ' 1, x ' }] }, ctx);
    expect(body).toEqual({ mode: 'grid', axes: { 'sample.steps': '1, x' } });
  });

  it('round-trips through the file section', () => {
    const section = JSON.parse(toJsonText(sweepRequest(draft, ctx)));
    const back = draftFromSection(section, (n, i) => ctx.declOf(ctx.kindOf(n) ?? '', i));
    expect(back.mode).toBe('grid');
    expect(back.axes.map((a) => [a.node, a.input])).toEqual(draft.axes.map((a) => [a.node, a.input]));
    // Each axis reads back to the same values.
    for (const [i, a] of back.axes.entries()) {
      const d = ctx.declOf(ctx.kindOf(a.node)!, a.input);
      expect(axisValues(a.text, d)).toMatchObject({ ok: true, values: (axisValues(draft.axes[i].text, d) as { values: unknown[] }).values });
    }
    expect(draftFromSection(undefined, () => undefined)).toEqual({ mode: 'grid', axes: [] });
    expect(draftFromSection({ mode: 'zip', axes: { 'sample.seed': '1..3' } }, () => sampler.seed).axes[0]).toEqual({
      node: 'sample',
      input: 'seed',
      text: '1..3',
    });
  });
});

describe('grid layout', () => {
  const cell = (run: number, values: SweepCell['values']): SweepCell => ({ run, values, status: 'queued', image: null });

  it('puts the first axis on rows and the second on columns, cells in row-major order', () => {
    const cells = [cell(1, { 'sample.seed': 1, 'sample.cfg': 4 }), cell(2, { 'sample.seed': 1, 'sample.cfg': 6 }), cell(3, { 'sample.seed': 2, 'sample.cfg': 4 }), cell(4, { 'sample.seed': 2, 'sample.cfg': 6 })];
    const g = gridLayout(cells, ['sample.seed'], ['sample.cfg'], 'grid');
    expect(g.rowLabels).toEqual(['seed 1', 'seed 2']);
    expect(g.colLabels).toEqual(['cfg 4', 'cfg 6']);
    expect(g.at).toEqual([
      [0, 1],
      [2, 3],
    ]);
  });

  it('places a third axis on the rows by value, though the cells come last-axis-fastest', () => {
    const cells: SweepCell[] = [];
    let run = 0;
    for (const seed of [1, 2]) for (const cfg of [4, 6]) for (const steps of [10, 20]) cells.push(cell(++run, { 'sample.seed': seed, 'sample.cfg': cfg, 'sample.steps': steps }));
    const g = gridLayout(cells, ['sample.seed', 'sample.steps'], ['sample.cfg'], 'grid');
    expect(g.rowLabels).toEqual(['seed 1 · steps 10', 'seed 1 · steps 20', 'seed 2 · steps 10', 'seed 2 · steps 20']);
    expect(g.at).toEqual([
      [0, 2],
      [1, 3],
      [4, 6],
      [5, 7],
    ]);
  });

  it('gives a repeated value its own row instead of hiding a cell, and says the node when inputs share a name', () => {
    const cells = [cell(1, { 'a.seed': 1, 'b.seed': 4 }), cell(2, { 'a.seed': 1, 'b.seed': 4 })];
    const g = gridLayout(cells, ['a.seed'], ['b.seed'], 'grid');
    expect(g.at).toEqual([[0], [1]]);
    expect(g.rowLabels).toEqual(['a.seed 1', 'a.seed 1']);
    expect(g.colLabels).toEqual(['b.seed 4']);
  });

  it('lays a zip out as one row and a single axis as one row', () => {
    const cells = [cell(1, { 'sample.seed': 1, 'sample.cfg': 4 }), cell(2, { 'sample.seed': 2, 'sample.cfg': 6 })];
    expect(gridLayout(cells, ['sample.seed'], ['sample.cfg'], 'zip')).toEqual({
      rowLabels: [''],
      colLabels: ['seed 1 · cfg 4', 'seed 2 · cfg 6'],
      at: [[0, 1]],
    });
    const one = gridLayout([cell(1, { 'sample.seed': 1 }), cell(2, { 'sample.seed': 2 })], [], ['sample.seed'], 'grid');
    expect(one.at).toEqual([[0, 1]]);
  });
});
