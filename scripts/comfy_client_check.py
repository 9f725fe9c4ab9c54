#!/usr/bin/env python3
"""The PyPI ComfyUI client `comfy-api-simplified`, used as its README shows, against a server
that speaks ComfyUI's API (tests/comfy_clients.rs points it at `weft serve`): load an API
workflow, set the KSampler's seed, queue it and wait for the images of the "Save Image" node,
then write them to OUT_DIR. Prints one JSON line: {"images": {name: bytes}, "queue": ...}.

    scripts/comfy_client_check.py URL WORKFLOW_JSON OUT_DIR [SEED]
"""
import json
import os
import sys

from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper


def main():
    url, workflow, out_dir = sys.argv[1:4]
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 7
    api = ComfyApiWrapper(url)
    wf = ComfyWorkflowWrapper(workflow)
    wf.set_node_param("KSampler", "seed", seed)
    images = api.queue_and_wait_images(wf, "Save Image")
    os.makedirs(out_dir, exist_ok=True)
    sizes = {}
    for name, data in images.items():
        with open(os.path.join(out_dir, os.path.basename(name)), "wb") as f:
            f.write(data)
        sizes[name] = len(data)
    print(json.dumps({"images": sizes, "queue": api.get_queue()}))


if __name__ == "__main__":
    main()
