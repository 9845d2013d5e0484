//! The crate's EC2 Query API client: against moto_server for what EC2 does (filters, paging,
//! tags), and against an in-process HTTP double speaking EC2's wire format for what moto
//! cannot do (throttle, fail with 503, refuse credentials, hang, answer garbage).

mod common;

use autoscaler_aws_asg::client::ec2::Ec2Client;
use autoscaler_executor::ErrorKind;
use common::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AMI: &str = "ami-03cf127a"; // one of moto's built-in images
const SECRET: &str = "secret-key-must-not-leak";
const TOKEN: &str = "session-token-must-not-leak";

/// An SDK config for `url` with a short retry schedule and the given attempt timeout.
async fn sdk(url: &str, attempts: u32, attempt_timeout: Duration) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKIDTEST",
            SECRET,
            Some(TOKEN.to_string()),
            None,
            "tests",
        ))
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(attempts)
                .with_initial_backoff(Duration::from_millis(20)),
        )
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        )
        .load()
        .await
}

// --- against moto ---------------------------------------------------------------------------

#[tokio::test]
async fn describe_instances_filters_and_follows_pages_on_moto() {
    let moto = Moto::start();
    let sdk = sdk(&moto.url, 3, Duration::from_secs(10)).await;
    let ec2 = Ec2Client::new(&sdk, Duration::from_secs(10)).with_page_size(5);
    // One reservation each: moto pages DescribeInstances by reservation.
    let mut workers = Vec::new();
    for _ in 0..13 {
        workers.extend(run_instances(&ec2, AMI, 1, &[("vespene_worker", "true")]).await);
    }
    run_instances(&ec2, AMI, 3, &[("vespene_worker", "false")]).await;
    run_instances(&ec2, AMI, 2, &[]).await;
    // One worker ended: the state filter must leave it out.
    ec2.call_xml(
        "TerminateInstances",
        &[("InstanceId.1", workers[0].as_str())],
    )
    .await
    .unwrap();

    moto.clear_log();
    let filters = [
        ("tag:vespene_worker".to_string(), vec!["true".to_string()]),
        (
            "instance-state-name".to_string(),
            vec!["pending".to_string(), "running".to_string()],
        ),
    ];
    let got = ec2.describe_instances(&filters).await.unwrap();
    let mut ids: Vec<String> = got.iter().map(|i| i.instance_id.clone()).collect();
    ids.sort();
    let mut want = workers[1..].to_vec();
    want.sort();
    assert_eq!(ids, want, "every running worker once, nothing else");
    for i in &got {
        assert_eq!(i.state, "running");
        assert_eq!(
            i.tags.get("vespene_worker").map(String::as_str),
            Some("true")
        );
        assert!(
            i.private_dns_name.is_some() && i.private_ip.is_some(),
            "{i:?}"
        );
        assert!(i.launch_time.is_some() && i.zone.is_some(), "{i:?}");
    }
    let log = moto.log();
    assert_eq!(log.len(), 3, "12 instances in pages of 5: {log:?}");
    for (n, (action, params)) in log.iter().enumerate() {
        assert_eq!(action, "DescribeInstances");
        assert_eq!(param(params, "MaxResults"), Some("5"));
        assert_eq!(param(params, "Version"), Some("2016-11-15"));
        assert_eq!(param(params, "Filter.1.Name"), Some("tag:vespene_worker"));
        assert_eq!(param(params, "Filter.2.Value.2"), Some("running"));
        assert_eq!(param(params, "NextToken").is_some(), n > 0, "{params:?}");
    }

    // A list longer than the page cap is an error, never the first pages alone.
    let capped = Ec2Client::new(&sdk, Duration::from_secs(10))
        .with_page_size(5)
        .with_max_pages(2);
    let err = capped.describe_instances(&filters).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Backend);
    assert!(err.message.contains("more than 2 pages of 5"), "{err}");
}

