//! Other names people search nodes by: ComfyUI's class names for weft's nodes (as src/comfy's
//! exporter writes them, plus those its importer also reads) and the plain words for what they do.
export const ALIASES: Record<string, string[]> = {
  LoadCheckpoint: ['CheckpointLoaderSimple', 'Load Checkpoint', 'model loader'],
  LoadLora: ['LoraLoader', 'Load LoRA'],
  LoadLoraModelOnly: ['LoraLoaderModelOnly'],
  PromptEncode: ['CLIPTextEncode', 'CLIP Text Encode', 'text prompt', 'conditioning'],
  PromptEncodeSdxl: ['CLIPTextEncodeSDXL'],
  PromptEncodeSdxlRefiner: ['CLIPTextEncodeSDXLRefiner'],
  EmptyLatent: ['EmptyLatentImage', 'Empty Latent Image'],
  Sampler: ['KSampler', 'denoise', 'generate'],
  SamplerAdvanced: ['KSamplerAdvanced', 'KSampler (Advanced)'],
  VaeDecode: ['VAEDecode', 'VAEDecodeTiled', 'VAE Decode', 'latent to image'],
  VaeEncode: ['VAEEncode', 'VAE Encode', 'image to latent'],
  VaeEncodeForInpaint: ['VAEEncodeForInpaint'],
  LoadImage: ['open image', 'input image'],
  SaveImage: ['PreviewImage', 'Save Image', 'output image'],
  LatentUpscale: ['LatentUpscaleBy', 'Upscale Latent', 'upscale', 'hires fix'],
  ImageScale: ['ImageScaleBy', 'Upscale Image By', 'upscale', 'resize', 'scale'],
  LoadUpscaleModel: ['UpscaleModelLoader', 'Load Upscale Model'],
  UpscaleImage: ['ImageUpscaleWithModel', 'Upscale Image (using Model)', 'upscale', 'esrgan'],
  ImagePadForOutpaint: ['Pad Image for Outpainting', 'outpaint'],
  ImageCompositeMasked: ['composite', 'paste image'],
  SetLatentNoiseMask: ['inpaint'],
  InpaintModelConditioning: ['inpaint'],
  ShowText: ['preview text', 'display text'],
  ShowInt: ['preview int', 'display number'],
  LatentPreview: ['preview latent'],
};

/** The aliases of a node type, lower-cased (what the palette's search compares). */
export function aliasesOf(type: string): string[] {
  return (ALIASES[type] ?? []).map((a) => a.toLowerCase());
}
