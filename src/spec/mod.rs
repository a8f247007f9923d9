//! Image and layer specs (TOML) -> validated build plan.
