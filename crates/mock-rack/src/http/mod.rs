//! HTTP handlers, one module per resource. Handlers stay thin: parse the
//! request, call a [`crate::state::Rack`] method under the lock, render.

pub mod apps;
pub mod builds;
pub mod objects;
pub mod processes;
pub mod releases;
pub mod services;
pub mod system;

use std::sync::Arc;

use crate::state::Shared;

/// Handler state.
pub type St = axum::extract::State<Arc<Shared>>;
