"""Parity fixtures for weft's SDXL text side (nodes/src/models/sdxl_text.rs).

Two tiny random towers shaped like SDXL's (widths 32 / 48, 3 layers, the real 49408-token
CLIP vocabulary so the real tokenizer and the real special ids are used):

- CLIP-L: a transformers CLIPTextModel (quick_gelu);
- bigG: an open_clip TextTransformer (GELU, text projection [48, 40]), converted to a
  transformers CLIPTextModelWithProjection the way ComfyUI's clip_text_transformers_convert
  does (fused in_proj split, text_projection transposed); the script checks that the two
  forwards agree before writing anything.

Weights are rounded to fp16 and written twice: in transformers names (clip_l.safetensors,
clip_g.safetensors, as diffusers' text_encoder/ and text_encoder_2/ hold them) and in SDXL
single-file names (single_file.safetensors: conditioner.embedders.0.transformer.* and
conditioner.embedders.1.model.*, open_clip's own state-dict names). Only the token-embedding
rows the prompts use are stored (the others are zero in the reference model too):
`sparse_ids.<name>` / `sparse_rows.<name>` stand for `<name>`.

References (reference.safetensors, prompts.json): each tower's penultimate hidden states
(transformers hidden_states[-2]) and bigG's projected pooled output on a batch of windows, and
per prompt ComfyUI's SDXL CLIPTextEncode result: windows from ComfyUI's tokenizer rules
(text_encoders.py's comfy_windows: CLIP-L pads with the end token, bigG with 0), each tower
encoded with ClipTokenWeightEncoder's z = (z - z_empty) * w + z_empty, concatenated along
features, pooled = bigG's projected pooled output of the first window. The unweighted prompt is
cross-checked against diffusers' StableDiffusionXLPipeline.encode_prompt.

Run: .venv/bin/python scripts/parity/sdxl_text.py
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "nodes" / "tests" / "fixtures" / "sdxl_text"
VOCAB_GZ = ROOT / "nodes" / "tests" / "fixtures" / "text_encoders" / "bpe_simple_vocab_16e6.txt.gz"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_encoders import clip_vocab_and_merges, comfy_windows  # noqa: E402

BOS, EOS, VOCAB = 49406, 49407, 49408
L_CFG = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4, hidden_act="quick_gelu")
G_CFG = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, hidden_act="gelu", projection_dim=40)

# (text_l, text_g): ComfyUI's CLIPTextEncode passes one text to both; CLIPTextEncodeSDXL two.
PROMPTS = [
    ("a photo of a cat", "a photo of a cat"),
    ("", ""),
    ("a (red:1.3) circle on a (blue) background, ((detailed))", "a (red:1.3) circle on a (blue) background, ((detailed))"),
    (" ".join(f"word{i}" for i in range(60)), " ".join(f"word{i}" for i in range(60))),
    (" ".join(["cat"] * 74) + " (red blue green:1.2) dog", " ".join(["cat"] * 74) + " (red blue green:1.2) dog"),
    ("a dog, (sharp:0.8)", " ".join(["cat"] * 80) + ", (sharp focus:1.1)"),
]


def randomise(model, gen, scale=0.2):
    """Seeded noise everywhere, LayerNorm weights near 1, so no part is an identity."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if ("norm" in name.lower() or "ln_" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(scale * noise)
            p.copy_(p.half().float())


def keep_rows(table, used):
    """Zeroes the embedding rows no prompt uses (they cannot affect any output)."""
    with torch.no_grad():
        mask = torch.zeros(table.shape[0], dtype=torch.bool)
        mask[used] = True
        table[~mask] = 0.0


def sparse(tensors, name, used):
    """Replaces the embedding `name` by its used rows and their ids."""
    table = tensors.pop(name)
    tensors[f"sparse_ids.{name}"] = torch.tensor(used, dtype=torch.long)
    tensors[f"sparse_rows.{name}"] = table[used].contiguous()


def half(tensors):
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}


def hf_names(state_dict):
    """transformers 5 may drop `text_model.` from CLIPTextModel's tree; the files keep it."""
    return {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v for k, v in state_dict.items()}


def open_clip_to_transformers(sd, layers):
    """ComfyUI's clip_text_transformers_convert, written out again as the oracle."""
    out = {
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].t().contiguous(),
    }
    rename = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj"}
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for a, b in rename.items():
            for leaf in ("weight", "bias"):
                out[f"{dst}{b}.{leaf}"] = sd[f"{src}{a}.{leaf}"]
        for leaf in ("weight", "bias"):
            q, k, v = sd[f"{src}attn.in_proj_{leaf}"].chunk(3, 0)
            for name, t in (("q", q), ("k", k), ("v", v)):
                out[f"{dst}self_attn.{name}_proj.{leaf}"] = t.contiguous()
    return out