#[tokio::test]
async fn create_tags_then_read_back_on_moto() {
    let moto = Moto::start();
    let sdk = sdk(&moto.url, 3, Duration::from_secs(10)).await;
    let ec2 = Ec2Client::new(&sdk, Duration::from_secs(10));
    let ids = run_instances(&ec2, AMI, 2, &[("Name", "w")]).await;
    let tags = vec![
        ("vespene_pool".to_string(), "linux".to_string()),
        ("odd key/with=signs".to_string(), "a b&c=d é~".to_string()),
    ];
    ec2.create_tags(&ids, &tags).await.unwrap();
    let got = ec2
        .describe_instances(&[("instance-id".to_string(), ids.clone())])
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    for i in got {
        let want: BTreeMap<String, String> = tags
            .iter()
            .cloned()
            .chain([("Name".to_string(), "w".to_string())])
            .collect();
        assert_eq!(i.tags, want, "{}", i.instance_id);
    }
    // An id EC2 does not know, as a filter value, is absent rather than an error.
    let none = ec2
        .describe_instances(&[(
            "instance-id".to_string(),
            vec!["i-0000000000000dead".into()],
        )])
        .await
        .unwrap();
    assert!(none.is_empty());
}

// --- against an HTTP double -----------------------------------------------------------------

/// What the double does with one request.
#[derive(Clone)]
enum Reply {
    /// Status and body, with a correct Content-Length.
    Answer(u16, String),
    /// Accept the request and never answer.
    Hang,
    /// Announce `declared` bytes, send `body`, close.
    CutOff(usize, String),
}

/// One request as the double saw it: lower-cased headers and form parameters.
#[derive(Clone, Debug)]
struct Seen {
    headers: BTreeMap<String, String>,
    params: Vec<(String, String)>,
}

/// An HTTP/1.1 server on 127.0.0.1 that answers the n-th request with `replies[n]` (the last
/// one repeated), and records each request.
struct Double {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Double {
    async fn start(replies: Vec<Reply>) -> Double {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, replies.clone(), log.clone()));
            }
        });
        Double { url, seen }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn serve(mut s: tokio::net::TcpStream, replies: Vec<Reply>, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let headers: BTreeMap<String, String> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + 4 + len {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + len]).to_string();
        buf.drain(..head_end + 4 + len);
        let n = {
            let mut l = log.lock().unwrap();
            l.push(Seen {
                headers,
                params: parse_form(&body),
            });
            l.len() - 1
        };
        let reply = replies[n.min(replies.len() - 1)].clone();
        match reply {
            Reply::Answer(status, body) => {
                let out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/xml;charset=UTF-8\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Hang => std::future::pending::<()>().await,
            Reply::CutOff(declared, body) => {
                let out = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {declared}\r\n\r\n{body}"
                );
                let _ = s.write_all(out.as_bytes()).await;
                let _ = s.shutdown().await;
                return;
            }
        }
    }
}

fn ec2_error(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>req-42</RequestID></Response>"
    )
}

fn page() -> String {
    ec2_instances_xml(&[("i-1", "ip-10-0-0-1.ec2.internal", "10.0.0.1")])
}

async fn client(double: &Double, attempts: u32, attempt_timeout: Duration) -> Ec2Client {
    let sdk = sdk(&double.url, attempts, attempt_timeout).await;
    Ec2Client::new(&sdk, Duration::from_secs(20))
}

fn ids() -> [(String, Vec<String>); 1] {
    [("instance-id".to_string(), vec!["i-1".to_string()])]
}

#[tokio::test]
async fn throttling_is_retried_until_an_answer() {
    let throttled = Reply::Answer(
        503,
        ec2_error("RequestLimitExceeded", "Request limit exceeded."),
    );
    let double = Double::start(vec![
        throttled.clone(),
        Reply::Answer(400, ec2_error("Throttling", "Rate exceeded")),
        Reply::Answer(200, page()),
    ])
    .await;
    let ec2 = client(&double, 3, Duration::from_secs(5)).await;
    let got = ec2.describe_instances(&ids()).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].private_ip.as_deref(), Some("10.0.0.1"));
    assert_eq!(double.count(), 3);

    // Throttled on every attempt: the last refusal, after exactly max_attempts requests.
    let double = Double::start(vec![throttled]).await;
    let ec2 = client(&double, 3, Duration::from_secs(5)).await;
    let err = ec2.describe_instances(&ids()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Throttled);
    assert_eq!(err.code.as_deref(), Some("RequestLimitExceeded"));
    assert!(
        err.message.contains("request id req-42") && err.message.contains("after 3 attempts"),
        "{err}"
    );
    assert_eq!(double.count(), 3);
}

