// The HTTP side of docs/api.md: types and thin fetch wrappers.

import { toJsonText } from './jsontext';
import { withoutServerPaths } from './paths';
import type { SweepCell, SweepMode, SweepSection } from './sweep';
import type { QueuePlace } from './queueorder';

export type Constant = string | number | boolean;

/** How the editor draws an input's value: the catalogue says it per input (engine `Widget`). */
export type WidgetHint = 'text' | 'multiline' | 'number' | 'slider' | 'seed' | 'toggle' | 'choice' | 'image_file';

export interface InputDecl {
  name: string;
  type: string;
  doc: string;
  /** The widget for a constant (absent for link-only inputs). */
  widget?: WidgetHint;
  default?: Constant;
  min?: number;
  max?: number;
  step?: number;
  multiple_of?: number;
  choices?: string[];
  /** Where the choices are listed from ("inputs": files in the server's inputs folder). */
  choices_from?: string;
  optional: boolean;
  link_only: boolean;
}

export interface OutputDecl {
  name: string;
  type: string;
  doc: string;
}

export interface NodeType {
  type: string;
  category: string;
  doc: string;
  version: number;
  inputs: InputDecl[];
  outputs: OutputDecl[];
  output_node: boolean;
}

export interface Diagnostic {
  node?: string;
  input?: string;
  pos?: { line: number; column?: number; col?: number };
  /** The file `pos` is in when it is not the workflow's own (a subgraph's file). */
  file?: string;
  message: string;
  hint?: string;
}

/** The workflow file's format as JSON. */
export interface WorkflowDoc {
  weft: number;
  nodes: Record<string, Record<string, Constant>>;
  layout?: Record<string, [number, number]>;
  /** The file's `sweep:` section (axes of a parameter sweep); absent when the file has none. */
  sweep?: SweepSection;
  /** How the editor draws nodes: a title instead of the id, a header colour, collapsed. */
  appearance?: Record<string, Appearance>;
  /** A library subgraph's interface (lib/NAME.yaml): its exposed inputs and outputs, kept as read. */
  inputs?: Record<string, unknown>;
  outputs?: Record<string, unknown>;
  /** The editor's groups: titled boxes behind the nodes. */
  groups?: { title: string; color?: string; box: [number, number, number, number] }[];
  /** The editor's reroute points: dots the links from `from` into each of `to` are drawn through. */
  reroutes?: Record<string, RerouteDoc>;
}

/** One reroute point as the file's `reroutes:` has it: `{at: [x, y], from: node.output, to: [node.input, ...]}`. */
export interface RerouteDoc {
  at: [number, number];
  from: string;
  to: string[];
}

/** One node's `appearance:` line (ComfyUI's node title, color and collapsed flag). */
export interface Appearance {
  title?: string;
  color?: string;
  collapsed?: boolean;
}

export interface WorkflowEntry {
  name: string;
  revision: string;
  valid: boolean;
}

export interface WorkflowFile {
  name: string;
  revision: string;
  workflow: WorkflowDoc | null;
  text: string;
  diagnostics: Diagnostic[];
}

/** What POST /api/import answers: a converted ComfyUI file, not yet written anywhere. */
export interface ImportedFile {
  workflow: WorkflowDoc;
  text: string;
  diagnostics: Diagnostic[];
  format: string;
  notes: { text: string }[];
}

/** What POST /api/runs answers for a sweep: one run a cell, in cell order. */
export interface SweepQueued {
  sweep: string | number;
  runs: number[];
  cells: { run: number; values: Record<string, Constant> }[];
  rows: string[];
  columns: string[];
}

/** GET /api/sweeps/{id}. */
export interface SweepDetail {
  id: string | number;
  status: string;
  mode?: SweepMode;
  axes?: Record<string, Constant[]>;
  rows?: string[];
  columns?: string[];
  cells: SweepCell[];
  grid: string | null;
}

export interface RunOutput {
  node: string;
  url: string;
}

export interface RunDetail {
  id: number;
  status: string;
  workflow_name?: string;
  queued_at?: string;
  started_at?: string;
  finished_at?: string;
  nodes?: Record<string, { state: string; micros?: number; why?: string[] }>;
  outputs?: RunOutput[];
  error?: { node?: string; message: string };
  /** The document as it ran (overrides applied, subgraphs inlined); in a run's detail only. */
  workflow?: WorkflowDoc;
  /** Present when the run is a cell of a sweep. */
  sweep?: { id: string | number; cell: number; values: Record<string, Constant> };
}

const CONSTANT_TYPES = new Set(['int', 'float', 'string', 'bool', 'seed', 'enum']);

