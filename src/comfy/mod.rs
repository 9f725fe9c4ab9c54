//! ComfyUI workflows in weft: the table of ComfyUI node types weft maps (`TYPES`), `import`
//! (API and UI JSON to a weft workflow), `file` (a file's bytes, JSON or a PNG ComfyUI saved,
//! sniffed and imported), `export` (a weft workflow to API JSON) and
//! `object_info` (weft's registry described in ComfyUI's `GET /object_info` shape); the
//! command-line side is in the binary (src/comfy_cli.rs), ComfyUI's HTTP API in
//! `server::comfy_api`.
//! docs/comfyui.md says what maps one to one and what does not.
pub mod export;
pub mod file;
pub mod import;
pub mod object_info;
pub mod ui;

/// How object_info describes a ComfyUI widget.
#[derive(Debug, Clone, Copy)]
pub enum Widget {
    /// As weft declares this input of the mapped weft type (default, range, step, choices).
    Weft(&'static str),
    Int {
        min: i64,
        max: i64,
        step: i64,
    },
    /// A choice among fixed names (the first is the default).
    Combo(&'static [&'static str]),
    /// A file picked from a models or input folder: the caller supplies the names.
    Files(FileKind),
}

/// The folders ComfyUI lists files of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Checkpoints,
    Images,
    UpscaleModels,
    Loras,
}

/// One input of a ComfyUI node type, in ComfyUI's declaration order (the order of
/// `widgets_values` in the UI format follows the widgets among them).
#[derive(Debug, Clone, Copy)]
pub struct Input {
    pub name: &'static str,
    /// ComfyUI's type name: MODEL, CLIP, VAE, CONDITIONING, LATENT, IMAGE, UPSCALE_MODEL for
    /// sockets; INT, FLOAT, STRING, COMBO for widgets.
    pub ty: &'static str,
    pub widget: Option<Widget>,
    /// A seed: the UI format stores a `control_after_generate` value after it.
    pub seed: bool,
}

const fn socket(name: &'static str, ty: &'static str) -> Input {
    Input {
        name,
        ty,
        widget: None,
        seed: false,
    }
}

const fn widget(name: &'static str, ty: &'static str, widget: Widget) -> Input {
    Input {
        name,
        ty,
        widget: Some(widget),
        seed: false,
    }
}

const fn seed(name: &'static str) -> Input {
    Input {
        name,
        ty: "INT",
        widget: Some(Widget::Weft("seed")),
        seed: true,
    }
}

/// One output slot of a ComfyUI node type and the weft output it is.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub ty: &'static str,
    /// `None`: weft has no such output.
    pub weft: Option<&'static str>,
}

const fn out(ty: &'static str, weft: &'static str) -> Output {
    Output {
        ty,
        weft: Some(weft),
    }
}

/// A ComfyUI node type weft imports.
#[derive(Debug)]
pub struct ComfyType {
    pub class: &'static str,
    pub display: &'static str,
    pub category: &'static str,
    /// The weft node type it becomes.
    pub weft: &'static str,
    /// The readable prefix of weft ids made from numeric ComfyUI ids (`ksampler_3`).
    pub role: &'static str,
    pub inputs: &'static [Input],
    pub outputs: &'static [Output],
    pub output_node: bool,
}

const SAMPLER_WIDGETS: [Input; 10] = [
    socket("model", "MODEL"),
    seed("seed"),
    widget("steps", "INT", Widget::Weft("steps")),
    widget("cfg", "FLOAT", Widget::Weft("cfg")),
    widget("sampler_name", "COMBO", Widget::Weft("sampler")),
    widget("scheduler", "COMBO", Widget::Weft("schedule")),
    socket("positive", "CONDITIONING"),
    socket("negative", "CONDITIONING"),
    socket("latent_image", "LATENT"),
    widget("denoise", "FLOAT", Widget::Weft("denoise")),
];

/// Methods of ComfyUI's latent and image resizes that weft has (bislerp and lanczos it lacks).
const RESIZE_METHODS: &[&str] = &["nearest-exact", "bilinear", "area", "bicubic"];

