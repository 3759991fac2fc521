//! The config file: parsing (`yaml`, `de`), the serde mirror (`file`), validation
//! (`load`) and the validated types everything else uses (`model`).

mod de;
mod file;
pub mod load;
pub mod model;
pub mod watch;

pub mod yaml;

pub use load::{load, ConfigError, ConfigErrors};
pub use model::*;
