import { describe, expect, it } from 'vitest';
import type { NodeType, WorkflowDoc } from './api';
import { copiesWithNewSeeds, seedInputs, withValues } from './copies';

const sampler: NodeType = {
  type: 'Sampler',
  category: 'sampling',
  doc: '',
  version: 1,
  inputs: [
    { name: 'seed', type: 'seed', doc: '', optional: false, link_only: false, max: 9 },
    { name: 'steps', type: 'int', doc: '', optional: false, link_only: false },
  ],
  outputs: [],
  output_node: false,
};
const cat = new Map([['Sampler', sampler]]);
const doc: WorkflowDoc = {
  weft: 1,
  nodes: {
    a: { type: 'Sampler', seed: 3, steps: 4 },
    b: { type: 'Sampler', seed: '$pick.value', steps: 4 },
    c: { type: 'Other', seed: 1 },
  },
};

describe('queue copies with new seeds', () => {
  it('finds the seeds the workflow gives values, not linked ones or other types', () => {
    expect(seedInputs(doc, cat)).toEqual([{ path: 'a.seed', max: 9 }]);
  });

  it('gives each copy a seed no other copy has and not the current one', () => {
    // A random source stuck on one value still yields distinct seeds.
    const sets = copiesWithNewSeeds(doc, cat, 5, () => 0.35);
    const seeds = sets.map((s) => s['a.seed']);
    expect(new Set(seeds).size).toBe(5);
    expect(seeds).not.toContain(3);
    for (const v of seeds) expect(v).toBeGreaterThanOrEqual(0);
    for (const v of seeds) expect(v).toBeLessThanOrEqual(9);
    expect(Object.keys(sets[0])).toEqual(['a.seed']);
  });

  it('writes overrides into a copy of the document, leaving the original alone', () => {
    const out = withValues(doc, { 'a.seed': 8 });
    expect(out.nodes.a.seed).toBe(8);
    expect(out.nodes.a.steps).toBe(4);
    expect(doc.nodes.a.seed).toBe(3);
  });
});