def comfy_encode(model, windows, pad, projected):
    """ComfyUI ClipTokenWeightEncoder.encode_token_weights on one tower, layer -2, no final LN."""
    ids = [[t for t, _ in w] for w in windows]
    has_weights = any(w != 1.0 for win in windows for _, w in win)
    if has_weights:
        ids.append([BOS, EOS] + [pad] * 75)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), output_hidden_states=True)
    z_all = out.hidden_states[-2]
    pooled = (out.text_embeds if projected else out.pooler_output)[0:1]
    parts = []
    for k, win in enumerate(windows):
        z = z_all[k].clone()
        if has_weights:
            for j, (_, w) in enumerate(win):
                if w != 1.0:
                    z[j] = (z[j] - z_all[-1][j]) * w + z_all[-1][j]
        parts.append(z)
    return torch.cat(parts, 0).unsqueeze(0), pooled


def comfy_sdxl_windows(tok, text_l, text_g):
    """SDXLTokenizer (+ CLIPTextEncodeSDXL's padding of the shorter side with empty windows)."""
    wl, wg = comfy_windows(tok, text_l, EOS), comfy_windows(tok, text_g, 0)
    empty_l, empty_g = comfy_windows(tok, "", EOS), comfy_windows(tok, "", 0)
    while len(wl) < len(wg):
        wl += empty_l
    while len(wg) < len(wl):
        wg += empty_g
    return wl, wg


