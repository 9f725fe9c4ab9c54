// A node's size and socket positions worked out from its type, before it is drawn. React Flow
// draws every node it has no socket positions for, even far off screen, to measure it: for a
// big workflow that first pass was most of the time to open it. Given these, it draws only the
// nodes on screen; each is measured for real when drawn (a size that differs replaces these).
// The numbers are app.css's fixed heights for the node's parts (.wn-head, .wn-row, blocks).
import type { NodeHandle } from '@xyflow/react';
import { Position } from '@xyflow/react';
import type { InputDecl, NodeType } from './api';

/** An input whose text widget is a block under the row (prompts): the catalogue's hint. */
export const isMultiline = (i: InputDecl) => i.widget === 'multiline';

/** An image file input: a block with an upload button and a preview (not estimated). */
export const isImageFile = (i: InputDecl) => i.widget === 'image_file';

export const NODE_WIDTH = 260;
const BORDER = 1;
const HEAD = 27;
const BODY_PAD = 4;
const ROW = 22;
/** A block widget (textarea, 40 px) and its 3 px margin. */
const BLOCK = 43;
const SOCKET = 10;
const WIDGET_SOCKET = 8;
/** `.h-in { left: -5px }` / `.h-out { right: -5px }`, then centred on that edge. */
const SOCKET_OFFSET = 5;

export interface EstimatedSize {
  width: number;
  height: number;
  handles: NodeHandle[];
}

/**
 * The size and sockets of a node of type `t` as drawn expanded with no run state, diagnostics
 * or value shown, `linked` its linked inputs; null when it is not regular enough to say (an
 * image input with its preview, an unknown type).
 */
export function estimateNodeSize(t: NodeType | undefined, linked: Set<string>): EstimatedSize | null {
  if (!t) return null;
  const handles: NodeHandle[] = [];
  let y = BORDER + HEAD + BODY_PAD;
  const rowCentre = () => y + ROW / 2;
  for (const o of t.outputs) {
    handles.push({
      id: o.name,
      type: 'source',
      position: Position.Right,
      x: NODE_WIDTH - BORDER + SOCKET_OFFSET - SOCKET / 2,
      y: rowCentre() - SOCKET / 2,
      width: SOCKET,
      height: SOCKET,
    });
    y += ROW;
  }
  for (const i of t.inputs) {
    const isLinked = linked.has(i.name);
    if (!isLinked && isImageFile(i)) return null;
    const size = i.link_only ? SOCKET : WIDGET_SOCKET;
    handles.push({
      id: i.name,
      type: 'target',
      position: Position.Left,
      x: BORDER - SOCKET_OFFSET - size / 2,
      y: rowCentre() - size / 2,
      width: size,
      height: size,
    });
    y += ROW;
    if (!isLinked && !i.link_only && isMultiline(i)) {
      if (i.type === 'string') y += BLOCK;
      // A texty input of another kind without a widget of its own gets a textarea in its row.
      else if (!i.choices?.length && !['bool', 'int', 'float', 'seed'].includes(i.type)) return null;
    }
  }
  return { width: NODE_WIDTH, height: y + BODY_PAD + BORDER, handles };
}