/// Every ComfyUI node type `weft import` maps, in ComfyUI's menu order.
pub static TYPES: &[ComfyType] = &[
    ComfyType {
        class: "CheckpointLoaderSimple",
        display: "Load Checkpoint",
        category: "loaders",
        weft: "LoadCheckpoint",
        role: "checkpoint",
        inputs: &[widget(
            "ckpt_name",
            "COMBO",
            Widget::Files(FileKind::Checkpoints),
        )],
        outputs: &[
            out("MODEL", "unet"),
            out("CLIP", "text_encoder"),
            out("VAE", "vae"),
        ],
        output_node: false,
    },
    ComfyType {
        class: "CLIPTextEncode",
        display: "CLIP Text Encode (Prompt)",
        category: "conditioning",
        weft: "PromptEncode",
        role: "prompt",
        inputs: &[
            widget("text", "STRING", Widget::Weft("text")),
            socket("clip", "CLIP"),
        ],
        outputs: &[out("CONDITIONING", "conditioning")],
        output_node: false,
    },
    ComfyType {
        class: "CLIPTextEncodeSDXL",
        display: "CLIPTextEncodeSDXL",
        category: "advanced/conditioning",
        weft: "PromptEncodeSdxl",
        role: "prompt",
        inputs: &[
            socket("clip", "CLIP"),
            widget("width", "INT", Widget::Weft("width")),
            widget("height", "INT", Widget::Weft("height")),
            widget("crop_w", "INT", Widget::Weft("crop_w")),
            widget("crop_h", "INT", Widget::Weft("crop_h")),
            widget("target_width", "INT", Widget::Weft("target_width")),
            widget("target_height", "INT", Widget::Weft("target_height")),
            widget("text_g", "STRING", Widget::Weft("text_g")),
            widget("text_l", "STRING", Widget::Weft("text_l")),
        ],
        outputs: &[out("CONDITIONING", "conditioning")],
        output_node: false,
    },
    ComfyType {
        class: "CLIPTextEncodeSDXLRefiner",
        display: "CLIPTextEncodeSDXLRefiner",
        category: "advanced/conditioning",
        weft: "PromptEncodeSdxlRefiner",
        role: "prompt",
        inputs: &[
            widget("ascore", "FLOAT", Widget::Weft("ascore")),
            widget("width", "INT", Widget::Weft("width")),
            widget("height", "INT", Widget::Weft("height")),
            widget("text", "STRING", Widget::Weft("text")),
            socket("clip", "CLIP"),
        ],
        outputs: &[out("CONDITIONING", "conditioning")],
        output_node: false,
    },
    ComfyType {
        class: "EmptyLatentImage",
        display: "Empty Latent Image",
        category: "latent",
        weft: "EmptyLatent",
        role: "latent",
        inputs: &[
            widget("width", "INT", Widget::Weft("width")),
            widget("height", "INT", Widget::Weft("height")),
            widget("batch_size", "INT", Widget::Weft("batch")),
        ],
        outputs: &[out("LATENT", "latent")],
        output_node: false,
    },
    ComfyType {
        class: "KSampler",
        display: "KSampler",
        category: "sampling",
        weft: "Sampler",
        role: "ksampler",
        inputs: &SAMPLER_WIDGETS,
        outputs: &[out("LATENT", "latent")],
        output_node: false,
    },
    ComfyType {
        class: "KSamplerAdvanced",
        display: "KSampler (Advanced)",
        category: "sampling",
        weft: "SamplerAdvanced",
        role: "ksampler",
        inputs: &[
            socket("model", "MODEL"),
            widget("add_noise", "COMBO", Widget::Combo(&["enable", "disable"])),
            seed("noise_seed"),
            widget("steps", "INT", Widget::Weft("steps")),
            widget("cfg", "FLOAT", Widget::Weft("cfg")),
            widget("sampler_name", "COMBO", Widget::Weft("sampler")),
            widget("scheduler", "COMBO", Widget::Weft("schedule")),
            socket("positive", "CONDITIONING"),
            socket("negative", "CONDITIONING"),
            socket("latent_image", "LATENT"),
            widget("start_at_step", "INT", Widget::Weft("start_at_step")),
            widget("end_at_step", "INT", Widget::Weft("end_at_step")),
            widget(
                "return_with_leftover_noise",
                "COMBO",
                Widget::Combo(&["disable", "enable"]),
            ),
        ],
        outputs: &[out("LATENT", "latent")],
        output_node: false,
    },
    ComfyType {
        class: "VAEDecode",
        display: "VAE Decode",
        category: "latent",
        weft: "VaeDecode",
        role: "decode",
        inputs: &[socket("samples", "LATENT"), socket("vae", "VAE")],
        outputs: &[out("IMAGE", "image")],
        output_node: false,
    },
    ComfyType {
        class: "VAEDecodeTiled",
        display: "VAE Decode (Tiled)",
        category: "_for_testing",
        weft: "VaeDecode",
        role: "decode",
        inputs: &[
            socket("samples", "LATENT"),
            socket("vae", "VAE"),
            widget(
                "tile_size",
                "INT",
                Widget::Int {
                    min: 64,
                    max: 4096,
                    step: 8,
                },
            ),
            widget(
                "overlap",
                "INT",
                Widget::Int {
                    min: 0,
                    max: 4096,
                    step: 8,
                },
            ),
            widget(
                "temporal_size",
                "INT",
                Widget::Int {
                    min: 8,
                    max: 4096,
                    step: 4,
                },
            ),
            widget(
                "temporal_overlap",
                "INT",
                Widget::Int {
                    min: 4,
                    max: 4096,
                    step: 4,
                },
            ),
        ],
        outputs: &[out("IMAGE", "image")],
        output_node: false,
    },
    ComfyType {
        class: "VAEEncode",
        display: "VAE Encode",
        category: "latent",
        weft: "VaeEncode",
        role: "encode",
        inputs: &[socket("pixels", "IMAGE"), socket("vae", "VAE")],
        outputs: &[out("LATENT", "latent")],
        output_node: false,
    },
    ComfyType {
        class: "LoadImage",
        display: "Load Image",
        category: "image",
        weft: "LoadImage",
        role: "load_image",
        inputs: &[widget("image", "COMBO", Widget::Files(FileKind::Images))],
        outputs: &[out("IMAGE", "image"), out("MASK", "mask")],
        output_node: false,
    },
    ComfyType {
        class: "SaveImage",
        display: "Save Image",
        category: "image",
        weft: "SaveImage",
        role: "save",
        inputs: &[
            socket("images", "IMAGE"),
            widget("filename_prefix", "STRING", Widget::Weft("prefix")),
        ],
        outputs: &[],
        output_node: true,
    },
    ComfyType {
        class: "PreviewImage",
        display: "Preview Image",
        category: "image",
        weft: "SaveImage",
        role: "preview",
        inputs: &[socket("images", "IMAGE")],
        outputs: &[],
        output_node: true,
    },
    // ComfyUI's websocket_image_save.py (a custom node it ships and loads by default): the
    // images go to the prompt's client as binary frames, not to disk (weft saves them too).
    ComfyType {
        class: "SaveImageWebsocket",
        display: "SaveImageWebsocket",
        category: "api node/image",
        weft: "SaveImage",
        role: "websocket",
        inputs: &[socket("images", "IMAGE")],
        outputs: &[],
        output_node: true,
    },
    ComfyType {
        class: "LatentUpscale",
        display: "Upscale Latent",
        category: "latent",
        weft: "LatentUpscale",
        role: "latent_upscale",
        inputs: &[
            socket("samples", "LATENT"),
            widget("upscale_method", "COMBO", Widget::Combo(RESIZE_METHODS)),
            widget(
                "width",
                "INT",
                Widget::Int {
                    min: 0,
                    max: 8192,
                    step: 8,
                },
            ),
            widget(
                "height",
                "INT",
                Widget::Int {
                    min: 0,
                    max: 8192,
                    step: 8,
                },
            ),
            widget("crop", "COMBO", Widget::Combo(&["disabled", "center"])),
        ],
        outputs: &[out("LATENT", "latent")],
        output_node: false,
    },
    ComfyType {
        class: "LatentUpscaleBy",
        display: "Upscale Latent By",
        category: "latent",
        weft: "LatentUpscale",
        role: "latent_upscale",
        inputs: &[
            socket("samples", "LATENT"),
            widget("upscale_method", "COMBO", Widget::Combo(RESIZE_METHODS)),
            widget("scale_by", "FLOAT", Widget::Weft("scale")),
        ],
        outputs: &[out("LATENT", "latent")],
        output_node: false,
    },
    ComfyType {
        class: "ImageScale",
        display: "Upscale Image",
        category: "image/upscaling",
        weft: "ImageScale",
        role: "image_scale",
        inputs: &[
            socket("image", "IMAGE"),
            widget("upscale_method", "COMBO", Widget::Combo(RESIZE_METHODS)),
            widget(
                "width",
                "INT",
                Widget::Int {
                    min: 0,
                    max: 8192,
                    step: 1,
                },
            ),
            widget(
                "height",
                "INT",
                Widget::Int {
                    min: 0,
                    max: 8192,
                    step: 1,
                },
            ),
            widget("crop", "COMBO", Widget::Combo(&["disabled", "center"])),
        ],
        outputs: &[out("IMAGE", "image")],
        output_node: false,
    },
    ComfyType {
        class: "ImageScaleBy",
        display: "Upscale Image By",
        category: "image/upscaling",
        weft: "ImageScale",
        role: "image_scale",
        inputs: &[
            socket("image", "IMAGE"),
            widget("upscale_method", "COMBO", Widget::Combo(RESIZE_METHODS)),
            widget("scale_by", "FLOAT", Widget::Weft("scale")),
        ],
        outputs: &[out("IMAGE", "image")],
        output_node: false,
    },
    ComfyType {
        class: "UpscaleModelLoader",
        display: "Load Upscale Model",
        category: "loaders",
        weft: "LoadUpscaleModel",
        role: "upscaler",
        inputs: &[widget(
            "model_name",
            "COMBO",
            Widget::Files(FileKind::UpscaleModels),
        )],
        outputs: &[out("UPSCALE_MODEL", "upscale_model")],
        output_node: false,
    },
    ComfyType {
        class: "ImageBatch",
        display: "Batch Images",
        category: "image",
        weft: "ImageBatch",
        role: "batch",
        inputs: &[socket("image1", "IMAGE"), socket("image2", "IMAGE")],
        outputs: &[out("IMAGE", "image")],
        output_node: false,
    },
    ComfyType {
        class: "ImageUpscaleWithModel",
        display: "Upscale Image (using Model)",
        category: "image/upscaling",
        weft: "UpscaleImage",
        role: "upscale",
        inputs: &[
            socket("upscale_model", "UPSCALE_MODEL"),
            socket("image", "IMAGE"),
        ],
        outputs: &[out("IMAGE", "image")],
        output_node: false,
    },
    ComfyType {
        class: "LoraLoader",
        display: "Load LoRA",
        category: "loaders",
        weft: "LoadLora",
        role: "lora",
        inputs: &[
            socket("model", "MODEL"),
            socket("clip", "CLIP"),
            widget("lora_name", "COMBO", Widget::Files(FileKind::Loras)),
            widget("strength_model", "FLOAT", Widget::Weft("strength_model")),
            widget("strength_clip", "FLOAT", Widget::Weft("strength_clip")),
        ],
        outputs: &[out("MODEL", "model"), out("CLIP", "text_encoder")],
        output_node: false,
    },
    ComfyType {
        class: "LoraLoaderModelOnly",
        display: "LoraLoaderModelOnly",
        category: "loaders",
        weft: "LoadLoraModelOnly",
        role: "lora",
        inputs: &[
            socket("model", "MODEL"),
            widget("lora_name", "COMBO", Widget::Files(FileKind::Loras)),
            widget("strength_model", "FLOAT", Widget::Weft("strength_model")),
        ],
        outputs: &[out("MODEL", "model")],
        output_node: false,
    },
    // Masks and inpainting (ComfyUI's nodes.py and comfy_extras/nodes_mask.py).
    ComfyType {
        class: "LoadImageMask",
        display: "Load Image (as Mask)",
        category: "mask",
        weft: "LoadImageMask",
        role: "load_mask",
        inputs: &[
            widget("image", "COMBO", Widget::Files(FileKind::Images)),
            widget("channel", "COMBO", Widget::Weft("channel")),
        ],
        outputs: &[out("MASK", "mask")],
        output_node: false,
    },
    ComfyType {
        class: "SolidMask",
        display: "SolidMask",
        category: "mask",
        weft: "SolidMask",
        role: "solid_mask",
        inputs: &[
            widget("value", "FLOAT", Widget::Weft("value")),
            widget("width", "INT", Widget::Weft("width")),
            widget("height", "INT", Widget::Weft("height")),
        ],
        outputs: &[out("MASK", "mask")],
        output_node: false,
    },
    ComfyType {
        class: "InvertMask",
        display: "InvertMask",
        category: "mask",
        weft: "InvertMask",
        role: "invert_mask",
        inputs: &[socket("mask", "MASK")],
        outputs: &[out("MASK", "mask")],
        output_node: false,
    },
    ComfyType {
        class: "GrowMask",
        display: "GrowMask",
        category: "mask",
        weft: "GrowMask",
        role: "grow_mask",
        inputs: &[
            socket("mask", "MASK"),
            widget("expand", "INT", Widget::Weft("expand")),
            widget(
                "tapered_corners",
                "BOOLEAN",
                Widget::Weft("tapered_corners"),
            ),
        ],
        outputs: &[out("MASK", "mask")],
        output_node: false,
    },
    ComfyType {
        class: "FeatherMask",
        display: "FeatherMask",
        category: "mask",
        weft: "FeatherMask",
        role: "feather_mask",
        inputs: &[
            socket("mask", "MASK"),
            widget("left", "INT", Widget::Weft("left")),
            widget("top", "INT", Widget::Weft("top")),
            widget("right", "INT", Widget::Weft("right")),
            widget("bottom", "INT", Widget::Weft("bottom")),
        ],
        outputs: &[out("MASK", "mask")],
        output_node: false,
    },
    ComfyType {
        class: "ThresholdMask",
        display: "ThresholdMask",
        category: "mask",
        weft: "ThresholdMask",
        role: "threshold_mask",
        inputs: &[
            socket("mask", "MASK"),
            widget("value", "FLOAT", Widget::Weft("value")),
        ],
        outputs: &[out("MASK", "mask")],
        output_node: false,
    },
    ComfyType {
        class: "ImageColorToMask",
        display: "ImageColorToMask",
        category: "mask",
        weft: "ImageColorToMask",
        role: "color_mask",
        inputs: &[
            socket("image", "IMAGE"),
            widget("color", "INT", Widget::Weft("color")),
        ],
        outputs: &[out("MASK", "mask")],
        output_node: false,
    },
    ComfyType {
        class: "ImageToMask",
        display: "Convert Image to Mask",
        category: "mask",
        weft: "ImageToMask",
        role: "image_to_mask",
        inputs: &[
            socket("image", "IMAGE"),
            widget("channel", "COMBO", Widget::Weft("channel")),
        ],
        outputs: &[out("MASK", "mask")],
        output_node: false,
    },
    ComfyType {
        class: "MaskToImage",
        display: "Convert Mask to Image",
        category: "mask",
        weft: "MaskToImage",
        role: "mask_to_image",
        inputs: &[socket("mask", "MASK")],
        outputs: &[out("IMAGE", "image")],
        output_node: false,
    },
    ComfyType {
        class: "SetLatentNoiseMask",
        display: "Set Latent Noise Mask",
        category: "latent/inpaint",
        weft: "SetLatentNoiseMask",
        role: "noise_mask",
        inputs: &[socket("samples", "LATENT"), socket("mask", "MASK")],
        outputs: &[out("LATENT", "latent")],
        output_node: false,
    },
    ComfyType {
        class: "VAEEncodeForInpaint",
        display: "VAE Encode (for Inpainting)",
        category: "latent/inpaint",
        weft: "VaeEncodeForInpaint",
        role: "encode_inpaint",
        inputs: &[
            socket("pixels", "IMAGE"),
            socket("vae", "VAE"),
            socket("mask", "MASK"),
            widget("grow_mask_by", "INT", Widget::Weft("grow_mask_by")),
        ],
        outputs: &[out("LATENT", "latent")],
        output_node: false,
    },
    ComfyType {
        class: "InpaintModelConditioning",
        display: "InpaintModelConditioning",
        category: "conditioning/inpaint",
        weft: "InpaintModelConditioning",
        role: "inpaint_conditioning",
        inputs: &[
            socket("positive", "CONDITIONING"),
            socket("negative", "CONDITIONING"),
            socket("vae", "VAE"),
            socket("pixels", "IMAGE"),
            socket("mask", "MASK"),
            widget("noise_mask", "BOOLEAN", Widget::Weft("noise_mask")),
        ],
        outputs: &[
            out("CONDITIONING", "positive"),
            out("CONDITIONING", "negative"),
            out("LATENT", "latent"),
        ],
        output_node: false,
    },
    ComfyType {
        class: "ImagePadForOutpaint",
        display: "Pad Image for Outpainting",
        category: "image",
        weft: "ImagePadForOutpaint",
        role: "outpaint_pad",
        inputs: &[
            socket("image", "IMAGE"),
            widget("left", "INT", Widget::Weft("left")),
            widget("top", "INT", Widget::Weft("top")),
            widget("right", "INT", Widget::Weft("right")),
            widget("bottom", "INT", Widget::Weft("bottom")),
            widget("feathering", "INT", Widget::Weft("feathering")),
        ],
        outputs: &[out("IMAGE", "image"), out("MASK", "mask")],
        output_node: false,
    },
    ComfyType {
        class: "ImageCompositeMasked",
        display: "ImageCompositeMasked",
        category: "image",
        weft: "ImageCompositeMasked",
        role: "composite",
        inputs: &[
            socket("destination", "IMAGE"),
            socket("source", "IMAGE"),
            widget("x", "INT", Widget::Weft("x")),
            widget("y", "INT", Widget::Weft("y")),
            widget("resize_source", "BOOLEAN", Widget::Weft("resize_source")),
            socket("mask", "MASK"),
        ],
        outputs: &[out("IMAGE", "image")],
        output_node: false,
    },
];

