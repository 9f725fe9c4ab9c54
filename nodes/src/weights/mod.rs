//! Weight loading: memory-mapped safetensors, checkpoint key maps (LDM <-> diffusers).
