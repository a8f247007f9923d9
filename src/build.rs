//! The build pipeline.
