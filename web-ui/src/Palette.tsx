// Add a node by searching its name, category or doc. Opened by double-click, Space or Tab.
import { useEffect, useMemo, useRef, useState } from 'react';
import type { NodeType } from './api';
import { searchNodes } from './graph';
import { ALIASES } from './aliases';
import { accepts, typeColour } from './types';
import type { PendingLink } from './store';

export function Palette({
  types,
  link,
  onPick,
  onClose,
}: {
  types: NodeType[];
  link?: PendingLink;
  onPick: (t: NodeType) => void;
  onClose: () => void;
}) {
  const [q, setQ] = useState('');
  const [sel, setSel] = useState(0);
  const input = useRef<HTMLInputElement>(null);
  const pool = useMemo(
    () =>
      link
        ? types.filter((t) =>
            link.from === 'source'
              ? t.inputs.some((i) => accepts(i.type, link.type))
              : t.outputs.some((o) => accepts(link.type, o.type)),
          )
        : types,
    [types, link],
  );
  const hits = useMemo(() => searchNodes(pool, q).slice(0, 40), [pool, q]);
  useEffect(() => input.current?.focus(), []);
  useEffect(() => setSel(0), [q]);
  return (
    <div className="palette-back" onMouseDown={onClose}>
      <div className="palette" onMouseDown={(e) => e.stopPropagation()} role="dialog" aria-label="Add a node">
        <input
          ref={input}
          placeholder={link ? `nodes that take or give ${link.type}…` : 'Add a node: search name, category or description…'}
          value={q}
          onChange={(e) => setQ(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === 'Escape') onClose();
            else if (e.key === 'ArrowDown') {
              e.preventDefault();
              setSel((s) => Math.min(s + 1, hits.length - 1));
            } else if (e.key === 'ArrowUp') {
              e.preventDefault();
              setSel((s) => Math.max(s - 1, 0));
            } else if (e.key === 'Enter' && hits[sel]) onPick(hits[sel]);
          }}
        />
        <ul>
          {hits.map((t, i) => (
            <li
              key={t.type}
              data-selected={i === sel || undefined}
              onMouseEnter={() => setSel(i)}
              onClick={() => onPick(t)}
              data-testid={`palette-${t.type}`}
            >
              <div className="p-top">
                <b>{t.type}</b>
                {aka(t.type, q) && <span className="p-aka" data-testid="palette-aka">= {aka(t.type, q)}</span>}
                <span className="p-cat">{t.category}</span>
                <span className="p-dots">
                  {t.outputs.map((o) => (
                    <i key={o.name} title={o.type} style={{ background: typeColour(o.type) }} />
                  ))}
                </span>
              </div>
              <div className="p-doc">{t.doc}</div>
            </li>
          ))}
          {hits.length === 0 && <li className="p-none">no node matches “{q}”</li>}
        </ul>
      </div>
    </div>
  );
}

/** The alias the search matched, when the type's own name did not (so "KSampler" says why). */
function aka(type: string, query: string): string | undefined {
  const q = query.trim().toLowerCase();
  if (!q || type.toLowerCase().includes(q)) return undefined;
  return ALIASES[type]?.find((a) => a.toLowerCase().includes(q) || a.toLowerCase().replace(/\s+/g, '') === q.replace(/\s+/g, ''));
}
