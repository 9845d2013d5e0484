//! A small client for the two EC2 calls the executor makes (`DescribeInstances`, `CreateTags`),
//! on EC2's Query API, in place of `aws-sdk-ec2`: that crate's build alone needed more compiler
//! memory than the rest of the tree, for two operations.
//!
//! It speaks what the SDK speaks on the wire: SigV4-signed form POSTs with API version
//! 2016-11-15, over the SDK's own HTTPS connector (aws-smithy-http-client), with the
//! credentials, region, timeouts, retry settings and endpoint choice of the same `SdkConfig`
//! the Auto Scaling client uses. Every call is bounded: a timeout per attempt, a bounded number
//! of attempts with jittered exponential backoff (throttling, 5xx and transport failures only),
//! a cap on the answer's size and on the pages followed.
//!
//! The connector is the SDK's default one (`default_connector`, what aws-config's default HTTP
//! client builds per timeout setting, without a proxy); an `http_client` set by hand on the
//! `SdkConfig` is not used, and the executor sets none.

pub mod endpoint;
mod wire;
pub mod xml;

pub use endpoint::EndpointSource;
pub use xml::{Element, XmlError};

use super::{classify, ApiError, Ec2Instance};
use autoscaler_executor::ErrorKind;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_types::body::SdkBody;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Instances asked for per `DescribeInstances` page (`MaxResults`; EC2 allows 5 to 1000).
pub const PAGE_SIZE: u32 = 200;

/// Most `DescribeInstances` pages followed for one list: 100 pages of 200 is 20,000 instances.
/// A list longer than that is an error, never a truncated list.
pub const MAX_PAGES: usize = 100;

