import { describe, expect, it } from 'vitest';
import { deflateSync } from 'node:zlib';
import type { NodeType, WorkflowDoc } from './api';
import { canvasNode, cloneNodes, docToGraph, freshId, graphToDoc, linkProblem, nameForImport, searchNodes, toJsonText } from './graph';
import { pngWorkflowText } from './png';

const doc: WorkflowDoc = {
  weft: 1,
  nodes: {
    model: { type: 'LoadCheckpoint', name: 'tiny-shapes' },
    positive: { type: 'PromptEncode', encoder: '$model.text_encoder', text: '$$5 off' },
    latent: { type: 'EmptyLatent', width: 64, height: 64 },
  },
  layout: { model: [0, 0], positive: [320, -120] },
};

const cat: NodeType[] = [
  {
    type: 'LoadCheckpoint', category: 'loaders', doc: 'Loads a checkpoint', version: 1, output_node: false,
    inputs: [{ name: 'name', type: 'string', doc: '', optional: false, link_only: false }],
    outputs: [
      { name: 'unet', type: 'model', doc: '' },
      { name: 'text_encoder', type: 'text_encoder', doc: '' },
    ],
  },
  {
    type: 'PromptEncode', category: 'conditioning', doc: 'Encodes a prompt', version: 1, output_node: false,
    inputs: [
      { name: 'encoder', type: 'text_encoder', doc: '', optional: false, link_only: true },
      { name: 'text', type: 'string', doc: '', optional: false, link_only: false },
    ],
    outputs: [{ name: 'conditioning', type: 'conditioning', doc: '' }],
  },
  {
    type: 'EmptyLatent', category: 'latent', doc: 'A blank latent image', version: 1, output_node: false,
    inputs: [{ name: 'width', type: 'int', doc: '', optional: false, link_only: false }],
    outputs: [{ name: 'latent', type: 'latent', doc: '' }],
  },
];