def diffusers_cross_check(clip_l, clip_g, vocab, merges, text, want_context, want_pooled):
    try:
        from diffusers import StableDiffusionXLPipeline
    except ImportError as e:
        print(f"diffusers cross-check skipped: {e}")
        return
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    tok2 = CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!", model_max_length=77)
    assert tok2.pad_token_id == 0
    pipe = StableDiffusionXLPipeline(vae=None, text_encoder=clip_l, text_encoder_2=clip_g, tokenizer=tok, tokenizer_2=tok2, unet=None, scheduler=None)
    with torch.no_grad():
        ctx, _, pooled, _ = pipe.encode_prompt(text, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    dc, dp = (ctx - want_context).abs().max().item(), (pooled - want_pooled).abs().max().item()
    print(f"diffusers StableDiffusionXLPipeline.encode_prompt vs ComfyUI rules on {text!r}: context {dc:.2e}, pooled {dp:.2e}")
    assert dc < 1e-5 and dp < 1e-5


def real_sdxl_base_shapes():
    """Names and shapes of SDXL base's text tensors in a single file, from the real modules
    built on the meta device (no memory): transformers' CLIP ViT-L/14 text model and
    open_clip's ViT-bigG/14 text tower."""
    import open_clip.transformer as oct

    with torch.device("meta"):
        clip_l = CLIPTextModel(CLIPTextConfig(vocab_size=VOCAB, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu"))
        big_g = oct.TextTransformer(context_length=77, vocab_size=VOCAB, width=1280, heads=20, layers=32, mlp_ratio=4.0, output_dim=1280, act_layer=torch.nn.GELU)
    shapes = {f"conditioner.embedders.0.transformer.{k}": list(v.shape) for k, v in hf_names(clip_l.state_dict()).items()}
    shapes["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = [1, 77]
    shapes.update({f"conditioner.embedders.1.model.{k}": list(v.shape) for k, v in big_g.state_dict().items()})
    shapes["conditioner.embedders.1.model.logit_scale"] = []
    params = sum(int(torch.tensor(s).prod()) for k, s in shapes.items() if "embedders.1" in k and "logit" not in k)
    assert params == 694_659_840, params  # OpenCLIP ViT-bigG/14 text tower + projection
    (FIX / "sdxl_base_text_shapes.json").write_text(json.dumps({"source": "transformers CLIPTextModel (ViT-L/14) and open_clip TextTransformer (ViT-bigG/14) on the meta device", "shapes": shapes}, indent=0))
    print(f"sdxl_base_text_shapes.json: {len(shapes)} tensors, bigG {params} parameters")


def main():
    import open_clip.transformer as oct

    real_sdxl_base_shapes()

    FIX.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges(VOCAB_GZ)
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    cases = []
    for text_l, text_g in PROMPTS:
        wl, wg = comfy_sdxl_windows(tok, text_l, text_g)
        cases.append((text_l, text_g, wl, wg))
    used = sorted({t for _, _, wl, wg in cases for w in wl + wg for t, _ in w} | {BOS, EOS, 0})

    gen = torch.Generator().manual_seed(19)
    torch.manual_seed(19)
    common = dict(vocab_size=VOCAB, max_position_embeddings=77, layer_norm_eps=1e-5, bos_token_id=BOS, eos_token_id=EOS, attn_implementation="eager")
    clip_l = CLIPTextModel(CLIPTextConfig(**L_CFG, pad_token_id=EOS, **common)).eval()
    randomise(clip_l, gen)
    keep_rows(clip_l.get_input_embeddings().weight, used)

    g_open = oct.TextTransformer(context_length=77, vocab_size=VOCAB, width=48, heads=4, layers=3, mlp_ratio=2.0, output_dim=40, act_layer=torch.nn.GELU).eval()
    randomise(g_open, gen)
    keep_rows(g_open.token_embedding.weight, used)
    clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**G_CFG, pad_token_id=0, **common)).eval()
    missing, unexpected = clip_g.load_state_dict(open_clip_to_transformers(g_open.state_dict(), 3), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)

    # Batch for the per-tower checks: every window of the first and the long prompts.
    l_ids = torch.tensor([[t for t, _ in w] for c in (cases[0], cases[3], cases[5]) for w in c[2]])
    g_ids = torch.tensor([[t for t, _ in w] for c in (cases[0], cases[3], cases[5]) for w in c[3]])
    with torch.no_grad():
        lo = clip_l(input_ids=l_ids, output_hidden_states=True)
        go = clip_g(input_ids=g_ids, output_hidden_states=True)
        # open_clip's own forward: the conversion must give the same tower.
        x, mask = g_open._embeds(g_ids)
        for r in g_open.transformer.resblocks[:-1]:
            x = r(x, attn_mask=mask)
        open_pooled = g_open(g_ids)
    d_states = (x - go.hidden_states[-2]).abs().max().item()
    d_pooled = (open_pooled - go.text_embeds).abs().max().item()
    print(f"open_clip TextTransformer vs converted CLIPTextModelWithProjection: penultimate {d_states:.2e}, pooled {d_pooled:.2e}")
    assert d_states < 1e-5 and d_pooled < 1e-5

    ref = {
        "windows.l_ids": l_ids,
        "windows.g_ids": g_ids,
        "ref.l_penultimate": lo.hidden_states[-2].contiguous(),
        "ref.g_penultimate": go.hidden_states[-2].contiguous(),
        "ref.g_pooled": go.text_embeds.contiguous(),
    }
    prompt_json = []
    for i, (text_l, text_g, wl, wg) in enumerate(cases):
        zl, _ = comfy_encode(clip_l, wl, EOS, projected=False)
        zg, pooled = comfy_encode(clip_g, wg, 0, projected=True)
        cut = min(zl.shape[1], zg.shape[1])
        ref[f"ref.context.{i}"] = torch.cat([zl[:, :cut], zg[:, :cut]], -1).contiguous()
        ref[f"ref.pooled.{i}"] = pooled.contiguous()
        prompt_json.append({
            "text_l": text_l,
            "text_g": text_g,
            "l_ids": [[t for t, _ in w] for w in wl],
            "l_weights": [[w for _, w in win] for win in wl],
            "g_ids": [[t for t, _ in w] for w in wg],
            "g_weights": [[w for _, w in win] for win in wg],
        })
    diffusers_cross_check(clip_l, clip_g, vocab, merges, PROMPTS[0][0], ref["ref.context.0"], ref["ref.pooled.0"])

    l_sd = hf_names(clip_l.state_dict())
    g_sd = hf_names(clip_g.state_dict())
    for sd in (l_sd, g_sd):
        for k in [k for k in sd if k.endswith("position_ids")]:
            del sd[k]
    emb = "text_model.embeddings.token_embedding.weight"
    sparse(l_sd, emb, used)
    sparse(g_sd, emb, used)
    save_file(half(l_sd), str(FIX / "clip_l.safetensors"))
    save_file(half(g_sd), str(FIX / "clip_g.safetensors"))

    single = {f"conditioner.embedders.0.transformer.{k}": v for k, v in hf_names(clip_l.state_dict()).items()}
    single["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    for k, v in g_open.state_dict().items():
        single[f"conditioner.embedders.1.model.{k}"] = v
    single["conditioner.embedders.1.model.logit_scale"] = torch.tensor(4.6052)
    sparse(single, "conditioner.embedders.0.transformer." + emb, used)
    sparse(single, "conditioner.embedders.1.model.token_embedding.weight", used)
    save_file(half(single), str(FIX / "single_file.safetensors"))

    save_file({k: v.contiguous() for k, v in ref.items()}, str(FIX / "reference.safetensors"))
    (FIX / "prompts.json").write_text(json.dumps({"reference": "ComfyUI SDXL CLIPTextEncode / CLIPTextEncodeSDXL rules (sd1_clip.py, sdxl_clip.py)", "cases": prompt_json}, ensure_ascii=False))
    (FIX / "clip_l.json").write_text(json.dumps({**L_CFG, "vocab_size": VOCAB, "max_position_embeddings": 77, "layer_norm_eps": 1e-5, "eos_token_id": EOS}, indent=1))
    (FIX / "clip_g.json").write_text(json.dumps({**G_CFG, "vocab_size": VOCAB, "max_position_embeddings": 77, "layer_norm_eps": 1e-5, "eos_token_id": EOS}, indent=1))
    print(f"{len(cases)} prompts, {len(used)} token rows kept; files in {FIX.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