/// Largest answer body read, in bytes: a full page of instances is well under 4 MiB.
pub const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Instance ids per `instance-id` filter (EC2's limit on filter values is 200).
pub const IDS_PER_FILTER: usize = 200;

/// Resources per `CreateTags` request (EC2's limit is 1000).
pub const RESOURCES_PER_TAG_CALL: usize = 1000;

const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// Credentials are fetched again this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// The EC2 Query API client. Its `Debug` shows where it sends and how it retries, never a
/// credential.
pub struct Ec2Client {
    url: String,
    source: EndpointSource,
    region: Option<String>,
    credentials: Option<SharedCredentialsProvider>,
    cached: Mutex<Option<Credentials>>,
    connector: Option<SharedHttpConnector>,
    attempt_timeout: Duration,
    operation_timeout: Option<Duration>,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    page_size: u32,
    max_pages: usize,
    body_limit: usize,
}

impl std::fmt::Debug for Ec2Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Client")
            .field("url", &self.url)
            .field("source", &self.source)
            .field("region", &self.region)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// What one attempt ended with.
enum Attempt {
    Answer(String),
    Failed { err: ApiError, retry: bool },
}

impl Ec2Client {
    /// The client for `sdk`'s credentials, region, endpoint, timeouts and retry settings.
    /// `request_timeout` bounds each attempt when the config sets no attempt timeout.
    pub fn new(sdk: &aws_types::SdkConfig, request_timeout: Duration) -> Self {
        let region = sdk.region().map(|r| r.to_string());
        let (url, source) = endpoint::resolve(sdk, region.as_deref().unwrap_or("us-east-1"));
        let timeouts = sdk.timeout_config();
        let attempt_timeout = timeouts
            .and_then(|t| t.operation_attempt_timeout())
            .unwrap_or(request_timeout);
        let mut settings = HttpConnectorSettings::builder();
        settings.set_connect_timeout(timeouts.and_then(|t| t.connect_timeout()));
        settings.set_read_timeout(timeouts.and_then(|t| t.read_timeout()));
        let connector =
            aws_smithy_http_client::default_connector(&settings.build(), sdk.sleep_impl());
        let retry = sdk.retry_config();
        Ec2Client {
            url,
            source,
            region,
            credentials: sdk.credentials_provider(),
            cached: Mutex::new(None),
            connector,
            attempt_timeout,
            operation_timeout: timeouts.and_then(|t| t.operation_timeout()),
            max_attempts: retry.map(|r| r.max_attempts()).unwrap_or(3).max(1),
            initial_backoff: retry
                .map(|r| r.initial_backoff())
                .unwrap_or(Duration::from_secs(1)),
            max_backoff: retry
                .map(|r| r.max_backoff())
                .unwrap_or(Duration::from_secs(20)),
            page_size: PAGE_SIZE,
            max_pages: MAX_PAGES,
            body_limit: BODY_LIMIT,
        }
    }

    /// Another `MaxResults` (clamped to EC2's 5..=1000), so a test can page over few instances.
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = n.clamp(5, 1000);
        self
    }

    /// Another page cap.
    pub fn with_max_pages(mut self, n: usize) -> Self {
        self.max_pages = n.max(1);
        self
    }

    /// Another answer size cap, in bytes.
    pub fn with_body_limit(mut self, n: usize) -> Self {
        self.body_limit = n;
        self
    }

    /// The endpoint requests go to, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.url
    }

    /// Which setting chose the endpoint.
    pub fn endpoint_source(&self) -> EndpointSource {
        self.source
    }

    /// Sends one EC2 action with its Query parameters (`Version` is added), retrying as
    /// configured, and returns the answer's XML body. A refusal is an [`ApiError`] with EC2's
    /// code; the message never holds a credential or a request header.
    pub async fn call<K: AsRef<str>, V: AsRef<str>>(
        &self,
        action: &str,
        params: &[(K, V)],
    ) -> Result<String, ApiError> {
        let body = wire::form(action, params);
        let run = self.call_with_retries(action, body);
        match self.operation_timeout {
            None => run.await,
            Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                Err(ApiError {
                    kind: ErrorKind::Unavailable,
                    code: None,
                    message: format!(
                        "{action}: not done within the operation timeout of {}",
                        human(limit)
                    ),
                })
            }),
        }
    }

    /// [`Ec2Client::call`], with the answer parsed; a body that is not well-formed XML is an
    /// error naming the action.
    pub async fn call_xml<K: AsRef<str>, V: AsRef<str>>(
        &self,
        action: &str,
        params: &[(K, V)],
    ) -> Result<Element, ApiError> {
        let body = self.call(action, params).await?;
        xml::parse(&body).map_err(|e| unreadable(action, 200, &e.0))
    }

    /// `DescribeInstances` with `(name, values)` filters, following `nextToken` up to the page
    /// cap; more pages than that is an error, not a partial list.
    pub async fn describe_instances(
        &self,
        filters: &[(String, Vec<String>)],
    ) -> Result<Vec<Ec2Instance>, ApiError> {
        const CALL: &str = "DescribeInstances";
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..self.max_pages {
            let mut params = wire::filter_params(filters);
            params.push(("MaxResults".into(), self.page_size.to_string()));
            if let Some(t) = token.take() {
                params.push(("NextToken".into(), t));
            }
            let doc = self.call_xml(CALL, &params).await?;
            let (page, next) = wire::instances_page(&doc).map_err(|e| unreadable(CALL, 200, &e))?;
            out.extend(page);
            match next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
        Err(ApiError {
            kind: ErrorKind::Backend,
            code: None,
            message: format!(
                "{CALL}: more than {} pages of {} instances; refusing a partial list",
                self.max_pages, self.page_size
            ),
        })
    }

    /// `CreateTags` of `tags` on `ids`, in requests of at most [`RESOURCES_PER_TAG_CALL`].
    pub async fn create_tags(
        &self,
        ids: &[String],
        tags: &[(String, String)],
    ) -> Result<(), ApiError> {
        for chunk in ids.chunks(RESOURCES_PER_TAG_CALL) {
            self.call_xml("CreateTags", &wire::tag_params(chunk, tags))
                .await?;
        }
        Ok(())
    }

    async fn call_with_retries(&self, action: &str, body: String) -> Result<String, ApiError> {
        let region = self.region.as_deref().ok_or_else(|| ApiError {
            kind: ErrorKind::Config,
            code: None,
            message: format!("{action}: no AWS region configured"),
        })?;
        let creds = self.credentials(action).await?;
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let outcome = match tokio::time::timeout(
                self.attempt_timeout,
                self.attempt(action, region, &creds, &body),
            )
            .await
            {
                Ok(o) => o,
                Err(_) => Attempt::Failed {
                    err: ApiError {
                        kind: ErrorKind::Unavailable,
                        code: None,
                        message: format!(
                            "{action}: no answer within {} (request_timeout_seconds)",
                            human(self.attempt_timeout)
                        ),
                    },
                    retry: true,
                },
            };
            match outcome {
                Attempt::Answer(text) => return Ok(text),
                Attempt::Failed { err, retry } => {
                    if err.kind == ErrorKind::Credentials {
                        // Refused (expired, rotated): the next call loads them again.
                        *self.cached.lock().unwrap() = None;
                    }
                    tracing::debug!(
                        action,
                        attempt,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        retry,
                        error = %err,
                        "EC2 call failed"
                    );
                    if !retry || attempt >= self.max_attempts {
                        return Err(if attempt > 1 {
                            ApiError {
                                message: format!("{}, after {attempt} attempts", err.message),
                                ..err
                            }
                        } else {
                            err
                        });
                    }
                }
            }
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Full jitter, as the SDK's standard retry mode: a random share of
    /// `min(max_backoff, initial_backoff * 2^(attempt-1))`.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        exp.min(self.max_backoff).mul_f64(fastrand::f64())
    }

    async fn credentials(&self, action: &str) -> Result<Credentials, ApiError> {
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|e| e > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
        };
        if let Some(c) = self.cached.lock().unwrap().as_ref().filter(|c| fresh(c)) {
            return Ok(c.clone());
        }
        let no_creds = |why: String| ApiError {
            kind: ErrorKind::Credentials,
            code: None,
            message: format!("{action}: no usable AWS credentials: {why}"),
        };
        let provider = self
            .credentials
            .as_ref()
            .ok_or_else(|| no_creds("no credentials provider configured".into()))?;
        let c = tokio::time::timeout(self.attempt_timeout, provider.provide_credentials())
            .await
            .map_err(|_| {
                no_creds(format!(
                    "none loaded within {}",
                    human(self.attempt_timeout)
                ))
            })?
            .map_err(|e| no_creds(super::chain(&e)))?;
        *self.cached.lock().unwrap() = Some(c.clone());
        Ok(c)
    }

    /// One signed POST and its answer, read up to the size cap.
    async fn attempt(
        &self,
        action: &str,
        region: &str,
        creds: &Credentials,
        body: &str,
    ) -> Attempt {
        let response = match self.send(action, region, creds, body).await {
            Ok(r) => r,
            Err(failed) => return failed,
        };
        match self.read(action, response).await {
            Ok((status, request_id, text)) => answer(action, status, request_id, text),
            Err(failed) => failed,
        }
    }

    /// Signs and sends the POST; an unbuildable request or an unreachable endpoint is the
    /// attempt's failure (retried only when the endpoint may come back).
    async fn send(
        &self,
        action: &str,
        region: &str,
        creds: &Credentials,
        body: &str,
    ) -> Result<HttpResponse, Attempt> {
        let Some(connector) = &self.connector else {
            return Err(failed(
                ErrorKind::Backend,
                format!("{action}: no HTTPS connector in this build"),
                false,
            ));
        };
        let request = self.signed(region, creds, body).map_err(|e| {
            failed(
                ErrorKind::Backend,
                format!("{action}: request could not be built: {e}"),
                false,
            )
        })?;
        connector.call(request).await.map_err(|e| {
            let kind = if e.is_user() {
                ErrorKind::Backend
            } else {
                ErrorKind::Unavailable
            };
            failed(
                kind,
                format!(
                    "{action}: endpoint {} unreachable: {}",
                    self.url,
                    super::chain(&e)
                ),
                !e.is_user(),
            )
        })
    }

    /// The answer's status, request id and text, read up to the size cap: a larger answer
    /// is refused, one cut off is retried, one not in UTF-8 is unreadable.
    async fn read(
        &self,
        action: &str,
        response: HttpResponse,
    ) -> Result<(u16, Option<String>, String), Attempt> {
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-amzn-requestid")
            .map(str::to_string);
        let collected = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            response.into_body(),
            self.body_limit,
        ))
        .await;
        let bytes = match collected {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(failed(
                    ErrorKind::Backend,
                    format!(
                        "{action}: answer larger than {} bytes (HTTP {status})",
                        self.body_limit
                    ),
                    false,
                ))
            }
            Err(e) => {
                return Err(failed(
                    ErrorKind::Unavailable,
                    format!("{action}: answer cut off (HTTP {status}): {e}"),
                    true,
                ))
            }
        };
        match String::from_utf8(bytes.to_vec()) {
            Ok(text) => Ok((status, request_id, text)),
            Err(_) => Err(Attempt::Failed {
                err: unreadable(action, status, "not UTF-8"),
                retry: status >= 500,
            }),
        }
    }

    fn signed(&self, region: &str, creds: &Credentials, body: &str) -> Result<HttpRequest, String> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let uri = format!("{}/", self.url);
        let identity = creds.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let signable = SignableRequest::new(
            "POST",
            uri.as_str(),
            [("content-type", CONTENT_TYPE)].into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        let mut request = http::Request::builder()
            .method("POST")
            .uri(&uri)
            .header("content-type", CONTENT_TYPE)
            .body(SdkBody::from(body.to_string()))
            .map_err(|e| e.to_string())?;
        instructions.apply_to_request_http1x(&mut request);
        HttpRequest::try_from(request).map_err(|e| e.to_string())
    }
}

