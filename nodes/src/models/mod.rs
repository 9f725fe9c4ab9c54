//! Model architectures in tch, mirroring diffusers/transformers module names so that
//! state-dict keys map one to one.
