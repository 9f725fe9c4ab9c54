import { describe, expect, it } from 'vitest';
import { merge3 } from './merge';
import type { GNode } from './graph';
import { boxAround, membersOf } from './groups';
import { useEditor } from './store';

const n = (id: string, x: number, y: number, selected = false): GNode => ({
  id,
  type: 'weft',
  position: { x, y },
  measured: { width: 260, height: 100 },
  selected,
  data: { kind: 'Int', values: { value: 1 } },
});

describe('groups', () => {
  it('a new group holds the selected nodes, and moving it moves them (one undo step)', () => {
    useEditor.setState({ nodes: [n('a', 0, 0, true), n('b', 300, 50, true), n('c', 2000, 0)], groups: [], past: [], dirty: false });
    useEditor.getState().groupSelected();
    const g = useEditor.getState().groups[0];
    expect(g.title).toBe('Group');
    expect(g.box).toEqual(boxAround([n('a', 0, 0), n('b', 300, 50)]));
    expect(membersOf(g, useEditor.getState().nodes)).toEqual(['a', 'b']);
    expect(useEditor.getState().dirty).toBe(true);

    useEditor.getState().checkpoint();
    useEditor.getState().moveGroup(0, { x: g.box[0] + 100, y: g.box[1] - 10 }, new Set(['a', 'b']));
    const pos = Object.fromEntries(useEditor.getState().nodes.map((x) => [x.id, x.position]));
    expect(pos).toEqual({ a: { x: 100, y: -10 }, b: { x: 400, y: 40 }, c: { x: 2000, y: 0 } });
    expect(useEditor.getState().groups[0].box[0]).toBe(g.box[0] + 100);
    useEditor.getState().undo();
    expect(useEditor.getState().nodes.find((x) => x.id === 'a')!.position).toEqual({ x: 0, y: 0 });
    expect(useEditor.getState().groups[0].box).toEqual(g.box);
  });

  it('are saved in the file, renamed, coloured and removed', () => {
    useEditor.getState().editGroup(0, { title: 'Inputs', color: '#a1309b' });
    const doc = useEditor.getState().fileDoc();
    expect(doc.groups).toEqual([{ title: 'Inputs', color: '#a1309b', box: useEditor.getState().groups[0].box }]);
    useEditor.getState().loadDoc(doc, false);
    expect(useEditor.getState().groups[0].title).toBe('Inputs');
    useEditor.getState().removeGroup(0);
    expect(useEditor.getState().fileDoc().groups).toBeUndefined();
  });

  it('merge keeps the side that changed them', () => {
    const base = { weft: 1, nodes: {}, groups: [{ title: 'A', box: [0, 0, 1, 1] as [number, number, number, number] }] };
    const theirs = { ...base, groups: [{ title: 'B', box: [0, 0, 1, 1] as [number, number, number, number] }] };
    expect(merge3(base, theirs, base).doc.groups![0].title).toBe('B');
  });
});