/// ComfyUI's default for a widget: what `import` uses when a workflow leaves it out, and what
/// `object_info` shows. `None`: ComfyUI requires the value.
pub fn comfy_default(class: &str, input: &str) -> Option<serde_json::Value> {
    use serde_json::json;
    Some(match (class, input) {
        (_, "seed" | "noise_seed") => json!(0),
        (_, "steps") => json!(20),
        (_, "cfg") => json!(8.0),
        (_, "denoise") => json!(1.0),
        (_, "add_noise") => json!("enable"),
        (_, "start_at_step") => json!(0),
        (_, "end_at_step") => json!(10000),
        (_, "return_with_leftover_noise") => json!("disable"),
        ("CLIPTextEncodeSDXL" | "CLIPTextEncodeSDXLRefiner", "width" | "height") => json!(1024),
        ("CLIPTextEncodeSDXLRefiner", "ascore") => json!(6.0),
        (_, "width" | "height") => json!(512),
        (_, "batch_size") => json!(1),
        (_, "tile_size") => json!(512),
        (_, "overlap") => json!(64),
        (_, "temporal_size") => json!(64),
        (_, "temporal_overlap") => json!(8),
        (_, "filename_prefix") => json!("ComfyUI"),
        (_, "upscale_method") => json!("nearest-exact"),
        (_, "crop") => json!("disabled"),
        ("LatentUpscaleBy", "scale_by") => json!(1.5),
        ("ImageScaleBy", "scale_by") => json!(1.0),
        (_, "strength_model" | "strength_clip") => json!(1.0),
        ("GrowMask", "tapered_corners") => json!(true),
        ("GrowMask", "expand") => json!(0),
        ("VAEEncodeForInpaint", "grow_mask_by") => json!(6),
        ("InpaintModelConditioning", "noise_mask") => json!(true),
        ("ImagePadForOutpaint", "feathering") => json!(40),
        ("ImageCompositeMasked", "resize_source") => json!(false),
        ("ImageCompositeMasked", "x" | "y") => json!(0),
        ("ThresholdMask", "value") => json!(0.5),
        ("SolidMask", "value") => json!(1.0),
        ("LoadImageMask", "channel") => json!("alpha"),
        ("ImageToMask", "channel") => json!("red"),
        ("ImageColorToMask", "color") => json!(0),
        ("FeatherMask" | "ImagePadForOutpaint", "left" | "top" | "right" | "bottom") => json!(0),
        _ => return None,
    })
}

