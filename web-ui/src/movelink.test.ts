import { describe, expect, it } from 'vitest';
import type { NodeType } from './api';
import type { GEdge, GNode } from './graph';
import { useEditor } from './store';

const edge = (source: string, output: string, target: string, input: string): GEdge => ({
  id: `${target}:${input}`,
  source,
  sourceHandle: output,
  target,
  targetHandle: input,
});
const node = (id: string, kind: string, x = 0): GNode => ({ id, type: 'weft', position: { x, y: 0 }, data: { kind, values: {} } });

const types: NodeType[] = [
  { type: 'Model', category: 'x', doc: '', inputs: [], outputs: [{ name: 'vae', type: 'vae' }], output_node: false },
  { type: 'Decode', category: 'x', doc: '', inputs: [{ name: 'vae', type: 'vae' }], outputs: [], output_node: false },
  { type: 'Save', category: 'x', doc: '', inputs: [{ name: 'image', type: 'image' }], outputs: [], output_node: true },
] as unknown as NodeType[];

describe('a link end dragged off its input (moveLink)', () => {
  const start = () => {
    useEditor.getState().setCatalogue(types);
    useEditor.setState({
      nodes: [node('model', 'Model'), node('decode', 'Decode', 400), node('d2', 'Decode', 400), node('save', 'Save', 400)],
      edges: [edge('model', 'vae', 'decode', 'vae')],
      reroutes: {},
      selectedReroute: null,
      groups: [],
      past: [],
      future: [],
      dirty: false,
    });
  };
  const ed = () => useEditor.getState();
  const links = () => ed().edges.map((e) => `${e.source}.${e.sourceHandle}->${e.id}`);

  it('moves the link to the input it is dropped on, as one undo step', () => {
    start();
    ed().moveLink('decode:vae', { source: 'model', sourceHandle: 'vae', target: 'd2', targetHandle: 'vae' });
    expect(links()).toEqual(['model.vae->d2:vae']);
    expect(ed().dirty).toBe(true);
    ed().undo();
    expect(links()).toEqual(['model.vae->decode:vae']);
  });

  it('dropped back on its own input, the link stays', () => {
    start();
    ed().moveLink('decode:vae', { source: 'model', sourceHandle: 'vae', target: 'decode', targetHandle: 'vae' });
    expect(links()).toEqual(['model.vae->decode:vae']);
  });

  it('an input of another type refuses it with the reason; nothing changes', () => {
    start();
    ed().moveLink('decode:vae', { source: 'model', sourceHandle: 'vae', target: 'save', targetHandle: 'image' });
    expect(links()).toEqual(['model.vae->decode:vae']);
    expect(ed().past).toHaveLength(0);
    expect(ed().message?.kind).toBe('error');
  });
});