fn unreadable(action: &str, status: u16, why: &str) -> ApiError {
    ApiError {
        kind: ErrorKind::Backend,
        code: None,
        message: format!("{action}: unreadable answer (HTTP {status}): {why}"),
    }
}

fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) && d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A failed attempt that carries no AWS error code.
fn failed(kind: ErrorKind, message: String, retry: bool) -> Attempt {
    Attempt::Failed {
        err: ApiError {
            kind,
            code: None,
            message,
        },
        retry,
    }
}

/// An answer read whole: a 2xx is the text to parse, anything else AWS's error document
/// classified (code, message and request id in the message; retried when throttled or
/// unavailable).
fn answer(action: &str, status: u16, request_id: Option<String>, text: String) -> Attempt {
    if (200..300).contains(&status) {
        return Attempt::Answer(text);
    }
    let (code, message, rid) = match xml::parse(&text).ok().as_ref().and_then(wire::error_of) {
        Some((c, m, r)) => (Some(c), m, r.or(request_id)),
        None => (None, "no error document".to_string(), request_id),
    };
    let kind = classify(code.as_deref(), status, &message);
    let rid = rid.map(|r| format!(", request id {r}")).unwrap_or_default();
    Attempt::Failed {
        err: ApiError {
            kind,
            message: format!(
                "{action}: {}: {message} (HTTP {status}{rid})",
                code.as_deref().unwrap_or("unknown error")
            ),
            code,
        },
        retry: matches!(kind, ErrorKind::Throttled | ErrorKind::Unavailable),
    }
}