/// UI-only node types: resolved (PrimitiveNode, Reroute) or skipped (notes) by the importer.
pub const VIRTUAL_TYPES: [&str; 4] = ["PrimitiveNode", "Reroute", "Note", "MarkdownNote"];

/// ComfyUI's value nodes (comfy_extras/nodes_primitive.py): written in place like PrimitiveNode.
pub const VALUE_TYPES: [&str; 5] = [
    "PrimitiveInt",
    "PrimitiveFloat",
    "PrimitiveString",
    "PrimitiveStringMultiline",
    "PrimitiveBoolean",
];

/// The weft sampler a ComfyUI sampler name runs as: the same name, or for ComfyUI's `*_gpu`
/// variants their base method (weft draws step noise on the CPU on every device).
pub fn weft_sampler_name(comfy: &str) -> Option<&'static str> {
    let names = &weft_nodes::samplers::SamplerKind::NAMES;
    let base = comfy.strip_suffix("_gpu").unwrap_or(comfy);
    names
        .iter()
        .find(|n| **n == comfy)
        .or_else(|| names.iter().find(|n| **n == base))
        .copied()
}

/// A ComfyUI prompt text as weft reads the same words: ComfyUI takes square brackets as
/// plain text, weft as A1111's de-emphasis, so they become weft's literal `\[` `\]`.
pub fn prompt_from_comfy(text: &str) -> String {
    text.replace('[', "\\[").replace(']', "\\]")
}