describe('graph', () => {
  it('round-trips a document, links, $$ literals and layout', () => {
    const { nodes, edges } = docToGraph(doc);
    expect(edges).toHaveLength(1);
    expect(edges[0]).toMatchObject({ source: 'model', sourceHandle: 'text_encoder', target: 'positive', targetHandle: 'encoder' });
    expect(nodes.find((n) => n.id === 'positive')!.data.values.text).toBe('$5 off');
    const back = graphToDoc(nodes, edges);
    expect(back.nodes).toEqual(doc.nodes);
    expect(back.layout!.model).toEqual([0, 0]);
    expect(back.layout!.latent).toBeDefined();
  });

  it('reads and writes appearance (title, colour, collapsed), leaving out what is default', () => {
    const d: WorkflowDoc = {
      ...doc,
      appearance: { model: { title: 'The model', color: '#553333', collapsed: true }, latent: { collapsed: false, title: '' } },
    };
    const { nodes, edges } = docToGraph(d);
    expect(nodes.find((n) => n.id === 'model')!.data.look).toEqual({ title: 'The model', color: '#553333', collapsed: true });
    expect(nodes.find((n) => n.id === 'latent')!.data.look).toBeUndefined();
    const back = graphToDoc(nodes, edges);
    expect(back.appearance).toEqual({ model: { title: 'The model', color: '#553333', collapsed: true } });
    // Appearance is no input: the node's entry is unchanged.
    expect(back.nodes).toEqual(doc.nodes);
    expect(graphToDoc(docToGraph(doc).nodes, []).appearance).toBeUndefined();
  });

  it('clones nodes with fresh ids, their values, mode, look and the links between them', () => {
    const { nodes, edges } = docToGraph({
      ...doc,
      nodes: { ...doc.nodes, positive: { ...doc.nodes.positive, bypass: true } },
      appearance: { positive: { title: 'Prompt', color: '#335533' } },
    });
    const chosen = nodes.filter((n) => n.id !== 'latent');
    const taken = new Set(nodes.map((n) => n.id));
    const out = cloneNodes(chosen, edges, taken, 40, 40);
    expect(out.nodes.map((n) => n.id)).toEqual(['load_checkpoint', 'prompt_encode']);
    const prompt = out.nodes[1];
    expect(prompt.data).toMatchObject({ kind: 'PromptEncode', mode: 'bypass', look: { title: 'Prompt', color: '#335533' }, values: { text: '$5 off' } });
    expect(prompt.position).toEqual({ x: 360, y: -80 });
    expect(prompt.selected).toBe(true);
    expect(out.edges).toEqual([
      expect.objectContaining({ id: 'prompt_encode:encoder', source: 'load_checkpoint', target: 'prompt_encode', targetHandle: 'encoder' }),
    ]);
    // The copy's look is its own: changing it leaves the original's alone.
    prompt.data.look!.title = 'changed';
    expect(nodes.find((n) => n.id === 'positive')!.data.look!.title).toBe('Prompt');
    // A link from a node left behind is not cloned.
    expect(cloneNodes([nodes.find((n) => n.id === 'positive')!], edges, taken, 0, 0).edges).toEqual([]);
  });

  it('keeps the input order of the file and writes whole floats as floats', () => {
    const d: WorkflowDoc = { weft: 1, nodes: { s: { type: 'Sampler', model: '$m.unet', cfg: 5, seed: 1 }, m: { type: 'LoadCheckpoint' } } };
    const { nodes, edges } = docToGraph(d);
    const back = graphToDoc(nodes, edges, (_k, i) => i === 'cfg');
    expect(Object.keys(back.nodes.s)).toEqual(['type', 'model', 'cfg', 'seed']);
    expect(toJsonText(back.nodes.s)).toBe('{"type":"Sampler","model":"$m.unet","cfg":5.0,"seed":1}');
  });

  it('refuses a link between incompatible types and a cycle', () => {
    const { nodes, edges } = docToGraph(doc);
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const catalogue = new Map(cat.map((t) => [t.type, t]));
    const ok = { source: 'model', sourceHandle: 'text_encoder', target: 'positive', targetHandle: 'encoder' };
    expect(linkProblem(catalogue, byId, edges, ok)).toBeNull();
    const bad = { source: 'latent', sourceHandle: 'latent', target: 'positive', targetHandle: 'encoder' };
    expect(linkProblem(catalogue, byId, edges, bad)).toMatch(/takes text_encoder, not latent/);
    expect(linkProblem(catalogue, byId, edges, { ...ok, target: 'model', targetHandle: 'name' })).toMatch(/itself|takes/);
  });

  it('makes fresh ids and searches name and doc', () => {
    expect(freshId('PromptEncode', () => false)).toBe('prompt_encode');
    expect(freshId('PromptEncode', (id) => id === 'prompt_encode')).toBe('prompt_encode_2');
    expect(searchNodes(cat, 'prompt')[0].type).toBe('PromptEncode');
    expect(searchNodes(cat, 'blank latent')[0].type).toBe('EmptyLatent');
    expect(searchNodes(cat, 'ckpt')[0].type).toBe('LoadCheckpoint');
  });

  it('finds nodes by ComfyUI names and plain words (aliases)', () => {
    const kinds = (...names: string[]) =>
      names.map((type) => ({ type, category: 'x', doc: '', version: 1, inputs: [], outputs: [], output_node: false }));
    const all = kinds('ImageScale', 'UpscaleImage', 'Sampler', 'EmptyLatent', 'PromptEncode', 'VaeDecode');
    const top = (q: string, n = 1) => searchNodes(all, q).slice(0, n).map((t) => t.type);
    expect(top('upscale', 2)).toEqual(['UpscaleImage', 'ImageScale']);
    expect(top('KSampler')).toEqual(['Sampler']);
    expect(top('CLIPTextEncode')).toEqual(['PromptEncode']);
    expect(top('empty latent image')).toEqual(['EmptyLatent']);
    expect(top('VAEDecode')).toEqual(['VaeDecode']);
    expect(top('ImageScaleBy')).toEqual(['ImageScale']);
    // Without aliases 'resize' matches nothing here.
    expect(top('resize')).toEqual(['ImageScale']);
  });
});

function chunk(type: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + body.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, body.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(body, 8);
  return out; // CRC left zero: the reader does not check it
}

function png(chunks: Uint8Array[]): Uint8Array {
  const parts = [new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]), ...chunks, chunk('IEND', new Uint8Array())];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

