//! `/system` and `/instances`.

use super::Client;
use super::error::ClientError;
use super::http::Params;
use super::model::{Instance, System};

impl Client {
    /// `GET /system`: the rack.
    pub async fn system(&self) -> Result<System, ClientError> {
        self.get_json("/system", &Params::new()).await
    }

    /// `GET /instances`.
    pub async fn instances(&self) -> Result<Vec<Instance>, ClientError> {
        self.get_json("/instances", &Params::new()).await
    }
}
