import { describe, expect, it } from 'vitest';
import type { WorkflowDoc } from './api';
import { groupDiagnostics, staleNodes } from './runstore';

const before: WorkflowDoc = {
  weft: 1,
  nodes: {
    model: { type: 'LoadCheckpoint', name: 'tiny-shapes' },
    text: { type: 'PromptEncode', encoder: '$model.text_encoder', text: 'a star' },
    other: { type: 'PromptEncode', encoder: '$model.text_encoder', text: '$$text.x' },
    sample: { type: 'Sampler', positive: '$text.conditioning', steps: 12 },
    draw: { type: './lib/Txt2Img.yaml', prompt: 'x' },
    decode: { type: 'VaeDecode', latent: '$sample.latent' },
  },
};

describe('which nodes will re-run after a disk edit', () => {
  it('the changed node and what it feeds, not the rest', () => {
    const after = structuredClone(before);
    after.nodes.text.text = 'a moon';
    expect([...staleNodes(before, after)].sort()).toEqual(['decode', 'sample', 'text']);
    expect(staleNodes(before, before).size).toBe(0);
  });
  it('an input removed or a node added counts; a $$ literal is no link', () => {
    const after = structuredClone(before);
    delete after.nodes.sample.steps;
    after.nodes.extra = { type: 'Int', value: 1 };
    expect([...staleNodes(before, after)].sort()).toEqual(['decode', 'extra', 'sample']);
  });
  it('nodes of a subgraph file that changed', () => {
    expect([...staleNodes(before, before, new Set(['Txt2Img']))]).toEqual(['draw']);
  });
});

describe('positions shown only where they are in a file the user has', () => {
  const diags = [
    { node: 'a', pos: { line: 26, column: 12 }, message: 'bad' },
    { node: 'b', pos: { line: 3, column: 5 }, file: 'lib/Img2Img.yaml', message: 'bad inside' },
  ];
  it('keeps them for the file on disk', () => {
    expect(groupDiagnostics(diags, true).a[0].pos).toEqual({ line: 26, column: 12 });
  });
  it('drops them for the canvas, except in a subgraph file', () => {
    const g = groupDiagnostics(diags, false);
    expect(g.a[0].pos).toBeUndefined();
    expect(g.a[0].message).toBe('bad');
    expect(g.b[0].pos).toEqual({ line: 3, column: 5 });
  });
});
