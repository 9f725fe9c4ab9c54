import { describe, expect, it } from 'vitest';
import type { NodeType } from './api';
import type { GEdge, GNode } from './graph';
import { merge3 } from './merge';
import { prunedReroutes, routedEdges, viaReroute, withInputRouted, withRerouteAdded, withRerouteMoved, withRerouteRemoved } from './reroutes';
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
] as unknown as NodeType[];

describe('reroute points (pure)', () => {
  const vae = edge('model', 'vae', 'decode', 'vae');
  it('a point on a link routes it; moving and removing it leave the link alone', () => {
    const { reroutes, id } = withRerouteAdded({}, vae, { x: 10.4, y: 20.6 });
    expect(id).toBe('r1');
    expect(reroutes).toEqual({ r1: { at: [10, 21], from: 'model.vae', to: ['decode.vae'] } });
    expect(routedEdges([vae], reroutes)[0]).toMatchObject({ type: 'rerouted', data: { via: 'r1' } });
    const moved = withRerouteMoved(reroutes, 'r1', { x: 50, y: 60 })!;
    expect(moved.r1.at).toEqual([50, 60]);
    expect(withRerouteMoved(moved, 'r1', { x: 50, y: 60 })).toBeNull();
    expect(withRerouteRemoved(moved, 'r1')).toEqual({});
    // A second point on the same link takes it from the first, which routes nothing and goes.
    const again = withRerouteAdded(reroutes, vae, { x: 0, y: 0 });
    expect(Object.keys(again.reroutes)).toEqual([again.id]);
  });

  it('a link made from a point comes from the point\'s source and is drawn through it', () => {
    const reroutes = { r1: { at: [0, 0] as [number, number], from: 'model.vae', to: ['decode.vae'] } };
    const { c, via } = viaReroute({ source: 'reroute:r1', sourceHandle: 'out', target: 'd2', targetHandle: 'vae' }, reroutes);
    expect(via).toBe('r1');
    expect(c).toEqual({ source: 'model', sourceHandle: 'vae', target: 'd2', targetHandle: 'vae' });
    const both = withInputRouted(reroutes, 'r1', edge('model', 'vae', 'd2', 'vae'));
    expect(both.r1.to).toEqual(['decode.vae', 'd2.vae']);
    // A link from another output is not the point's.
    expect(withInputRouted(reroutes, 'r1', edge('other', 'vae', 'd2', 'vae'))).toBe(reroutes);
  });

  it('stale points are pruned: an input no longer linked to the source, then an empty point', () => {
    const reroutes = {
      r1: { at: [0, 0] as [number, number], from: 'model.vae', to: ['decode.vae', 'gone.vae'] },
      r2: { at: [0, 0] as [number, number], from: 'other.vae', to: ['decode.vae'] },
    };
    const { reroutes: kept, dropped } = prunedReroutes(reroutes, [vae]);
    expect(kept).toEqual({ r1: { at: [0, 0], from: 'model.vae', to: ['decode.vae'] } });
    expect(dropped).toEqual(['r2']);
    // A link re-made from another source is drawn straight.
    expect(routedEdges([edge('other2', 'vae', 'decode', 'vae')], kept)[0].type).toBeUndefined();
  });

  it('merges like groups: whichever side changed the points', () => {
    const base = { weft: 1, nodes: {} };
    const theirs = { ...base, reroutes: { r1: { at: [1, 2] as [number, number], from: 'a.b', to: ['c.d'] } } };
    expect(merge3(base, theirs, base).doc.reroutes).toEqual(theirs.reroutes);
  });
});

describe('reroute points in the store', () => {
  const start = () => {
    useEditor.getState().setCatalogue(types);
    useEditor.setState({
      nodes: [node('model', 'Model'), node('decode', 'Decode', 400), node('d2', 'Decode', 400)],
      edges: [edge('model', 'vae', 'decode', 'vae')],
      reroutes: {},
      selectedReroute: null,
      groups: [],
      past: [],
      future: [],
      dirty: false,
    });
  };

  it('add, drag from it to another input, delete: each one undo step, links kept', () => {
    start();
    const ed = () => useEditor.getState();
    ed().addReroute('decode:vae', { x: 200, y: 50 });
    expect(ed().reroutes.r1).toEqual({ at: [200, 50], from: 'model.vae', to: ['decode.vae'] });
    expect(ed().dirty).toBe(true);
    ed().connect({ source: 'reroute:r1', sourceHandle: 'out', target: 'd2', targetHandle: 'vae' });
    expect(ed().edges.map((e) => `${e.source}.${e.sourceHandle}->${e.id}`)).toEqual(['model.vae->decode:vae', 'model.vae->d2:vae']);
    expect(ed().reroutes.r1.to).toEqual(['decode.vae', 'd2.vae']);
    expect(ed().fileDoc().reroutes).toEqual({ r1: { at: [200, 50], from: 'model.vae', to: ['decode.vae', 'd2.vae'] } });
    ed().checkpoint();
    ed().moveReroute('r1', { x: 300, y: 80 });
    expect(ed().fileDoc().reroutes!.r1.at).toEqual([300, 80]);
    useEditor.setState({ selectedReroute: 'r1' });
    ed().deleteSelected();
    expect(ed().reroutes).toEqual({});
    expect(ed().edges).toHaveLength(2);
    expect(ed().fileDoc().reroutes).toBeUndefined();
    ed().undo();
    expect(ed().reroutes.r1.at).toEqual([300, 80]);
    ed().undo();
    expect(ed().reroutes.r1.at).toEqual([200, 50]);
    ed().undo();
    expect(ed().reroutes.r1.to).toEqual(['decode.vae']);
    expect(ed().edges).toHaveLength(1);
    ed().undo();
    expect(ed().reroutes).toEqual({});
  });

  it('a file\'s stale point is left out when it loads, with a note', () => {
    start();
    useEditor.getState().loadDoc(
      {
        weft: 1,
        nodes: { model: { type: 'Model' }, decode: { type: 'Decode', vae: '$model.vae' } },
        reroutes: { r1: { at: [1, 2], from: 'model.vae', to: ['decode.vae'] }, r2: { at: [3, 4], from: 'model.vae', to: ['nowhere.vae'] } },
      },
      false,
    );
    expect(Object.keys(useEditor.getState().reroutes)).toEqual(['r1']);
    expect(useEditor.getState().message?.text).toContain('reroute point r2 left out');
  });
});
