//! Image and layer specs (TOML) -> a validated [`Plan`].
//!
//! Takes `images/<name>.toml` and the `layers/<name>/layer.toml` files it
//! names; produces a `Plan` that later stages consume. Unknown keys, bad
//! modes, absolute-path escapes and missing layers are errors that name the
//! file and key. Reads only the spec files and the files they reference;
//! never touches the network or the output directory.

mod error;
mod image;
mod layer;
mod output_kind;
mod plan;
mod recipe;
mod tools;

pub use error::SpecError;
pub use image::{DebianSource, DiskSpec, ImageSpec, Pocket, SCHEMA_VERSION};
pub use layer::{
    FileSpec, GroupSpec, KernelSpec, LayerSpec, OciImageSpec, Setting, UefiSpec, UserSpec,
};
pub use output_kind::{Format, OutputKind, UnknownFormat, UnknownOutput};
pub use plan::{
    check_outputs, load_plan, project_dir, FileContent, FilePlan, Plan, ARTIFACTS, GENERATORS,
};
pub use recipe::{load_recipe, recipe_artifact, Recipe, RECIPES_DIR, RECIPE_FILE};
pub use tools::{load_tools, TOOLS_FILE};
