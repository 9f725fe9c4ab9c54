// What the toolbar, the keys and the menus do with files that needs a question first: save a new
// workflow (asks its name), save as, create one, convert a selection into a library subgraph,
// import a ComfyUI file or open a dropped PNG. Outside React: each reads the store when it runs.
import { api, type WorkflowDoc } from './api';
import { extractSubgraph } from './extract';
import { nameForImport } from './graph';
import { askName } from './NameDialog';
import { pngWorkflowText } from './png';
import { forgetShownRun } from './runstore';
import { useEditor } from './store';

/** Save; a new workflow with no file yet (an import) asks for its name first. */
export function saveOrAsk(): Promise<boolean> {
  const ed = useEditor.getState();
  if (ed.name) return ed.save();
  return askName('Save the new workflow as', ed.suggest ?? 'untitled').then((n) => (n ? useEditor.getState().saveAs(n) : false));
}

export function saveAsAsk(): Promise<boolean> {
  const { name, suggest } = useEditor.getState();
  return askName('Save as', name ? `${name}-copy` : suggest ?? 'untitled').then((n) => (n ? useEditor.getState().saveAs(n) : false));
}

/** New: asks the name, then creates the empty workflow file and opens it. */
export function newWorkflow(): Promise<boolean> {
  return askName('New workflow', 'untitled').then((n) => (n ? useEditor.getState().create(n) : false));
}

/**
 * The selected nodes become a library subgraph: lib/NAME.yaml is written (never over an existing
 * file), NAME joins the catalogue as a node type, and one NAME node replaces them on the canvas,
 * wired as they were (an undoable, unsaved edit). Its inner nodes run to the same cache keys.
 */
export async function convertToSubgraph() {
  const ed = useEditor.getState();
  const selected = new Set(ed.nodes.filter((n) => n.selected).map((n) => n.id));
  if (selected.size === 0) return ed.say('select the nodes to put in the subgraph first', 'error');
  const kinds = [...new Set(ed.nodes.filter((n) => selected.has(n.id)).map((n) => n.data.kind))].join('');
  let suggest = kinds.slice(0, 40) || 'Subgraph';
  for (let i = 2; ed.catalogue.has(suggest); i++) suggest = `${kinds.slice(0, 40)}${i}`;
  const name = await askName(`Convert ${selected.size} node${selected.size === 1 ? '' : 's'} to a library subgraph (workflows/lib/NAME.yaml, a node type)`, suggest);
  if (!name) return;
  if (useEditor.getState().catalogue.has(name)) return ed.say(`a node type named ${name} exists: choose another name`, 'error');
  let extracted;
  try {
    extracted = extractSubgraph(useEditor.getState().fileDoc(), selected, useEditor.getState().catalogue, name);
  } catch (e) {
    return ed.say(`cannot convert: ${(e as Error).message}`, 'error');
  }
  try {
    await api.create(`lib/${name}`, extracted.library);
  } catch (e) {
    return ed.say(`cannot write lib/${name}.yaml: ${(e as Error).message}`, 'error');
  }
  try {
    useEditor.getState().setCatalogue(await api.nodes());
  } catch (e) {
    return ed.say(`wrote lib/${name}.yaml, but cannot read the node catalogue again: ${(e as Error).message}`, 'error');
  }
  const now = useEditor.getState();
  now.checkpoint();
  now.loadDoc(extracted.workflow, true);
  useEditor.setState((s) => ({ nodes: s.nodes.map((n) => (n.selected === (n.id === extracted.node) ? n : { ...n, selected: n.id === extracted.node })) }));
  const inputs = Object.keys(extracted.library.inputs).length;
  const outputs = Object.keys(extracted.library.outputs).length;
  now.say(`wrote lib/${name}.yaml (${inputs} input${inputs === 1 ? '' : 's'}, ${outputs} output${outputs === 1 ? '' : 's'}); ${selected.size} nodes are now one ${name} node: save to keep it, Ctrl+Z to undo`);
}

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/**
 * A ComfyUI file (API or UI JSON, or a PNG ComfyUI saved) converted by the server's importer,
 * opened as a new unsaved workflow; Save asks for its name, suggesting one from the file name
 * that no workflow has. The server's message, when it refuses the file, goes to the toast.
 */
export async function importComfy(f: File, fit: () => void) {
  const ed = useEditor.getState();
  if (ed.dirty && !confirm(`Discard unsaved edits to ${ed.name ?? 'this workflow'}?`)) return;
  let r;
  try {
    r = await api.importComfy(f);
  } catch (e) {
    ed.say(`cannot import ${f.name}: ${(e as Error).message}`, 'error');
    return;
  }
  await ed.refreshList();
  const taken = new Set(useEditor.getState().workflows.map((w) => w.name));
  const suggest = nameForImport(f.name, (n) => taken.has(n));
  forgetShownRun();
  useEditor.getState().openImported(r.workflow, r.diagnostics ?? [], suggest);
  const count = Object.keys(r.workflow.nodes).length;
  const notes = r.notes?.length ? `\n${r.notes.map((n) => n.text).join('\n')}` : '';
  ed.say(`imported ${count} node${count === 1 ? '' : 's'} from ${f.name} (ComfyUI ${r.format}), not saved yet: Save asks for a name${notes}`);
  fit();
}

/**
 * A file dropped on the canvas: a weft PNG's own workflow replaces the canvas (an undoable,
 * unsaved edit); any other PNG and JSON go to the ComfyUI importer, which says when a PNG is a
 * plain image. `fit` is called once the new graph is on the canvas.
 */
export async function openDroppedFile(f: File, fit: () => void) {
  const ed = useEditor.getState();
  const bytes = new Uint8Array(await f.arrayBuffer());
  const isPng = PNG_SIGNATURE.every((b, i) => bytes[i] === b);
  const text = isPng ? await pngWorkflowText(bytes) : null;
  if (!text) {
    const json = /\.json$/i.test(f.name) || f.type === 'application/json' || bytes.find((b) => b > 32) === 0x7b;
    if (isPng || json) await importComfy(f, fit);
    else ed.say(`${f.name}: drop a weft or ComfyUI PNG, or a ComfyUI workflow (.json)`, 'error');
    return;
  }
  let doc: WorkflowDoc;
  try {
    doc = JSON.parse(text);
  } catch {
    const YAML = await import('yaml');
    doc = YAML.parse(text);
  }
  ed.checkpoint();
  forgetShownRun();
  ed.loadDoc(doc, true);
  ed.say(`loaded the workflow from ${f.name}; save to write it to ${ed.name ?? 'a file'}.yaml`);
  fit();
}
