// weft's extension for ComfyUI's frontend (served by weft at /comfy/extensions/weft/, listed by
// /extensions): a workflow open in the frontend follows its workflows/NAME.yaml when the file
// changes on disk. weft's watcher announces the change on ComfyUI's socket as a
// `weft.workflow_file` message; the open tab then reads the workflow again from /userdata (the
// YAML exported to UI format) and shows it, keeping the user's viewport. A tab with unsaved
// edits is left alone (a toast says the file changed), and the message of the tab's own save
// coming back is recognised by its content and ignored.
import { app } from '../../scripts/app.js';
import { api } from '../../scripts/api.js';

const MESSAGE = 'weft.workflow_file';

function toast(severity, summary, detail) {
  app.extensionManager?.toast?.add({ severity, summary, detail, life: 6000 });
}

/** Reloads the workflow of one announcement, when a tab has it loaded. */
async function follow(change) {
  const store = app.extensionManager?.workflow;
  const workflow = store?.getWorkflowByPath?.(change.path);
  // Not open (or never loaded): it is read afresh from the YAML when opened.
  if (!workflow || !workflow.isLoaded || change.event === 'workflow_deleted') return;
  if (change.event === 'workflow_invalid') {
    const first = change.diagnostics?.[0]?.message ?? 'it does not validate';
    toast('warn', `${change.name}.yaml changed on disk`, `Not shown: ${first}`);
    return;
  }
  const response = await api.getUserData(change.path);
  if (!response.ok) {
    toast('warn', `${change.name}.yaml changed on disk`, await response.text());
    return;
  }
  const text = await response.text();
  // What the tab already shows as saved (its own save coming back): nothing to do.
  if (text === workflow.originalContent) return;
  if (workflow.isModified) {
    toast('info', `${change.name}.yaml changed on disk`, 'Your unsaved edits are kept; reopen the workflow to see the file.');
    return;
  }
  if (store.activeWorkflow !== workflow) {
    // A tab in the background reads the file again when it is shown.
    workflow.unload();
    return;
  }
  const ds = app.canvas.ds;
  const offset = [ds.offset[0], ds.offset[1]];
  const scale = ds.scale;
  await workflow.load({ force: true });
  await app.loadGraphData(workflow.activeState, true, false, workflow);
  ds.offset[0] = offset[0];
  ds.offset[1] = offset[1];
  ds.scale = scale;
  app.canvas.setDirty(true, true);
  // The graph as configured (litegraph sizes nodes and settles widgets after the load) is the
  // file's state: the tab has nothing unsaved, and the next change on disk is followed too.
  await new Promise((resolve) => setTimeout(resolve, 150));
  if (store.activeWorkflow === workflow && workflow.changeTracker) {
    workflow.changeTracker.reset((app.rootGraph ?? app.graph).serialize());
    workflow.isModified = false;
  }
}

// One change at a time, in the order announced (a second edit waits for the first load).
let queue = Promise.resolve();

app.registerExtension({
  name: 'weft.FollowYaml',
  setup() {
    api.addEventListener(MESSAGE, ({ detail }) => {
      queue = queue
        .then(() => follow(detail))
        .catch((error) => console.error(`weft: following ${detail?.path}:`, error));
    });
  },
});
