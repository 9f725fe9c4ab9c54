import { describe, expect, it } from 'vitest';
import type { NodeType } from './api';
import { estimateNodeSize, NODE_WIDTH } from './nodesize';

const prompt: NodeType = {
  type: 'PromptEncode', category: 'conditioning', doc: 'Encodes a prompt', version: 1, output_node: false,
  inputs: [
    { name: 'encoder', type: 'text_encoder', doc: '', optional: false, link_only: true },
    { name: 'text', type: 'string', doc: '', optional: false, link_only: false, widget: 'multiline' },
  ],
  outputs: [{ name: 'conditioning', type: 'conditioning', doc: '' }],
};

const loadImage: NodeType = {
  type: 'LoadImage', category: 'image', doc: 'Loads an image file', version: 1, output_node: false,
  inputs: [{ name: 'path', type: 'string', doc: 'the image file', optional: false, link_only: false, widget: 'image_file' }],
  outputs: [{ name: 'image', type: 'image', doc: '' }],
};

describe('estimateNodeSize', () => {
  it('stacks header, output rows, input rows and a prompt block; sockets on the row centres', () => {
    const s = estimateNodeSize(prompt, new Set())!;
    // border 1 + header 27 + padding 4 + 3 rows of 22 + the text block 43 + padding 4 + border 1
    expect(s).toMatchObject({ width: NODE_WIDTH, height: 1 + 27 + 4 + 66 + 43 + 4 + 1 });
    expect(s.handles.map((h) => [h.id, h.type, h.x, h.y, h.width])).toEqual([
      ['conditioning', 'source', 259, 32 + 11 - 5, 10],
      ['encoder', 'target', -9, 54 + 11 - 5, 10],
      ['text', 'target', -8, 76 + 11 - 4, 8],
    ]);
  });

  it('draws a block only where the catalogue says so, whatever the input is called', () => {
    const oneLine = { ...prompt, inputs: prompt.inputs.map((i) => (i.name === 'text' ? { ...i, widget: 'text' as const } : i)) };
    expect(estimateNodeSize(oneLine, new Set())!.height).toBe(1 + 27 + 4 + 66 + 4 + 1);
    const notes = { ...prompt, inputs: prompt.inputs.map((i) => (i.name === 'text' ? { ...i, name: 'notes' } : i)) };
    expect(estimateNodeSize(notes, new Set())!.height).toBe(1 + 27 + 4 + 66 + 43 + 4 + 1);
  });

  it('a linked prompt has no block', () => {
    expect(estimateNodeSize(prompt, new Set(['text']))!.height).toBe(1 + 27 + 4 + 66 + 4 + 1);
  });

  it('says nothing for an image input with its preview, or an unknown type', () => {
    expect(estimateNodeSize(loadImage, new Set())).toBeNull();
    expect(estimateNodeSize(loadImage, new Set(['path']))).not.toBeNull();
    expect(estimateNodeSize(undefined, new Set())).toBeNull();
  });
});
