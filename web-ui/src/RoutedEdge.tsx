// A link drawn through its reroute point: two curves, source -> point -> input.
import { memo } from 'react';
import { BaseEdge, getBezierPath, Position, type EdgeProps } from '@xyflow/react';
import type { GEdge } from './graph';
import { useEditor } from './store';

function RoutedView({ sourceX, sourceY, targetX, targetY, sourcePosition, targetPosition, data, style, markerEnd, interactionWidth }: EdgeProps<GEdge>) {
  const via = (data as { via?: string } | undefined)?.via;
  const at = useEditor((s) => (via ? s.reroutes[via]?.at : undefined));
  if (!at) {
    const [path] = getBezierPath({ sourceX, sourceY, sourcePosition, targetX, targetY, targetPosition });
    return <BaseEdge path={path} style={style} markerEnd={markerEnd} interactionWidth={interactionWidth} />;
  }
  const [x, y] = at;
  const [first] = getBezierPath({ sourceX, sourceY, sourcePosition, targetX: x, targetY: y, targetPosition: Position.Left });
  const [second] = getBezierPath({ sourceX: x, sourceY: y, sourcePosition: Position.Right, targetX, targetY, targetPosition });
  return <BaseEdge path={`${first} ${second}`} style={style} markerEnd={markerEnd} interactionWidth={interactionWidth} />;
}

export const RoutedEdge = memo(RoutedView);
