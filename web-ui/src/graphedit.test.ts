import { describe, expect, it } from 'vitest';
import type { NodeType, WorkflowDoc } from './api';
import { titleFor } from './address';
import { mergedWithDisk } from './merge';
import type { GEdge, GNode } from './graph';
import { checkpointed, copied, HISTORY, MERGE_EDITS_MS, pasted, redone, undone, withDragCopied, withModeToggled, withNodeAdded, withSelectionDeleted, withSelectionDissolved, type Undoable } from './graphedit';
import { graphFromDoc } from './graphslice';
import { emptySweep } from './sweep';

const node = (id: string, x: number, y: number, selected = false, kind = 'EmptyLatent'): GNode => ({
  id,
  type: 'weft',
  position: { x, y },
  data: { kind, values: { width: 64 } },
  selected,
});
const link = (source: string, target: string, input: string): GEdge => ({ id: `${target}:${input}`, source, sourceHandle: 'latent', target, targetHandle: input });

const start = (): Undoable => ({ nodes: [node('a', 0, 0)], edges: [], sweep: emptySweep(), groups: [], reroutes: {}, past: [], future: [], lastEditKey: null, lastEditAt: 0, edits: 0 });

describe('undo history', () => {
  it('undoes and redoes an edit, each a step that bumps the edit count', () => {
    let s = start();
    s = { ...s, ...checkpointed(s, undefined, 1000) };
    s = { ...s, nodes: [...s.nodes, node('b', 10, 10)] };
    expect(s.past).toHaveLength(1);
    const back = undone(s)!;
    expect(back.nodes.map((n) => n.id)).toEqual(['a']);
    expect(back.future).toHaveLength(1);
    expect(back.edits).toBe(s.edits + 1);
    s = { ...s, ...back };
    const again = redone(s)!;
    expect(again.nodes.map((n) => n.id)).toEqual(['a', 'b']);
    expect(again.past).toHaveLength(1);
    expect(again.future).toHaveLength(0);
  });

  it('has nothing to undo or redo on a fresh canvas', () => {
    expect(undone(start())).toBeNull();
    expect(redone(start())).toBeNull();
  });

  it('makes quick edits of one field one step, a pause or another field a new one', () => {
    let s = start();
    s = { ...s, ...checkpointed(s, 'a.width', 1000) };
    s = { ...s, ...checkpointed(s, 'a.width', 1000 + MERGE_EDITS_MS - 1) };
    expect(s.past).toHaveLength(1);
    s = { ...s, ...checkpointed(s, 'a.height', 1000 + MERGE_EDITS_MS) };
    expect(s.past).toHaveLength(2);
    s = { ...s, ...checkpointed(s, 'a.height', 1000 + 3 * MERGE_EDITS_MS) };
    expect(s.past).toHaveLength(3);
  });

  it('drops the redo steps on a new edit and keeps at most HISTORY steps', () => {
    let s = start();
    s = { ...s, ...checkpointed(s, undefined, 0) };
    s = { ...s, ...undone(s)! };
    expect(s.future).toHaveLength(1);
    s = { ...s, ...checkpointed(s, undefined, 0) };
    expect(s.future).toHaveLength(0);
    for (let i = 0; i < HISTORY + 20; i++) s = { ...s, ...checkpointed(s, undefined, i) };
    expect(s.past).toHaveLength(HISTORY);
  });
});

describe('copy and paste', () => {
  const nodes = [node('a', 100, 100, true), node('b', 300, 140, true), node('c', 0, 0)];
  const edges = [link('a', 'b', 'latent'), link('c', 'a', 'latent')];

  it('copies the selected nodes and only the links between them', () => {
    const clip = copied(nodes, edges);
    expect(clip.nodes.map((n) => n.id)).toEqual(['a', 'b']);
    expect(clip.edges.map((e) => e.id)).toEqual(['b:latent']);
  });

  it('pastes fresh ids at the point with the inner link rewired, the pasted nodes selected', () => {
    const p = pasted(nodes, edges, copied(nodes, edges), { x: 1000, y: 500 })!;
    const fresh = p.nodes.slice(3);
    expect(fresh).toHaveLength(2);
    expect(fresh.map((n) => n.id)).not.toContain('a');
    expect(fresh[0].position).toEqual({ x: 1000, y: 500 });
    expect(fresh[1].position).toEqual({ x: 1200, y: 540 });
    expect(p.nodes.slice(0, 3).some((n) => n.selected)).toBe(false);
    expect(fresh.every((n) => n.selected)).toBe(true);
    const inner = p.edges.slice(2);
    expect(inner).toHaveLength(1);
    expect(inner[0].source).toBe(fresh[0].id);
    expect(inner[0].target).toBe(fresh[1].id);
  });

  it('pastes without a point a step down and right, the next paste a step further', () => {
    const first = pasted(nodes, edges, copied(nodes, edges))!;
    expect(first.nodes[3].position).toEqual({ x: 140, y: 140 });
    const second = pasted(first.nodes, first.edges, first.clipboard)!;
    expect(second.nodes[5].position).toEqual({ x: 180, y: 180 });
    expect(new Set(second.nodes.map((n) => n.id)).size).toBe(7);
  });

  it('keeps the links from nodes not copied only when asked (Ctrl+Shift+V), while their source is there', () => {
    const clip = copied(nodes, edges);
    expect(clip.inputs!.map((e) => e.id)).toEqual(['a:latent']);
    const plain = pasted(nodes, edges, clip, { x: 0, y: 0 })!;
    expect(plain.edges).toHaveLength(2 + 1);
    const kept = pasted(nodes, edges, clip, { x: 0, y: 0 }, true)!;
    const copyOfA = kept.nodes[3].id;
    expect(kept.edges.slice(2).map((e) => `${e.source}>${e.target}.${e.targetHandle}`)).toEqual([`${copyOfA}>${kept.nodes[4].id}.latent`, `c>${copyOfA}.latent`]);
    const withoutC = pasted([nodes[0], nodes[1]], [edges[0]], clip, { x: 0, y: 0 }, true)!;
    expect(withoutC.edges).toHaveLength(2);
  });

  it('pastes nothing from an empty clipboard', () => {
    expect(pasted(nodes, edges, { nodes: [], edges: [] })).toBeNull();
  });
});

