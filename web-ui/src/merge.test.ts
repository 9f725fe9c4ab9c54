import { describe, expect, it } from 'vitest';
import type { WorkflowDoc } from './api';
import { WholeFloat } from './graph';
import { describeConflicts, merge3 } from './merge';

const base: WorkflowDoc = {
  weft: 1,
  nodes: {
    model: { type: 'LoadCheckpoint', name: 'tiny-shapes' },
    sample: { type: 'Sampler', model: '$model.unet', seed: 42, cfg: 5.0, steps: 20 },
    save: { type: 'SaveImage', image: '$sample.latent' },
  },
  layout: { model: [0, 0], sample: [300, 0], save: [600, 0] },
};
const edit = (f: (d: WorkflowDoc) => void): WorkflowDoc => {
  const d = structuredClone(base);
  f(d);
  return d;
};

describe('merge3', () => {
  it('keeps both sides when they changed different inputs (the other tab saved cfg, this one set the seed)', () => {
    const theirs = edit((d) => (d.nodes.sample.cfg = 6.5));
    const mine = edit((d) => (d.nodes.sample.seed = 777));
    const { doc, conflicts } = merge3(base, theirs, mine);
    expect(conflicts).toEqual([]);
    expect(doc.nodes.sample).toMatchObject({ cfg: 6.5, seed: 777, steps: 20 });
  });

  it('reports an input both sides changed differently, keeping mine; the same change is no conflict', () => {
    const theirs = edit((d) => ((d.nodes.sample.cfg = 6.5), (d.nodes.sample.steps = 30)));
    const mine = edit((d) => ((d.nodes.sample.cfg = 7), (d.nodes.sample.steps = 30)));
    const { doc, conflicts } = merge3(base, theirs, mine);
    expect(conflicts).toEqual([{ node: 'sample', input: 'cfg', theirs: 6.5, mine: 7 }]);
    expect(doc.nodes.sample.cfg).toBe(7);
    expect(doc.nodes.sample.steps).toBe(30);
    expect(describeConflicts(conflicts)).toBe('sample.cfg (file 6.5, yours 7)');
  });

  it('takes nodes added or deleted on either side, and flags a node deleted there but edited here', () => {
    const theirs = edit((d) => {
      d.nodes.extra = { type: 'Int', value: 3 };
      delete d.nodes.save;
    });
    const mine = edit((d) => (d.nodes.mine = { type: 'Int', value: 4 }));
    const merged = merge3(base, theirs, mine);
    expect(Object.keys(merged.doc.nodes).sort()).toEqual(['extra', 'mine', 'model', 'sample']);
    expect(merged.conflicts).toEqual([]);
    const edited = edit((d) => (d.nodes.save.prefix = 'kept'));
    const gone = merge3(base, theirs, edited);
    expect(gone.conflicts).toEqual([{ node: 'save', input: null, theirs: null, mine: edited.nodes.save }]);
    expect(gone.doc.nodes.save).toEqual(edited.nodes.save);
  });

  it("takes the canvas's whole floats (5.0) as the file's 5", () => {
    const mine = edit((d) => {
      d.nodes.sample.cfg = new WholeFloat(5) as unknown as number;
      d.nodes.sample.seed = 1;
    });
    const theirs = edit((d) => (d.nodes.sample.cfg = 6.5));
    const { doc, conflicts } = merge3(base, theirs, mine);
    expect(conflicts).toEqual([]);
    expect(doc.nodes.sample).toMatchObject({ cfg: 6.5, seed: 1 });
  });

  it('removes an input one side removed, and follows positions moved on either side', () => {
    const theirs = edit((d) => {
      delete d.nodes.sample.steps;
      d.layout!.model = [10, 10];
    });
    const mine = edit((d) => (d.layout!.save = [700, 50]));
    const { doc } = merge3(base, theirs, mine);
    expect('steps' in doc.nodes.sample).toBe(false);
    expect(doc.layout).toEqual({ model: [10, 10], sample: [300, 0], save: [700, 50] });
  });

  it('merges titles, colours and collapse node by node, whoever changed them', () => {
    const theirs = edit((d) => (d.appearance = { model: { title: 'Checkpoint' } }));
    const mine = edit((d) => (d.appearance = { sample: { collapsed: true, color: '#553333' } }));
    const { doc, conflicts } = merge3(base, theirs, mine);
    expect(conflicts).toEqual([]);
    expect(doc.appearance).toEqual({ model: { title: 'Checkpoint' }, sample: { collapsed: true, color: '#553333' } });
    // Mine removed a look the file still has: it stays removed.
    const b2 = edit((d) => (d.appearance = { save: { title: 'Out' } }));
    expect(merge3(b2, b2, base).doc.appearance).toBeUndefined();
  });
});
