//! The config file: parsing (`yaml`, `de`), the serde mirror (`file`), validation
//! (`validate`, reading what the file points at through `files`), the validated types
//! everything else uses (`model`) and every default value (`defaults`). `load` ties them
//! together.

mod de;
pub mod defaults;
mod file;
mod files;
pub mod load;
pub mod model;
mod schema;
mod shadow_model;
mod units;
mod validate;
pub mod watch;

pub mod yaml;

pub use load::{load, ConfigError, ConfigErrors};
pub use model::*;
pub use schema::json_schema_text;
pub use shadow_model::{BenchmarkSpec, ShadowSpec, VerifySpec};
pub use validate::{schedule_steps, warnings};