describe('add a node', () => {
  const sampler: NodeType = {
    type: 'Sampler', category: 'sampling', doc: '', version: 1, output_node: false,
    inputs: [
      { name: 'model', type: 'model', doc: '', optional: false, link_only: true },
      { name: 'steps', type: 'int', doc: '', optional: false, link_only: false, default: 20 },
    ],
    outputs: [{ name: 'latent', type: 'latent', doc: '' }],
  };

  it('adds the type with its defaults and a fresh id, the only node selected', () => {
    const { nodes, id } = withNodeAdded([node('sampler', 0, 0, true)], sampler, { x: 5, y: 6 });
    expect(id).not.toBe('sampler');
    expect(id.toLowerCase()).toContain('sampler');
    const added = nodes.find((n) => n.id === id)!;
    expect(added.position).toEqual({ x: 5, y: 6 });
    expect(added.data.values).toEqual({ steps: 20 });
    expect(added.data.order).toEqual(['model', 'steps']);
    expect(nodes.filter((n) => n.selected).map((n) => n.id)).toEqual([id]);
  });
});

describe('bypass and mute', () => {
  it('sets the mode on every selected node unless all have it, then clears it', () => {
    const nodes = [node('a', 0, 0, true), node('b', 0, 0, true), node('c', 0, 0)];
    nodes[0] = { ...nodes[0], data: { ...nodes[0].data, mode: 'bypass' } };
    const on = withModeToggled(nodes, 'bypass')!;
    expect(on.on).toBe(true);
    expect(on.chosen).toEqual(['a', 'b']);
    expect(on.nodes.map((n) => n.data.mode)).toEqual(['bypass', 'bypass', undefined]);
    const off = withModeToggled(on.nodes, 'bypass')!;
    expect(off.on).toBe(false);
    expect(off.nodes.map((n) => 'mode' in n.data)).toEqual([false, false, false]);
    const muted = withModeToggled(on.nodes, 'mute')!;
    expect(muted.nodes.map((n) => n.data.mode)).toEqual(['mute', 'mute', undefined]);
  });

  it('does nothing without a selection', () => {
    expect(withModeToggled([node('a', 0, 0)], 'mute')).toBeNull();
  });
});

describe('delete the selection', () => {
  it('removes the selected nodes with their links and the selected links', () => {
    const nodes = [node('a', 0, 0, true), node('b', 0, 0), node('c', 0, 0)];
    const edges = [link('a', 'b', 'x'), { ...link('b', 'c', 'y'), selected: true }, link('b', 'c', 'z')];
    const left = withSelectionDeleted(nodes, edges)!;
    expect(left.nodes.map((n) => n.id)).toEqual(['b', 'c']);
    expect(left.edges.map((e) => e.id)).toEqual(['c:z']);
    expect(withSelectionDeleted([node('b', 0, 0)], [link('b', 'c', 'z')])).toBeNull();
  });
});

describe('delete and reconnect (Ctrl+X)', () => {
  // Types are the handles' names here: a link fits when its output and input have the same name.
  const fits = (l: GEdge, sofar: GEdge[]) => l.sourceHandle === l.targetHandle && !sofar.some((e) => e.id === l.id);
  const typed = (source: string, out: string, target: string, input: string): GEdge => ({ id: `${target}:${input}`, source, sourceHandle: out, target, targetHandle: input });

  it('joins each link out of the deleted nodes to a link into them whose type fits, through chains', () => {
    const nodes = [node('src', 0, 0), node('mid', 0, 0, true), node('mid2', 0, 0, true), node('dst', 0, 0), node('img', 0, 0)];
    nodes[1].data.order = ['image', 'latent'];
    const edges = [
      typed('img', 'image', 'mid', 'image'),
      typed('src', 'latent', 'mid', 'latent'),
      typed('mid', 'latent', 'mid2', 'latent'),
      typed('mid2', 'latent', 'dst', 'latent'),
      typed('mid2', 'mask', 'dst', 'mask'),
    ];
    const d = withSelectionDissolved(nodes, edges, fits)!;
    expect(d.nodes.map((n) => n.id)).toEqual(['src', 'dst', 'img']);
    expect(d.edges.map((e) => `${e.source}.${e.sourceHandle}>${e.target}.${e.targetHandle}`)).toEqual(['src.latent>dst.latent']);
    expect(d.joined).toHaveLength(1);
    // Plain delete leaves dst unfed.
    expect(withSelectionDeleted(nodes, edges)!.edges).toHaveLength(0);
    expect(withSelectionDissolved([node('a', 0, 0)], [], fits)).toBeNull();
  });
});