describe('png', () => {
  const text = JSON.stringify(doc);
  const enc = new TextEncoder();
  it('reads an uncompressed iTXt chunk', async () => {
    const body = new Uint8Array([...enc.encode('weft-workflow'), 0, 0, 0, 0, 0, ...enc.encode(text)]);
    expect(await pngWorkflowText(png([chunk('IHDR', new Uint8Array(13)), chunk('iTXt', body)]))).toBe(text);
  });
  it('reads a compressed iTXt chunk', async () => {
    const body = new Uint8Array([...enc.encode('weft-workflow'), 0, 1, 0, 0, 0, ...deflateSync(enc.encode(text))]);
    expect(await pngWorkflowText(png([chunk('iTXt', body)]))).toBe(text);
  });
  it('says null for other PNGs and non-PNGs', async () => {
    const body = new Uint8Array([...enc.encode('Comment'), 0, ...enc.encode('hi')]);
    expect(await pngWorkflowText(png([chunk('tEXt', body)]))).toBeNull();
    expect(await pngWorkflowText(enc.encode('not a png at all'))).toBeNull();
  });
});

describe('canvasNode', () => {
  const onCanvas = new Set(['img2img', 'save', 'a__b_literal']);
  it('keeps ids that are on the canvas', () => {
    expect(canvasNode('save', onCanvas)).toBe('save');
    expect(canvasNode('a__b_literal', onCanvas)).toBe('a__b_literal');
  });
  it('shows inner nodes of a subgraph on the subgraph node, nested too', () => {
    expect(canvasNode('img2img__sample', onCanvas)).toBe('img2img');
    expect(canvasNode('img2img__inner__decode', onCanvas)).toBe('img2img');
  });
  it('leaves unknown ids alone', () => {
    expect(canvasNode('other__sample', onCanvas)).toBe('other__sample');
  });
});

describe('nameForImport', () => {
  const none = () => false;
  it('takes the file stem, with characters a name may not have replaced', () => {
    expect(nameForImport('ComfyUI_00001_.png', none)).toBe('ComfyUI_00001_');
    expect(nameForImport('my workflow (api).json', none)).toBe('my-workflow-api');
    expect(nameForImport('.json', none)).toBe('imported');
  });
  it('never names an existing workflow', () => {
    const taken = new Set(['txt2img', 'txt2img-2']);
    expect(nameForImport('txt2img.json', (n) => taken.has(n))).toBe('txt2img-3');
  });
});

describe('bypass and mute', () => {
  it('are node keys, not inputs, and survive a round trip', () => {
    const d: WorkflowDoc = {
      weft: 1,
      nodes: {
        up: { type: 'LatentUpscale', bypass: true, latent: '$x.latent', scale: 2 },
        save: { type: 'SaveImage', mute: true, prefix: 'p' },
        plain: { type: 'Int', value: 1, mute: false },
      },
    };
    const { nodes, edges } = docToGraph(d);
    const up = nodes.find((n) => n.id === 'up')!;
    expect(up.data.mode).toBe('bypass');
    expect(up.data.values).toEqual({ scale: 2 });
    expect(up.data.order).toEqual(['latent', 'scale']);
    expect(nodes.find((n) => n.id === 'save')!.data.mode).toBe('mute');
    expect(nodes.find((n) => n.id === 'plain')!.data.mode).toBeUndefined();
    const back = graphToDoc(nodes, edges);
    expect(back.nodes.up).toEqual({ type: 'LatentUpscale', bypass: true, latent: '$x.latent', scale: 2 });
    expect(back.nodes.save).toEqual({ type: 'SaveImage', mute: true, prefix: 'p' });
    expect(back.nodes.plain).toEqual({ type: 'Int', value: 1 });
  });
});

describe('a file without a layout', () => {
  it('places its nodes in columns by depth, each right of what feeds it, below the nodes it placed', () => {
    const d: WorkflowDoc = {
      weft: 1,
      nodes: {
        show: { type: 'ShowInt', value: '$sum.sum' },
        sum: { type: 'AddInt', a: '$a.value', b: '$b.value' },
        a: { type: 'Int', value: 1 },
        b: { type: 'Int', value: 2 },
        placed: { type: 'Int', value: 3 },
      },
      layout: { placed: [100, 50] },
    };
    const at = Object.fromEntries(docToGraph(d).nodes.map((n) => [n.id, [n.position.x, n.position.y]]));
    expect(at.placed).toEqual([100, 50]);
    expect(at.a).toEqual([0, 350]);
    expect(at.b).toEqual([0, 650]);
    expect(at.sum).toEqual([320, 350]);
    expect(at.show).toEqual([640, 350]);
  });
});
