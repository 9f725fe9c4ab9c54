//! The model-folder flags every command that finds models takes (`--models`, repeatable, and
//! `--model-paths`), read the same way by `weft run`, `watch`, `serve`, `nodes` and `schema`.
use std::path::PathBuf;

use weft_engine::ModelFolders;

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Folder of model files; repeat for more (a name is looked up in each in order, the
    /// first that has it wins; links in model folders are followed).
    #[arg(long = "models", value_name = "DIR", default_value = "models")]
    pub dirs: Vec<PathBuf>,
    /// More model folders, from a file in the format of ComfyUI's extra_model_paths.yaml
    /// (looked in after the --models folders).
    #[arg(long, value_name = "FILE")]
    pub model_paths: Option<PathBuf>,
}

impl ModelArgs {
    /// The folders in lookup order; a model-paths file that cannot be read is an error that
    /// names it.
    pub fn folders(&self) -> anyhow::Result<ModelFolders> {
        ModelFolders::from_flags(&self.dirs, self.model_paths.as_deref())
            .map_err(anyhow::Error::msg)
    }
}