/// A weft prompt text as ComfyUI reads the same words: weft's literal `\[` `\]` are plain
/// brackets there. The second value says the text has a weft `[…]` de-emphasis, which ComfyUI
/// has no spelling for (it would read the brackets as words).
pub fn prompt_to_comfy(text: &str) -> (String, bool) {
    let plain = text.replace("\\[", "\u{E002}").replace("\\]", "\u{E003}");
    let de_emphasis = plain
        .find('[')
        .is_some_and(|open| plain[open..].contains(']'));
    (
        plain.replace('\u{E002}', "[").replace('\u{E003}', "]"),
        de_emphasis,
    )
}

pub fn comfy_type(class: &str) -> Option<&'static ComfyType> {
    TYPES.iter().find(|t| t.class == class)
}

/// The supported class types, for error messages.
pub fn supported_list() -> String {
    let mut names: Vec<&str> = TYPES.iter().map(|t| t.class).collect();
    names.extend(["PrimitiveNode", "Reroute"]);
    names.extend(VALUE_TYPES);
    names.join(", ")
}

/// ComfyUI upscale model file names (as in its models/upscale_models folder) and the weft
/// upscaler each one is.
pub const UPSCALER_FILES: [(&str, &str); 4] = [
    ("RealESRGAN_x4plus.pth", "realesrgan-x4plus"),
    ("realesr-animevideov3.pth", "realesr-animevideov3"),
    ("esrgan-slim-x2.safetensors", "esrgan-slim-x2"),
    ("esrgan-slim-x4.safetensors", "esrgan-slim-x4"),
];

