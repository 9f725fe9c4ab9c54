import { describe, expect, it } from 'vitest';
import type { NodeType, WorkflowDoc } from './api';
import { extractSubgraph } from './extract';

const t = (type: string, inputs: [string, string][], outputs: [string, string][]): NodeType => ({
  type,
  category: 'x',
  doc: '',
  version: 1,
  inputs: inputs.map(([name, type]) => ({ name, type, doc: '', optional: false, link_only: false })),
  outputs: outputs.map(([name, type]) => ({ name, type, doc: '' })),
  output_node: false,
});
const cat = new Map(
  [
    t('LoadCheckpoint', [['name', 'enum']], [['unet', 'model'], ['vae', 'vae']]),
    t('Sampler', [['model', 'model'], ['positive', 'conditioning'], ['negative', 'conditioning'], ['seed', 'seed']], [['latent', 'latent']]),
    t('VaeDecode', [['vae', 'vae'], ['latent', 'latent']], [['image', 'image']]),
    t('SaveImage', [['image', 'image']], []),
    t('PromptEncode', [], [['conditioning', 'conditioning']]),
  ].map((x) => [x.type, x]),
);
const doc: WorkflowDoc = {
  weft: 1,
  nodes: {
    model: { type: 'LoadCheckpoint', name: 'tiny' },
    p: { type: 'PromptEncode' },
    sample: { type: 'Sampler', model: '$model.unet', positive: '$p.conditioning', negative: '$p.conditioning', seed: 7 },
    decode: { type: 'VaeDecode', vae: '$model.vae', latent: '$sample.latent' },
    save: { type: 'SaveImage', image: '$decode.image' },
    save2: { type: 'SaveImage', image: '$decode.image' },
  },
  layout: { model: [0, 0], p: [0, 200], sample: [300, 40], decode: [600, 20], save: [900, 0], save2: [900, 200] },
  appearance: { sample: { title: 'Main' }, save: { color: '#335533' } },
};

describe('convert a selection to a library subgraph', () => {
  const { library, workflow, node } = extractSubgraph(doc, new Set(['sample', 'decode']), cat, 'SampleDecode');

  it('exposes each outside source once, typed by what it gives, and each used output once', () => {
    expect(library.inputs).toEqual({
      model: { type: 'model', doc: 'was model.unet' },
      positive: { type: 'conditioning', doc: 'was p.conditioning' },
      vae: { type: 'vae', doc: 'was model.vae' },
    });
    expect(library.outputs).toEqual({ image: { from: '$decode.image', doc: "decode's image" } });
  });

  it('keeps the inner nodes as they were, links from outside read from the inputs', () => {
    expect(library.nodes).toEqual({
      sample: { type: 'Sampler', model: '$inputs.model', positive: '$inputs.positive', negative: '$inputs.positive', seed: 7 },
      decode: { type: 'VaeDecode', vae: '$inputs.vae', latent: '$sample.latent' },
    });
    expect(library.layout).toEqual({ sample: [0, 20], decode: [300, 0] });
    expect(library.appearance).toEqual({ sample: { title: 'Main' } });
  });

  it('replaces the selection with one node wired as before, where the first one stood', () => {
    expect(node).toBe('sample_decode');
    expect(Object.keys(workflow.nodes)).toEqual(['model', 'p', 'sample_decode', 'save', 'save2']);
    expect(workflow.nodes.sample_decode).toEqual({
      type: 'SampleDecode',
      model: '$model.unet',
      positive: '$p.conditioning',
      vae: '$model.vae',
    });
    expect(workflow.nodes.save.image).toBe('$sample_decode.image');
    expect(workflow.nodes.save2.image).toBe('$sample_decode.image');
    expect(workflow.layout!.sample_decode).toEqual([300, 20]);
    expect(workflow.layout!.sample).toBeUndefined();
    expect(workflow.appearance).toEqual({ save: { color: '#335533' } });
    // The original document is untouched.
    expect(doc.nodes.save.image).toBe('$decode.image');
  });

  it('refuses an empty selection and a source whose type nothing tells', () => {
    expect(() => extractSubgraph(doc, new Set(), cat, 'X')).toThrow(/select/);
    const odd: WorkflowDoc = { weft: 1, nodes: { a: { type: 'Mystery' }, b: { type: 'Unknown', x: '$a.out' } } };
    expect(() => extractSubgraph(odd, new Set(['b']), cat, 'X')).toThrow(/type of b\.x/);
  });
});
