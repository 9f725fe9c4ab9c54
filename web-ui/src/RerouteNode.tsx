// A reroute point's dot on the canvas (reroutes.ts holds the points): drag it to bend its
// links, drag from its socket to feed another input from the same output, Del or its menu
// removes it (its links stay).
import { memo } from 'react';
import { Handle, Position, type NodeChange, type NodeProps } from '@xyflow/react';
import type { GNode } from './graph';
import { useEditor } from './store';
import { REROUTE_PREFIX } from './reroutes';
import { typeColour } from './types';

/**
 * Applies React Flow's changes to the dots: a drag moves the point, a click selects it (for
 * Del). Returns the changes of the other nodes.
 */
export function rerouteChanges(changes: NodeChange<GNode>[]): NodeChange<GNode>[] {
  const rest: NodeChange<GNode>[] = [];
  for (const c of changes) {
    if (!('id' in c) || !c.id.startsWith(REROUTE_PREFIX)) {
      rest.push(c);
      continue;
    }
    const id = c.id.slice(REROUTE_PREFIX.length);
    const ed = useEditor.getState();
    if (c.type === 'select') useEditor.setState({ selectedReroute: c.selected ? id : ed.selectedReroute === id ? null : ed.selectedReroute });
    if (c.type === 'position' && c.position) ed.moveReroute(id, c.position);
  }
  return rest;
}

/** The type a point carries: its source output's. */
function carried(id: string): string | undefined {
  const s = useEditor.getState();
  const from = s.reroutes[id]?.from;
  if (!from) return undefined;
  const dot = from.indexOf('.');
  const node = s.nodes.find((n) => n.id === from.slice(0, dot));
  return node && s.catalogue.get(node.data.kind)?.outputs.find((o) => o.name === from.slice(dot + 1))?.type;
}

function RerouteView({ data, selected }: NodeProps<GNode>) {
  const id = (data as unknown as { reroute: string }).reroute;
  // Re-read when the point's source changes (a new catalogue or link).
  useEditor((s) => s.reroutes[id]?.from);
  const ty = carried(id);
  const colour = ty ? typeColour(ty) : '#aaa';
  return (
    <div className={`wr${selected ? ' selected' : ''}`} style={{ borderColor: colour }} data-testid={`reroute-${id}`} title={`reroute point ${id}: drag to move; drag from its socket to another input; Del removes it (the links stay)`}>
      <Handle type="source" position={Position.Right} id="out" className="wr-out" style={{ background: colour }} />
    </div>
  );
}

export const RerouteNode = memo(RerouteView);
