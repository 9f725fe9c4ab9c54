// Groups (Ctrl+G): titled, coloured boxes behind the nodes, saved in the file's `groups:`
// section. They are drawn as React Flow nodes of their own type (ids `group:N`), kept apart
// from the workflow's nodes in the store; dragging one by its title moves the nodes inside it.
import { memo, useState } from 'react';
import type { NodeChange, NodeProps } from '@xyflow/react';
import type { GNode } from './graph';
import { useEditor } from './store';
import { DEFAULT_GROUP_COLOUR, GROUP_PREFIX, type GroupBox } from './groupbox';

export { boxAround, DEFAULT_GROUP_COLOUR, GROUP_PREFIX, type GroupBox } from './groupbox';

/** The nodes a group holds: those whose top-left corner is inside its box (as ComfyUI decides). */
export function membersOf(g: GroupBox, nodes: GNode[]): string[] {
  const [x, y, w, h] = g.box;
  return nodes.filter((n) => n.position.x >= x && n.position.y >= y && n.position.x <= x + w && n.position.y <= y + h).map((n) => n.id);
}

/** The groups as React Flow nodes, drawn under the workflow's. */
export function groupNodes(groups: GroupBox[]): GNode[] {
  return groups.map((g, i) => ({
    id: `${GROUP_PREFIX}${i}`,
    type: 'group' as 'weft',
    position: { x: g.box[0], y: g.box[1] },
    width: g.box[2],
    height: g.box[3],
    zIndex: -1,
    dragHandle: '.wg-title',
    className: 'wg-node',
    // Only the title bar takes the mouse: a click on the body reaches the canvas (box select).
    style: { pointerEvents: 'none' },
    data: { kind: '', values: {}, index: i },
  }));
}

/** Members of the group being dragged, found when the drag starts. */
let dragging: { index: number; members: Set<string> } | null = null;

/**
 * Applies React Flow's changes to group nodes: a drag moves the group and its members (found at
 * the drag's start); selection is remembered for Delete. Returns the changes of other nodes.
 */
export function groupChanges(changes: NodeChange<GNode>[]): NodeChange<GNode>[] {
  const rest: NodeChange<GNode>[] = [];
  for (const c of changes) {
    if (!('id' in c) || !c.id.startsWith(GROUP_PREFIX)) {
      rest.push(c);
      continue;
    }
    const index = Number(c.id.slice(GROUP_PREFIX.length));
    const ed = useEditor.getState();
    const g = ed.groups[index];
    if (!g) continue;
    if (c.type === 'select') useEditor.setState({ selectedGroup: c.selected ? index : ed.selectedGroup === index ? null : ed.selectedGroup });
    if (c.type === 'position' && c.position) {
      if (!dragging || dragging.index !== index) {
        // (onNodeDragStart took the undo checkpoint.)
        dragging = { index, members: new Set(membersOf(g, ed.nodes)) };
      }
      ed.moveGroup(index, c.position, dragging.members);
      if (!c.dragging) dragging = null;
    }
  }
  return rest;
}

function GroupView({ data }: NodeProps<GNode>) {
  const index = (data as unknown as { index: number }).index;
  const g = useEditor((s) => s.groups[index]);
  const [editing, setEditing] = useState(false);
  if (!g) return null;
  const colour = g.color ?? DEFAULT_GROUP_COLOUR;
  const edit = (patch: Partial<GroupBox>) => useEditor.getState().editGroup(index, patch);
  return (
    <div className="wg" style={{ borderColor: colour, background: `${colour}33` }} data-testid={`group-${index}`}>
      <div className="wg-title" style={{ background: `${colour}cc` }} onDoubleClick={() => setEditing(true)} title="drag to move the group and its nodes; double-click to rename">
        {editing ? (
          <input
            className="nodrag wg-rename"
            autoFocus
            defaultValue={g.title}
            aria-label="group title"
            onBlur={(e) => {
              edit({ title: e.target.value });
              setEditing(false);
            }}
            onKeyDown={(e) => {
              if (e.key === 'Enter') (e.target as HTMLInputElement).blur();
              if (e.key === 'Escape') setEditing(false);
            }}
          />
        ) : (
          <span className="wg-name">{g.title}</span>
        )}
        <input type="color" className="nodrag wg-colour" value={colour} aria-label="group colour" title="group colour" onChange={(e) => edit({ color: e.target.value })} />
        <button className="nodrag wg-x" title="remove the group (its nodes stay)" onClick={() => useEditor.getState().removeGroup(index)}>
          ×
        </button>
      </div>
    </div>
  );
}

export const GroupNode = memo(GroupView);