/** Absent fields may come as null; a link-only flag is derived when missing. */
function normalise(t: NodeType): NodeType {
  const clean = <T extends object>(o: T): T =>
    Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null)) as T;
  return {
    ...t,
    doc: withoutServerPaths(t.doc),
    inputs: t.inputs.map((i) => {
      const c = clean(i);
      return { ...c, link_only: c.link_only ?? !CONSTANT_TYPES.has(c.type), optional: !!c.optional };
    }),
  };
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    public detail: string,
    public body: Record<string, unknown>,
  ) {
    super(detail || code);
  }
  get diagnostics(): Diagnostic[] {
    return (this.body.diagnostics as Diagnostic[]) ?? [];
  }
}

/** Token from `?token=` in the page URL, for a server listening beyond loopback (read when
 * needed, not at import: the module loads in unit tests where there is no page). */
const pageToken = () => new URLSearchParams(location.search).get('token');

export function withToken(url: string): string {
  const token = pageToken();
  if (!token) return url;
  return url + (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  const token = pageToken();
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : toJsonText(body),
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    json = { error: 'internal', detail: text.slice(0, 200) };
  }
  if (!res.ok) {
    throw new ApiError(res.status, String(json.error ?? res.status), String(json.detail ?? ''), json);
  }
  return json as T;
}

export const api = {
  nodes: () => call<{ nodes: NodeType[] }>('GET', '/api/nodes').then((r) => r.nodes.map(normalise)),
  /** The workflows, and the library subgraphs' files (named `lib/NAME`). */
  workflows: () => call<{ workflows: WorkflowEntry[]; library?: WorkflowEntry[] }>('GET', '/api/workflows'),
  workflow: (name: string) => call<WorkflowFile>('GET', `/api/workflows/${encodeURIComponent(name)}`),
  save: (name: string, workflow: WorkflowDoc, revision: string) =>
    call<{ name: string; revision: string; diagnostics: Diagnostic[] }>(
      'PUT',
      `/api/workflows/${encodeURIComponent(name)}`,
      { workflow, revision },
    ),
  create: (name: string, workflow: WorkflowDoc) =>
    call<{ name: string; revision: string; diagnostics?: Diagnostic[] }>('POST', '/api/workflows', {
      name,
      workflow,
    }),
  /** `name`: the file the canvas is (a `lib/NAME` file's `./x.yaml` types are in `lib/`). */
  validate: (workflow: WorkflowDoc, name?: string) =>
    call<{ valid: boolean; diagnostics: Diagnostic[] }>('POST', '/api/validate', name ? { workflow, name } : { workflow }),
  run: (workflow: WorkflowDoc | string, target?: string, front = false) =>
    call<{ id: number }>('POST', '/api/runs', { workflow, ...(target ? { target } : {}), ...(front ? { front } : {}) }),
  /** One run with `"node.input": value` overrides (the file by name keeps its name in the history). */
  runWith: (workflow: WorkflowDoc | string, set: Record<string, Constant>) =>
    call<{ id: number }>('POST', '/api/runs', { workflow, set }),
  /** `front`: every cell ahead of the runs already waiting, in cell order. */
  sweep: (workflow: WorkflowDoc | string, sweep: SweepSection, front = false) =>
    call<SweepQueued>('POST', '/api/runs', { workflow, sweep, ...(front ? { front } : {}) }),
  sweepDetail: (id: string) => call<SweepDetail>('GET', `/api/sweeps/${encodeURIComponent(id)}`),
  cancelSweep: (id: string) => call<unknown>('POST', `/api/sweeps/${encodeURIComponent(id)}/cancel`),
  runs: (limit = 30) => call<{ runs: RunDetail[] }>('GET', `/api/runs?limit=${limit}`).then((r) => r.runs),
  runDetail: (id: number) => call<RunDetail>('GET', `/api/runs/${id}`),
  cancel: (id: number) => call<unknown>('POST', `/api/runs/${id}/cancel`),
  /** Moves a queued run; the reply lists the queued ids in their new order. */
  moveRun: (id: number, place: QueuePlace) => call<{ queued: number[] }>('POST', `/api/runs/${id}/move`, place),
  /** A ComfyUI file (JSON of either form, or a ComfyUI PNG) converted by the server's importer. */
  importComfy: async (file: File): Promise<ImportedFile> => {
    const headers: Record<string, string> = { 'content-type': file.type || 'application/octet-stream' };
    const token = pageToken();
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch('/api/import', { method: 'POST', body: await file.arrayBuffer(), headers });
    const text = await res.text();
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(text);
    } catch {
      json = { error: 'internal', detail: text.slice(0, 200) };
    }
    if (!res.ok) throw new ApiError(res.status, String(json.error ?? res.status), String(json.detail ?? ''), json);
    return json as unknown as ImportedFile;
  },
  upload: async (file: File): Promise<string> => {
    const form = new FormData();
    form.append('image', file);
    const headers: Record<string, string> = {};
    const token = pageToken();
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch('/api/uploads', { method: 'POST', body: form, headers });
    const json = await res.json().catch(() => ({}));
    if (!res.ok) throw new ApiError(res.status, json.error ?? 'upload', json.detail ?? '', json);
    return json.name as string;
  },
};
