//! The credentials the SDK clients are built on, proven at start-up: a machine without
//! credentials is told so in seconds, naming where they were looked for, never their contents.

use crate::config::{CredentialsSource, Resolved};
use crate::GceMigError;
use google_cloud_auth::credentials::Credentials;
use std::time::Duration;

/// Makes the credentials and proves they yield a token within `credentials_timeout_seconds`, so a
/// machine without credentials is told so at start-up, in seconds.
pub(super) async fn build_credentials(resolved: &Resolved) -> Result<Credentials, GceMigError> {
    use google_cloud_auth::credentials::{anonymous, mds, service_account, Builder};
    let cred_err = |message: String| GceMigError::Credentials {
        origin: resolved.credentials.describe(),
        message,
    };
    let creds = match &resolved.credentials {
        CredentialsSource::Anonymous => return Ok(anonymous::Builder::new().build()),
        CredentialsSource::KeyFile(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| cred_err(format!("cannot read {path}: {e}")))?;
            // Never echo the file: it holds a private key.
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|_| cred_err(format!("{path} is not JSON")))?;
            if json.get("type").and_then(|t| t.as_str()) != Some("service_account") {
                return Err(cred_err(format!(
                    "{path} is not a service-account key (\"type\": \"service_account\"); for other \
                     credential files set GOOGLE_APPLICATION_CREDENTIALS and credentials = \"adc\""
                )));
            }
            service_account::Builder::new(json)
                .build()
                .map_err(|e| cred_err(e.to_string()))?
        }
        CredentialsSource::Adc => {
            if adc_file_present() {
                Builder::default()
                    .build()
                    .map_err(|e| cred_err(e.to_string()))?
            } else {
                // The metadata server. Pinning the universe domain stops the client builder from
                // asking the metadata server for it (with retries) before anything else.
                mds::Builder::default()
                    .with_universe_domain("googleapis.com")
                    .build()
                    .map_err(|e| cred_err(e.to_string()))?
            }
        }
    };
    let limit = Duration::from_secs(resolved.config.credentials_timeout_seconds);
    match tokio::time::timeout(limit, creds.headers(http::Extensions::new())).await {
        Ok(Ok(_)) => Ok(creds),
        Ok(Err(e)) => Err(cred_err(format!(
            "no access token: {e} (on GCE give the VM a service account with the compute scope; \
             elsewhere run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS)"
        ))),
        Err(_) => Err(cred_err(format!(
            "no access token within {}s (no ADC file, and the metadata server did not answer)",
            limit.as_secs()
        ))),
    }
}

/// Mirrors the ADC search order (AIP-4110) so the metadata-server fallback can be built with a
/// pinned universe domain instead of whatever the generic builder does.
fn adc_file_present() -> bool {
    if std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_some() {
        return true;
    }
    std::env::var_os("HOME")
        .map(|h| {
            std::path::Path::new(&h)
                .join(".config/gcloud/application_default_credentials.json")
                .exists()
        })
        .unwrap_or(false)
}
