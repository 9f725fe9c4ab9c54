"""ComfyUI's own /object_info entries for the node types weft serves, made from a ComfyUI
source checkout as its server.py's node_info() makes them, on the CPU, without starting its
server: src/comfy/comfyui_object_info.json (file choices empty, as in a fresh install).

    cd /path/to/ComfyUI && .venv/bin/python /path/to/weft/scripts/parity/comfyui_object_info.py \
        CLASS,CLASS,... out.json

Optional dependencies ComfyUI's modules import but node_info never uses (psutil, einops, av,
...) are stubbed. SaveImageWebsocket (ComfyUI's custom_nodes/websocket_image_save.py) and the
upscale-model nodes (which need spandrel) are not importable this way: the first is added by
hand from its source below, the others are left out. CLIPTextEncodeSDXLRefiner (a V3 node of
comfy_extras/nodes_clip_sdxl.py) was added to the JSON by hand from that file and
comfy_api/latest/_io.py's get_v1_info at 618b803d (pollockjj/ComfyUI, upstream master of
2026-01-07): a partial checkout of that commit could not import ComfyUI's model modules.
"""
import json
import os
import sys
import types
ARGS = sys.argv[1:]; sys.argv = ['x', '--cpu']
sys.path.insert(0, os.getcwd())
class Stub(types.ModuleType):
    def __getattr__(self, k):
        if k.startswith('__'): raise AttributeError(k)
        return Stub(k)
    def __call__(self, *a, **k): return Stub('x')
import importlib
psutil = types.ModuleType('psutil')
class _VM: total = 16 << 30; available = 8 << 30; used = 8 << 30
psutil.virtual_memory = lambda: _VM()
psutil.swap_memory = lambda: _VM()
class _P:
    def memory_info(self): return _VM()
psutil.Process = lambda *a: _P()
sys.modules['psutil'] = psutil
import comfy.options; comfy.options.enable_args_parsing()
missing = []
while True:
    try:
        import nodes
        break
    except ModuleNotFoundError as e:
        m = e.name
        if m in missing: raise
        missing.append(m)
        sys.modules[m] = Stub(m)
        for k in list(sys.modules):
            if k.startswith(('nodes', 'comfy.')) and k != 'comfy.options': del sys.modules[k]
print('stubbed', missing, file=sys.stderr)
import os
import nodes as N
want = ARGS[0].split(',')
try:
    import asyncio
    asyncio.run(N.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
except Exception as e:
    print('extra nodes:', e, file=sys.stderr)
out = {}
for c in want:
    cls = N.NODE_CLASS_MAPPINGS.get(c)
    if cls is None:
        print('missing', c, file=sys.stderr); continue
    if hasattr(cls, 'GET_NODE_INFO_V1'):
        out[c] = cls.GET_NODE_INFO_V1(); continue
    it = cls.INPUT_TYPES()
    info = {'input': it, 'input_order': {k: list(v.keys()) for k, v in it.items()},
            'output': cls.RETURN_TYPES,
            'output_is_list': getattr(cls, 'OUTPUT_IS_LIST', [False] * len(cls.RETURN_TYPES)),
            'output_name': getattr(cls, 'RETURN_NAMES', cls.RETURN_TYPES), 'name': c,
            'display_name': N.NODE_DISPLAY_NAME_MAPPINGS.get(c, c),
            'description': getattr(cls, 'DESCRIPTION', ''),
            'python_module': getattr(cls, 'RELATIVE_PYTHON_MODULE', 'nodes'),
            'category': getattr(cls, 'CATEGORY', 'sd'),
            'output_node': getattr(cls, 'OUTPUT_NODE', False) is True}
    if hasattr(cls, 'OUTPUT_TOOLTIPS'): info['output_tooltips'] = cls.OUTPUT_TOOLTIPS
    if getattr(cls, 'DEPRECATED', False): info['deprecated'] = True
    if getattr(cls, 'EXPERIMENTAL', False): info['experimental'] = True
    if hasattr(cls, 'API_NODE'): info['api_node'] = cls.API_NODE
    info['search_aliases'] = getattr(cls, 'SEARCH_ALIASES', [])
    out[c] = info
out['SaveImageWebsocket'] = {
    'input': {'required': {'images': ['IMAGE']}}, 'input_order': {'required': ['images']},
    'output': [], 'output_is_list': [], 'output_name': [], 'name': 'SaveImageWebsocket',
    'display_name': 'SaveImageWebsocket', 'description': '',
    'python_module': 'custom_nodes.websocket_image_save', 'category': 'image',
    'output_node': True, 'search_aliases': [],
}
json.dump(out, open(ARGS[1], 'w'), indent=1, default=list)
