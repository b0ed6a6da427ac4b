//! The images a release's services run, read from its `convox.yml` (the `manifest` the rack
//! keeps with each build and release).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The most of a manifest read: a `convox.yml` is a few kilobytes.
pub const MAX_MANIFEST: usize = 1024 * 1024;

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    services: Option<BTreeMap<String, Option<Service>>>,
}

#[derive(Deserialize)]
struct Service {
    #[serde(default)]
    image: Option<String>,
}

/// Service → the image it names (`None`: built from source), or why the manifest cannot be
/// read. Everything but `services.*.image` is left to the rack.
pub fn service_images(manifest: &str) -> Result<BTreeMap<String, Option<String>>, String> {
    if manifest.len() > MAX_MANIFEST {
        return Err(format!(
            "the release's manifest is over {} KiB",
            MAX_MANIFEST >> 10
        ));
    }
    let parsed: Manifest = serde_saphyr::from_str(manifest).map_err(|e| {
        format!("the release's manifest is not a convox.yml the gateway can read: {e}")
    })?;
    Ok(parsed
        .services
        .unwrap_or_default()
        .into_iter()
        .map(|(name, service)| {
            let image = service
                .and_then(|s| s.image)
                .map(|i| i.trim().to_string())
                .filter(|i| !i.is_empty());
            (name, image)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_by_service() {
        let images = service_images(
            "environment:\n  - PORT\nservices:\n  web:\n    image: ghcr.io/acme/web:abc\n    \
             port: 3000\n  worker:\n    build: .\n  cron:\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            images,
            BTreeMap::from([
                ("cron".to_string(), None),
                ("web".to_string(), Some("ghcr.io/acme/web:abc".to_string())),
                ("worker".to_string(), None),
            ])
        );
        assert_eq!(service_images(""), Ok(BTreeMap::new()));
    }

    #[test]
    fn what_cannot_be_read_says_so() {
        for bad in ["services: [1, 2", "services:\n  web:\n    image: [a, b]\n"] {
            let err = service_images(bad).err().unwrap_or_default();
            assert!(err.contains("not a convox.yml"), "{bad}: {err}");
        }
        // An alias bomb stays within the parser's budget: an answer, not a hang or a panic.
        let bomb = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n\
                    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n\
                    services: {}\n";
        let _ = service_images(bomb);
        assert!(service_images(&"#".repeat(MAX_MANIFEST + 1)).is_err());
    }
}