#[tokio::test]
async fn service_unavailable_is_retried() {
    let unavailable = Reply::Answer(503, "Service Unavailable".into());
    let double = Double::start(vec![unavailable.clone(), Reply::Answer(200, page())]).await;
    let ec2 = client(&double, 3, Duration::from_secs(5)).await;
    assert_eq!(ec2.describe_instances(&ids()).await.unwrap().len(), 1);
    assert_eq!(double.count(), 2);

    let double = Double::start(vec![unavailable]).await;
    let ec2 = client(&double, 2, Duration::from_secs(5)).await;
    let err = ec2.describe_instances(&ids()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(
        err.message.contains("HTTP 503") && err.message.contains("after 2 attempts"),
        "{err}"
    );
    assert_eq!(double.count(), 2);
}

#[tokio::test]
async fn refused_credentials_and_permissions_are_not_retried() {
    for (status, code, kind) in [
        (401, "AuthFailure", ErrorKind::Credentials),
        (403, "UnauthorizedOperation", ErrorKind::PermissionDenied),
        (400, "InvalidParameterValue", ErrorKind::Backend),
        (400, "InvalidInstanceID.NotFound", ErrorKind::NotFound),
    ] {
        let double = Double::start(vec![Reply::Answer(status, ec2_error(code, "refused"))]).await;
        let ec2 = client(&double, 4, Duration::from_secs(5)).await;
        let err = ec2
            .create_tags(&["i-1".into()], &[("k".into(), "v".into())])
            .await
            .unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        assert_eq!(err.code.as_deref(), Some(code));
        assert_eq!(
            err.message,
            format!("CreateTags: {code}: refused (HTTP {status}, request id req-42)")
        );
        assert_eq!(double.count(), 1, "{code} is not retried");
    }
}

#[tokio::test]
async fn a_hung_endpoint_times_out_within_the_bound() {
    let double = Double::start(vec![Reply::Hang]).await;
    let ec2 = client(&double, 2, Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let err = ec2.describe_instances(&ids()).await.unwrap_err();
    // Two attempts of 300 ms and one backoff of at most 20 ms; the bound only has to hold.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert_eq!(
        err.message,
        "DescribeInstances: no answer within 300 ms (request_timeout_seconds), after 2 attempts"
    );
    assert_eq!(double.count(), 2);
}

#[tokio::test]
async fn garbled_truncated_or_oversized_answers_are_clear_errors() {
    // Well-formed HTTP, cut-off XML: an error, not an empty or shorter list.
    let full = page();
    let double = Double::start(vec![Reply::Answer(200, full[..full.len() / 2].to_string())]).await;
    let ec2 = client(&double, 3, Duration::from_secs(5)).await;
    let err = ec2.describe_instances(&ids()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Backend);
    assert!(
        err.message
            .starts_with("DescribeInstances: unreadable answer (HTTP 200): truncated XML"),
        "{err}"
    );
    assert_eq!(double.count(), 1, "a garbled answer is not retried");

    for (body, want) in [
        ("<html><body>proxy error</body></html>", "expected <DescribeInstancesResponse>, got <html>"),
        ("{\"not\": \"xml\"}", "unreadable answer (HTTP 200): "),
        (
            "<DescribeInstancesResponse><reservationSet><item><instancesSet><item><privateIpAddress>1.2.3.4\
             </privateIpAddress></item></instancesSet></item></reservationSet></DescribeInstancesResponse>",
            "an instance without instanceId",
        ),
    ] {
        let double = Double::start(vec![Reply::Answer(200, body.into())]).await;
        let ec2 = client(&double, 3, Duration::from_secs(5)).await;
        let err = ec2.describe_instances(&ids()).await.unwrap_err();
        assert!(err.message.contains(want), "{body}: {err}");
        assert_eq!(err.kind, ErrorKind::Backend);
    }

    // The connection closes before the announced length: a transport failure, retried.
    let double = Double::start(vec![Reply::CutOff(5000, full[..100].to_string())]).await;
    let ec2 = client(&double, 2, Duration::from_secs(5)).await;
    let err = ec2.describe_instances(&ids()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(err.message.contains("answer cut off"), "{err}");
    assert_eq!(double.count(), 2);

    // Larger than the cap: refused without reading on.
    let big = ec2_instances_xml(&vec![("i-1", "ip-10-0-0-1.ec2.internal", "10.0.0.1"); 100]);
    let double = Double::start(vec![Reply::Answer(200, big)]).await;
    let ec2 = client(&double, 3, Duration::from_secs(5))
        .await
        .with_body_limit(4096);
    let err = ec2.describe_instances(&ids()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Backend);
    assert!(
        err.message.contains("answer larger than 4096 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn requests_are_signed_and_no_secret_reaches_errors_debug_or_logs() {
    let logs = LogBuffer::default();
    let _guard = logs.install();
    let double = Double::start(vec![
        Reply::Answer(200, page()),
        Reply::Answer(
            401,
            ec2_error(
                "AuthFailure",
                "AWS was not able to validate the provided access credentials",
            ),
        ),
    ])
    .await;
    let ec2 = client(&double, 3, Duration::from_secs(5)).await;
    ec2.describe_instances(&ids()).await.unwrap();
    let err = ec2.describe_instances(&ids()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Credentials);

    let seen = double.seen.lock().unwrap().clone();
    let h = &seen[0].headers;
    let auth = h.get("authorization").expect("signed");
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
            && auth.contains("/us-east-1/ec2/aws4_request"),
        "{auth}"
    );
    assert_eq!(
        h.get("x-amz-security-token").map(String::as_str),
        Some(TOKEN)
    );
    assert!(h.contains_key("x-amz-date"));
    assert_eq!(param(&seen[0].params, "Action"), Some("DescribeInstances"));

    let signature = auth.rsplit("Signature=").next().unwrap().to_string();
    let texts = [
        err.to_string(),
        format!("{err:?}"),
        format!("{ec2:?}"),
        logs.text(),
    ];
    for t in &texts {
        for secret in [
            SECRET,
            TOKEN,
            signature.as_str(),
            "Authorization",
            "authorization",
        ] {
            assert!(!t.contains(secret), "{secret:?} in {t}");
        }
    }
    assert!(
        logs.text().contains("AuthFailure"),
        "the failure is logged: {}",
        logs.text()
    );
}

/// Hands out `AKID1`, `AKID2`, … on each load, expiring after `lifetime`.
#[derive(Debug)]
struct Rotating {
    loads: Arc<Mutex<u32>>,
    lifetime: Duration,
}

impl aws_credential_types::provider::ProvideCredentials for Rotating {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let n = {
            let mut l = self.loads.lock().unwrap();
            *l += 1;
            *l
        };
        aws_credential_types::provider::future::ProvideCredentials::ready(Ok(
            aws_credential_types::Credentials::new(
                format!("AKID{n}"),
                SECRET,
                None,
                Some(std::time::SystemTime::now() + self.lifetime),
                "rotating",
            ),
        ))
    }
}

#[tokio::test]
async fn credentials_are_cached_until_refused_or_near_expiry() {
    let key_of = |s: &Seen| {
        let auth = &s.headers["authorization"];
        auth.split("Credential=")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    let double = Double::start(vec![
        Reply::Answer(200, page()),
        Reply::Answer(200, page()),
        Reply::Answer(401, ec2_error("AuthFailure", "expired")),
        Reply::Answer(200, page()),
    ])
    .await;
    let loads = Arc::new(Mutex::new(0));
    let provider = Rotating {
        loads: loads.clone(),
        lifetime: Duration::from_secs(3600),
    };
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&double.url)
        .credentials_provider(provider)
        .load()
        .await;
    let ec2 = Ec2Client::new(&sdk, Duration::from_secs(5));
    ec2.describe_instances(&ids()).await.unwrap();
    ec2.describe_instances(&ids()).await.unwrap();
    assert_eq!(*loads.lock().unwrap(), 1, "loaded once, reused");
    let err = ec2.describe_instances(&ids()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Credentials);
    ec2.describe_instances(&ids()).await.unwrap();
    assert_eq!(*loads.lock().unwrap(), 2, "loaded again after the refusal");
    let keys: Vec<String> = double.seen.lock().unwrap().iter().map(key_of).collect();
    assert_eq!(keys, ["AKID1", "AKID1", "AKID1", "AKID2"]);

    // Credentials about to expire are loaded again for every call.
    let double = Double::start(vec![Reply::Answer(200, page())]).await;
    let loads = Arc::new(Mutex::new(0));
    let provider = Rotating {
        loads: loads.clone(),
        lifetime: Duration::from_secs(60),
    };
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&double.url)
        .credentials_provider(provider)
        .load()
        .await;
    let ec2 = Ec2Client::new(&sdk, Duration::from_secs(5));
    ec2.describe_instances(&ids()).await.unwrap();
    ec2.describe_instances(&ids()).await.unwrap();
    assert_eq!(*loads.lock().unwrap(), 2);
}
