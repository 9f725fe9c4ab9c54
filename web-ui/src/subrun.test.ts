import { describe, expect, it } from 'vitest';
import { canvasNode, userName, userText } from './graph';
import { SubgraphRun } from './subrun';

const canvas = new Set(['model', 'draw', 'repaint', 'save']);
const of = (id: string) => canvasNode(id, canvas);

describe('a subgraph node aggregates its inner nodes', () => {
  const planned = ['model', 'repaint__positive', 'repaint__negative', 'draw__sample', 'draw__decode', 'repaint__encode', 'repaint__sample', 'repaint__decode', 'save'];

  it('is not done while inner nodes it planned have not run', () => {
    const run = new SubgraphRun(planned, of);
    expect(run.update('repaint', 'repaint__positive', { state: 'running' }).state).toBe('running');
    const after = run.update('repaint', 'repaint__positive', { state: 'done', micros: 10 });
    expect(after.state).toBe('queued');
    expect(after.innerDone).toBe(1);
    expect(after.innerTotal).toBe(5);
  });

  it('runs while any inner node runs, fails when one fails, is done when all are', () => {
    const run = new SubgraphRun(planned, of);
    for (const id of ['repaint__positive', 'repaint__negative', 'repaint__encode']) run.update('repaint', id, { state: 'done', micros: 100 });
    expect(run.update('repaint', 'repaint__sample', { state: 'running', why: ["upstream 'repaint › encode' changed"] }).state).toBe('running');
    run.update('repaint', 'repaint__sample', { state: 'done', micros: 1000 });
    const done = run.update('repaint', 'repaint__decode', { state: 'done', micros: 5 });
    expect(done.state).toBe('done');
    expect(done.micros).toBe(1305);
    expect(done.why).toEqual(["upstream 'repaint › encode' changed"]);
    const other = new SubgraphRun(planned, of);
    other.update('draw', 'draw__sample', { state: 'running' });
    expect(other.update('draw', 'draw__decode', { state: 'failed' }).state).toBe('failed');
  });

  it('is cached when every inner node is', () => {
    const run = new SubgraphRun(planned, of);
    run.update('draw', 'draw__sample', { state: 'cached' });
    expect(run.update('draw', 'draw__decode', { state: 'cached' }).state).toBe('cached');
  });
});

describe('names the user sees', () => {
  it('writes inner ids with the subgraph node first', () => {
    expect(userName('repaint__sample', canvas)).toBe('repaint › sample');
    expect(userName('draw', canvas)).toBe('draw');
    expect(userName('lone__id', canvas)).toBe('lone__id');
    expect(userText("upstream 'repaint__sample' changed · input 'seed' changed", canvas)).toBe(
      "upstream 'repaint › sample' changed · input 'seed' changed",
    );
  });
});