/// Where a ComfyUI checkpoint name points under weft's models folder: ComfyUI's own layout
/// (`models/checkpoints/NAME`), so a ComfyUI models folder linked in works unchanged.
pub const CHECKPOINT_DIR: &str = "checkpoints/";

/// Where a ComfyUI LoRA name (relative to its models/loras) points under weft's models folder.
pub const LORA_DIR: &str = "loras/";

/// A problem (or, among notes, an approximation) found while converting, located by ComfyUI
/// node id, class type and input name.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// What kind of problem this is, as weft's validation names its own (`None`: one only the
    /// message describes).
    pub code: Option<weft_engine::DiagnosticCode>,
    pub node: Option<String>,
    pub class: Option<String>,
    pub input: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl Issue {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            code: None,
            node: None,
            class: None,
            input: None,
            message: message.into(),
            hint: None,
        }
    }
    pub fn node(mut self, id: &str, class: &str) -> Self {
        self.node = Some(id.to_string());
        self.class = Some(class.to_string());
        self
    }
    pub fn input(mut self, name: &str) -> Self {
        self.input = Some(name.to_string());
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.node, &self.class) {
            (Some(n), Some(c)) => write!(f, "node {n} ({c})")?,
            (Some(n), None) => write!(f, "node {n}")?,
            _ => {}
        }
        if let Some(i) = &self.input {
            write!(f, ", input '{i}'")?;
        }
        if self.node.is_some() || self.input.is_some() {
            f.write_str(": ")?;
        }
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}