describe('Alt+drag', () => {
  it('puts the dragged nodes back and leaves selected copies, with their inner links only, where they were dropped', () => {
    const nodes = [node('a', 500, 500, true), node('b', 600, 500, true), node('c', 0, 0)];
    const edges = [link('a', 'b', 'latent'), link('c', 'a', 'latent')];
    const d = withDragCopied(nodes, edges, new Map([['a', { x: 100, y: 100 }], ['b', { x: 200, y: 100 }]]))!;
    expect(d.nodes.slice(0, 3).map((n) => [n.id, n.position.x, !!n.selected])).toEqual([['a', 100, false], ['b', 200, false], ['c', 0, false]]);
    expect(d.added.map((n) => [n.position.x, n.position.y, n.selected])).toEqual([[500, 500, true], [600, 500, true]]);
    expect(d.edges.slice(2).map((e) => `${e.source}>${e.target}`)).toEqual([`${d.added[0].id}>${d.added[1].id}`]);
    expect(withDragCopied(nodes, edges, new Map())).toBeNull();
  });
});

describe('a document onto the canvas', () => {
  const doc: WorkflowDoc = { weft: 1, nodes: { l: { type: 'EmptyLatent', width: 64 }, d: { type: 'VaeDecode', latent: '$l.latent' } }, layout: { l: [0, 0], d: [300, 0] } };

  it('keeps the size and selection of nodes already drawn', () => {
    const drawn = { ...node('l', 0, 0, true), measured: { width: 123, height: 45 } };
    const { nodes, edges } = graphFromDoc(doc, new Map(), [drawn]);
    const l = nodes.find((n) => n.id === 'l')!;
    expect(l.measured).toEqual({ width: 123, height: 45 });
    expect(l.selected).toBe(true);
    expect(nodes.find((n) => n.id === 'd')!.selected).toBeFalsy();
    expect(edges.map((e) => e.id)).toEqual(['d:latent']);
  });
});

describe('merge with the file on disk', () => {
  const base: WorkflowDoc = { weft: 1, nodes: { s: { type: 'Sampler', seed: 1, cfg: 5 } } };

  it('keeps both sides and says so, or names the input changed on both sides', () => {
    const ok = mergedWithDisk('t', base, { weft: 1, nodes: { s: { type: 'Sampler', seed: 1, cfg: 6.5 } } }, { weft: 1, nodes: { s: { type: 'Sampler', seed: 777, cfg: 5 } } });
    expect(ok.doc.nodes.s).toMatchObject({ seed: 777, cfg: 6.5 });
    expect(ok.kind).toBe('info');
    expect(ok.text).toContain('t.yaml');
    const clash = mergedWithDisk('t', base, { weft: 1, nodes: { s: { type: 'Sampler', seed: 2, cfg: 5 } } }, { weft: 1, nodes: { s: { type: 'Sampler', seed: 3, cfg: 5 } } });
    expect(clash.kind).toBe('error');
    expect(clash.doc.nodes.s.seed).toBe(3);
    expect(clash.text).toContain('seed');
  });
});

describe('the tab title', () => {
  it('names the open file, an unsaved import, or nothing yet', () => {
    expect(titleFor({ name: 'txt2img', suggest: null })).toBe('txt2img · weft');
    expect(titleFor({ name: null, suggest: 'comfy' })).toBe('comfy (unsaved) · weft');
    expect(titleFor({ name: null, suggest: null })).toBeNull();
  });
});

describe('sockets dimmed while a link is dragged', () => {
  it('gives each input type the classes of the outputs it accepts, once per catalogue', async () => {
    const { dragStyles } = await import('./types');
    const types = [
      { inputs: [{ type: 'float' }, { type: 'latent' }], outputs: [{ type: 'int' }] },
      { inputs: [], outputs: [{ type: 'latent' }] },
    ];
    const s = dragStyles(types);
    expect(s.classes.float.split(' ')).toEqual(expect.arrayContaining(['acc-float', 'acc-int']));
    expect(s.classes.latent).toBe('acc-latent');
    expect(s.css).toContain('.drag-out-latent .h-in:not(.acc-latent){opacity:.15}');
    expect(dragStyles(types)).toBe(s);
  });
});
