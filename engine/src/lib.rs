//! weft-engine: typed values, node declarations and registry, workflow files, validation,
//! planning, the cached executor and its events. It knows no concrete node and no model.
